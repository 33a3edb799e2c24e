"""Who is calling: pick one candidate credential from the request headers (pure).

The gateway tries the identity methods in the order the policy lists them
(`policy.identity.methods`); the first method that *applies* to the request claims it,
and its verdict is final (a claimed credential that fails verification is a 401, never a
silent fall-through to a weaker method).

- `trustedProxy` applies only when the request carries the login proxy's shared secret
  (`trustedProxy.secretHeader`) and it equals the configured secret (constant-time
  compare). Then `x-forwarded-user` (or `x-forwarded-email` with `preferEmail`) and
  `x-forwarded-groups` name the user. Without a configured secret the method never
  applies, and a wrong secret is rejected outright. The proxy headers of a request that
  did not prove it came through the proxy are ignored (and stripped before the upstream).
- `oidc` applies to a bearer JWT whose (not yet verified) `iss` is one of the configured
  issuers; `jwt_verify` then checks signature, `iss`, `aud`, `exp`/`nbf` and algorithm.
- `kubernetesToken` applies to any other bearer token; the shell verifies it with a
  TokenReview (service-account tokens, OpenShift OAuth access tokens).

Headers are plain data: a dict with lower-case names. A header sent more than once
arrives joined with "," and named in `duplicated`; identity-bearing headers sent twice
are rejected, because two proxies (or a proxy and a client) disagreeing is an attack or
a misconfiguration, never something to guess about.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kftenancy.policy import IdentityMethod, OIDCIssuer, TenancyPolicySpec

MAX_TOKEN_BYTES = 16 * 1024
MAX_NAME_CHARS = 512
MAX_GROUPS = 256
_TOKEN68 = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the decision needs (original request, not the check)."""

    method: str
    path: str
    headers: Mapping[str, str]
    duplicated: frozenset[str] = frozenset()
    client: str = "-"  # the address flood limits are charged to (`limits.client_address`)


def normalize_headers(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], frozenset[str]]:
    """Lower-case names; repeated headers joined with "," and reported as duplicated."""
    out: dict[str, str] = {}
    dup: set[str] = set()
    for name, value in pairs:
        key = name.lower()
        if key in out:
            dup.add(key)
            out[key] = f"{out[key]},{value}"
        else:
            out[key] = value
    return out, frozenset(dup)


@dataclass(frozen=True)
class Identity:
    """A verified caller: user id and groups, and the method that proved it."""

    user: str
    groups: tuple[str, ...] = ()
    method: str = ""


@dataclass(frozen=True)
class Rejected:
    """A credential was presented but is not acceptable. `reason` is a short stable code
    (a metrics label); `detail` is for the client and the log (never contains the token)."""

    reason: str
    detail: str
    status: int = 401
    retry_after: int = 1  # seconds, sent as Retry-After with 429 and 503


@dataclass(frozen=True)
class ProxyCredential:
    identity: Identity


@dataclass(frozen=True)
class OIDCCredential:
    token: str = field(repr=False)
    issuer: OIDCIssuer


@dataclass(frozen=True)
class KubeTokenCredential:
    token: str = field(repr=False)


Credential = ProxyCredential | OIDCCredential | KubeTokenCredential


def valid_name(value: str) -> bool:
    """A user or group name we are willing to put in a header and a SubjectAccessReview."""
    return (
        0 < len(value) <= MAX_NAME_CHARS
        and value == value.strip()
        and all(ch.isprintable() for ch in value)
    )


def reserved(name: str) -> bool:
    """Kubernetes reserves `system:` names (system:masters, system:serviceaccount:...).
    Only the API server (TokenReview) may vouch for them: an IdP claim or a proxy header
    naming them would otherwise reach a SubjectAccessReview as that identity."""
    return name.startswith("system:")


def clean_groups(values: Iterable[str], *, allow_reserved: bool = False) -> tuple[str, ...]:
    """Valid, de-duplicated groups in order. Groups containing ',' are dropped: the groups
    header is comma-joined, so such a group would turn into two groups downstream.
    `system:` groups are dropped unless `allow_reserved` (TokenReview results)."""
    seen: dict[str, None] = {}
    for g in values:
        if valid_name(g) and "," not in g and (allow_reserved or not reserved(g)):
            seen.setdefault(g, None)
        if len(seen) >= MAX_GROUPS:
            break
    return tuple(seen)


def bearer_token(request: Request) -> str | Rejected | None:
    """The bearer token from `Authorization`, None if there is none (or another scheme)."""
    if "authorization" in request.duplicated:
        return Rejected("malformed-request", "more than one Authorization header", 400)
    raw = request.headers.get("authorization")
    if raw is None:
        return None
    scheme, _, token = raw.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_BYTES or not _TOKEN68.match(token):
        return Rejected("malformed-token", "the bearer token is empty, too long or not base64url")
    return token


@functools.lru_cache(maxsize=4096)
def unverified_issuer(token: str) -> str | None:
    """The `iss` claim of a JWT-shaped token, without verifying anything (routing only).
    Memoized: a steady client sends the same token on every request."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    iss = data.get("iss") if isinstance(data, dict) else None
    return iss if isinstance(iss, str) else None


def _proxy_credential(
    policy: TenancyPolicySpec, request: Request, proxy_secret: str | None
) -> ProxyCredential | Rejected | None:
    tp = policy.identity.trusted_proxy
    sent = request.headers.get(tp.secret_header)
    if sent is None or not proxy_secret:
        return None
    if tp.secret_header in request.duplicated or not hmac.compare_digest(
        sent.encode(), proxy_secret.encode()
    ):
        return Rejected("bad-proxy-secret", "the trusted-proxy secret does not match")
    for h in (tp.user_header, tp.email_header, tp.groups_header):
        if h in request.duplicated:
            return Rejected("malformed-request", f"header {h} sent more than once", 400)
    user = request.headers.get(tp.user_header, "").strip()
    email = request.headers.get(tp.email_header, "").strip()
    if tp.prefer_email and email:
        user = email
    if not user:
        return None
    if not valid_name(user):
        return Rejected("malformed-identity", f"{tp.user_header} is not a valid user name", 400)
    if reserved(user):
        return Rejected("reserved-name", "system: user names come only from the API server")
    groups = clean_groups(g.strip() for g in request.headers.get(tp.groups_header, "").split(","))
    return ProxyCredential(Identity(user, groups, IdentityMethod.TRUSTED_PROXY.value))


def select_credential(
    policy: TenancyPolicySpec, request: Request, proxy_secret: str | None
) -> Credential | Rejected | None:
    """The credential of the first policy method that applies; None if none applies."""
    token = bearer_token(request)
    if isinstance(token, Rejected):
        return token
    for method in policy.identity.methods:
        if method == IdentityMethod.TRUSTED_PROXY:
            proxy = _proxy_credential(policy, request, proxy_secret)
            if proxy is not None:
                return proxy
        elif method == IdentityMethod.OIDC:
            if token is None or not policy.identity.oidc:
                continue
            iss = unverified_issuer(token)
            for issuer in policy.identity.oidc:
                if iss == issuer.issuer:
                    return OIDCCredential(token, issuer)
        elif method == IdentityMethod.KUBERNETES_TOKEN and token is not None:
            return KubeTokenCredential(token)
    return None


def identity_from_claims(issuer: OIDCIssuer, claims: Mapping[str, Any]) -> Identity | Rejected:
    """User and groups from verified OIDC claims (configurable claim names)."""
    user = claims.get(issuer.user_claim)
    if not isinstance(user, str) or not valid_name(user):
        return Rejected("missing-user-claim", f"the token has no valid {issuer.user_claim!r} claim")
    if reserved(user):
        return Rejected("reserved-name", "system: user names come only from the API server")
    raw = claims.get(issuer.groups_claim, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raw = []
    groups = clean_groups(g for g in raw if isinstance(g, str))
    return Identity(user, groups, IdentityMethod.OIDC.value)


def identity_from_token_review(status: Mapping[str, Any]) -> Identity | Rejected:
    """User and groups from a TokenReview's `status` (authenticated tokens only)."""
    if not status.get("authenticated"):
        return Rejected("token-review-denied", "the API server did not accept the token")
    user_info = status.get("user") or {}
    user = user_info.get("username") if isinstance(user_info, dict) else None
    if not isinstance(user, str) or not valid_name(user):
        return Rejected("token-review-denied", "the token review returned no user name")
    raw = user_info.get("groups") or []
    groups = (
        clean_groups((g for g in raw if isinstance(g, str)), allow_reserved=True)
        if isinstance(raw, list)
        else ()
    )
    return Identity(user, groups, IdentityMethod.KUBERNETES_TOKEN.value)
