"""The gateway's verdict for one request (pure).

    decide(policy, authn, authz, request, identity_token) -> Decision

- allowed (200): `headers_to_set` go to the upstream and *overwrite* whatever the client
  sent: the user header (prefix + user), the groups header (comma-joined, possibly
  empty: an absent value would let a client-sent one through Envoy), and the
  gateway-signed identity JWT. `headers_to_remove` lists every other identity-bearing
  header a client could have sent (proxy headers, the proxy secret, oauth2-proxy's
  `x-auth-request-*`) so that none reaches the upstream.
- not authenticated: a browser (GET/HEAD asking for text/html) is redirected (302) to
  the sign-in URL when one is configured; anything else gets 401 with WWW-Authenticate.
- a presented credential that fails: 401 (400 for a malformed request, 503 when the
  verifier — JWKS endpoint, TokenReview — could not be reached).
- authenticated but not authorized: 403 with a short reason.
- authorization could not be evaluated (API server unreachable): 503, never 500.

On a denial `headers_to_set` are response headers for the client (Location,
WWW-Authenticate). `reason` is a short stable code, fit for a metrics label; `detail`
is a sentence for the client and the access log. Neither ever contains a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kftenancy.gateway.authz import AuthzResult
from kftenancy.gateway.identity import Identity, Rejected, Request
from kftenancy.policy import TenancyPolicySpec

# Identity-bearing headers login proxies set. A client can send them too, so they are
# removed from every request the gateway lets through. (x-forwarded-for/-proto/-host are
# kept: they carry no identity and the proxy in front of us sets them.)
PROXY_IDENTITY_HEADERS: tuple[str, ...] = (
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-remote-user",
    "x-remote-group",
)

REASON_ALLOWED = "allowed"
REASON_NO_CREDENTIALS = "no-credentials"
REASON_FORBIDDEN = "forbidden"
REASON_AUTHZ_UNAVAILABLE = "authz-unavailable"
REASON_ONBOARDING_THROTTLED = "onboarding-throttled"


@dataclass(frozen=True)
class Decision:
    status: int
    headers_to_set: Mapping[str, str] = field(default_factory=dict)
    headers_to_remove: tuple[str, ...] = ()
    reason: str = ""
    detail: str = ""
    user: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


def gateway_headers(policy: TenancyPolicySpec) -> tuple[str, ...]:
    """The headers the gateway sets on every allowed request (and nobody else may)."""
    ident = policy.identity
    out = [ident.user_header, ident.groups_header]
    if ident.identity_token.enabled:
        out.append(ident.identity_token.header)
    return tuple(out)


_MEMO: dict[int, tuple[object, tuple[str, ...]]] = {}


def client_identity_headers(policy: TenancyPolicySpec) -> tuple[str, ...]:
    """Every header through which a client could claim an identity, in a stable order.
    Memoized per (immutable) identity section: this runs on every request."""
    hit = _MEMO.get(id(policy.identity))
    if hit is not None and hit[0] is policy.identity:
        return hit[1]
    names = _client_identity_headers(policy)
    if len(_MEMO) > 64:
        _MEMO.clear()
    _MEMO[id(policy.identity)] = (policy.identity, names)
    return names


def _client_identity_headers(policy: TenancyPolicySpec) -> tuple[str, ...]:
    ident = policy.identity
    tp = ident.trusted_proxy
    names = [
        *gateway_headers(policy),
        ident.identity_token.header,
        tp.user_header,
        tp.email_header,
        tp.groups_header,
        tp.secret_header,
        *PROXY_IDENTITY_HEADERS,
    ]
    return tuple(dict.fromkeys(names))


def is_browser(request: Request) -> bool:
    h = request.headers
    return (
        request.method.upper() in ("GET", "HEAD")
        and "text/html" in h.get("accept", "")
        and h.get("x-requested-with", "").lower() != "xmlhttprequest"
        and "authorization" not in h
    )


def _unauthenticated(
    policy: TenancyPolicySpec, request: Request, reason: str, detail: str
) -> Decision:
    sign_in = policy.identity.sign_in_url
    if sign_in and is_browser(request):
        return Decision(302, {"location": sign_in}, (), reason, detail)
    challenge = 'Bearer realm="kubeflow"'
    if reason != REASON_NO_CREDENTIALS:
        challenge += ', error="invalid_token"'
    return Decision(401, {"www-authenticate": challenge}, (), reason, detail)


def decide(
    policy: TenancyPolicySpec,
    authn: Identity | Rejected | None,
    authz: AuthzResult | None,
    request: Request,
    identity_token: str | None = None,
) -> Decision:
    """See the module docstring. `authz` None with an identity means "could not evaluate";
    `identity_token` is the signed JWT to hand upstream (required when enabled)."""
    if authn is None:
        return _unauthenticated(
            policy, request, REASON_NO_CREDENTIALS, "no credentials: sign in or send a bearer token"
        )
    if isinstance(authn, Rejected):
        if authn.status in (429, 503):
            retry = {"retry-after": str(max(1, authn.retry_after))}
            return Decision(authn.status, retry, (), authn.reason, authn.detail)
        if authn.status != 401:
            return Decision(authn.status, {}, (), authn.reason, authn.detail)
        return _unauthenticated(policy, request, authn.reason, authn.detail)
    if authz is None:
        return Decision(
            503,
            {"retry-after": "1"},
            (),
            REASON_AUTHZ_UNAVAILABLE,
            "authorization is temporarily unavailable",
            authn.user,
        )
    if not authz.allowed:
        return Decision(
            403, {}, (), REASON_FORBIDDEN, f"{authn.user} is {authz.detail}", authn.user
        )

    ident = policy.identity
    to_set = {
        ident.user_header: ident.user_prefix + authn.user,
        ident.groups_header: ",".join(authn.groups),
    }
    if ident.identity_token.enabled:
        if identity_token is None:
            raise ValueError("identity token signing is enabled but no token was given")
        to_set[ident.identity_token.header] = identity_token
    to_remove = tuple(h for h in client_identity_headers(policy) if h not in to_set)
    return Decision(200, to_set, to_remove, REASON_ALLOWED, authz.detail, authn.user)


def onboarding_throttled(user: str, retry_after: int) -> Decision:
    """A new user arrived while too many users were being onboarded at once: 429, so the
    user retries instead of reaching a workspace that does not exist yet."""
    return Decision(
        429,
        {"retry-after": str(max(1, retry_after))},
        (),
        REASON_ONBOARDING_THROTTLED,
        f"too many new users are being onboarded; retry in {retry_after} s",
        user,
    )
