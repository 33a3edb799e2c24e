"""JWT verification against a JWKS: OIDC bearer tokens and the gateway's own identity JWT.

`verify_jwt` is pure: keys, issuer, audiences, algorithms and `now` are arguments.
It accepts only asymmetric algorithms the caller allows, requires the key's type (and
curve) to match the token's `alg` (so an RSA public key can never be used as an HMAC
secret: no HS/RS confusion, and `none` is never accepted), checks the signature, `iss`,
`aud`, and `exp`/`nbf` against `now` with a small skew.

`JWKSCache` keeps one issuer's key set, fetched through an injected coroutine. It
refreshes when the set is older than `max_age` or when a token names a `kid` it does
not know (key rotation at the IdP), at most once per `min_refresh_interval` so that a
flood of tokens with random kids cannot turn into a flood of JWKS fetches. Concurrent
refreshes are collapsed into one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

# alg -> (kty, crv or None)
ASYMMETRIC_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}


class TokenRejected(Exception):
    """The token is not acceptable. `reason` is a short stable code (metrics label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class UnknownKid(TokenRejected):
    def __init__(self, kid: str | None) -> None:
        super().__init__("unknown-kid", f"no key with kid {kid!r} in the issuer's JWKS")
        self.kid = kid


@dataclass
class JWKSet:
    """Keys by `kid` from a JWKS document; constructed key objects are memoized."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    _objects: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> JWKSet:
        """Signature keys with a `kid`; keys without one, or for encryption, are skipped."""
        keys: dict[str, dict[str, Any]] = {}
        raw = doc.get("keys") if isinstance(doc, Mapping) else None
        for k in raw if isinstance(raw, list) else []:
            if not isinstance(k, dict) or not isinstance(k.get("kid"), str):
                continue
            if k.get("use", "sig") != "sig":
                continue
            keys[k["kid"]] = k
        return cls(keys)

    def key_for(self, kid: str | None, alg: str) -> Any:
        """The public key object for `kid`, checked against `alg`; UnknownKid if absent."""
        if kid is None and len(self.keys) == 1:
            kid = next(iter(self.keys))
        if kid is None or kid not in self.keys:
            raise UnknownKid(kid)
        cached = self._objects.get((kid, alg))
        if cached is not None:
            return cached
        jwk = self.keys[kid]
        kty, crv = ASYMMETRIC_ALGORITHMS[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv", crv) != crv):
            raise TokenRejected("bad-algorithm", f"key {kid!r} cannot verify {alg}")
        if "alg" in jwk and jwk["alg"] != alg:
            raise TokenRejected("bad-algorithm", f"key {kid!r} is for {jwk['alg']}, not {alg}")
        try:
            obj = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError as e:
            raise TokenRejected("bad-key", f"key {kid!r} is not usable: {e}") from None
        self._objects[(kid, alg)] = obj
        return obj


def unverified_header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("malformed-token", "not a JWT") from None
    return header


def verify_jwt(
    token: str,
    *,
    keys: JWKSet,
    issuer: str,
    audiences: Sequence[str],
    algorithms: Sequence[str],
    now: float,
    leeway: float = 30.0,
) -> dict[str, Any]:
    """The verified claims, or TokenRejected (UnknownKid when the kid is not in `keys`)."""
    header = unverified_header(token)
    alg = header.get("alg")
    allowed = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
    if not isinstance(alg, str) or alg not in allowed:
        raise TokenRejected("bad-algorithm", f"algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    key = keys.key_for(kid if isinstance(kid, str) else None, alg)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=list(audiences),
            issuer=issuer,
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["exp", "iss", "aud"],
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenRejected("bad-signature", "the signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("wrong-audience", "the token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("wrong-issuer", "the token is from another issuer") from None
    except jwt.MissingRequiredClaimError as e:
        raise TokenRejected("missing-claim", f"the token has no {e.claim!r} claim") from None
    except jwt.PyJWTError as e:
        raise TokenRejected("invalid-token", type(e).__name__) from None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenRejected("invalid-token", "exp is not a number")
    if now > exp + leeway:
        raise TokenRejected("expired", "the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None:
        if not isinstance(nbf, int | float) or isinstance(nbf, bool):
            raise TokenRejected("invalid-token", "nbf is not a number")
        if now + leeway < nbf:
            raise TokenRejected("not-yet-valid", "the token is not valid yet")
    return claims


Fetch = Callable[[], Awaitable[Mapping[str, Any]]]


class JWKSCache:
    """One issuer's keys, fetched by `fetch()`; see the module docstring."""

    def __init__(
        self, fetch: Fetch, *, min_refresh_interval: float = 10.0, max_age: float = 3600.0
    ) -> None:
        self._fetch = fetch
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self.keys = JWKSet()
        self.fetched_at: float | None = None
        self.fetches = 0
        self._lock = asyncio.Lock()

    def needs_refresh(self, kid: str | None, now: float) -> bool:
        if self.fetched_at is None or now - self.fetched_at >= self.max_age:
            return True
        unknown = kid not in self.keys.keys if kid is not None else not self.keys.keys
        return unknown and now - self.fetched_at >= self.min_refresh_interval

    async def get(self, kid: str | None, now: float) -> JWKSet:
        if not self.needs_refresh(kid, now):
            return self.keys
        async with self._lock:
            if self.needs_refresh(kid, now):  # another task may have refreshed meanwhile
                doc = await self._fetch()
                self.fetches += 1
                self.keys = JWKSet.from_document(doc)
                self.fetched_at = now
        return self.keys


async def verify_with_cache(
    token: str,
    cache: JWKSCache,
    *,
    issuer: str,
    audiences: Sequence[str],
    algorithms: Sequence[str],
    now: float,
    leeway: float = 30.0,
) -> dict[str, Any]:
    """`verify_jwt` with the cache's keys, refreshing once on an unknown kid."""
    kid = unverified_header(token).get("kid")
    keys = await cache.get(kid if isinstance(kid, str) else None, now)
    return verify_jwt(
        token,
        keys=keys,
        issuer=issuer,
        audiences=audiences,
        algorithms=algorithms,
        now=now,
        leeway=leeway,
    )
