"""The gateway-signed identity JWT: a credential any backend can verify itself.

A `kubeflow-userid` header is only as trustworthy as the network path behind the
gateway. So on every allowed request the gateway also sends a short-lived JWT
(`sub` = user id, `groups`, `aud`, `iss`, `iat`/`nbf`/`exp` of minutes, `kid` in the
header) signed with an ECDSA P-256 key (ES256: small, fast to sign and verify).

Keys and rotation without downtime: a `KeyRing` holds the *current* key (signs) and
optionally the *previous* one (still published, so tokens it signed minutes ago keep
verifying). The JWKS at `/.well-known/jwks.json` lists both. To rotate, make the new
key current and the old one previous; after one token lifetime, drop the previous key.
Verifiers that refresh their JWKS on an unknown `kid` (as `verify_identity_token`
callers and Istio's RequestAuthentication do) follow at once. `kid` is the RFC 7638
thumbprint of the public key, so it is stable across restarts and replicas.

Signing is pure given `now`; key generation is the only randomness here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kftenancy.gateway.jwt_verify import JWKSet, TokenRejected, verify_jwt

ALGORITHM = "ES256"


def _b64(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    kid: str

    @classmethod
    def from_private_key(cls, key: ec.EllipticCurvePrivateKey) -> SigningKey:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"the identity signing key must be EC P-256, got {key.curve.name}")
        return cls(key, thumbprint(public_jwk_members(key.public_key())))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the identity signing key must be an EC private key (PEM)")
        return cls.from_private_key(key)

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> dict[str, str]:
        return {
            **public_jwk_members(self.private_key.public_key()),
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
        }


def public_jwk_members(pub: ec.EllipticCurvePublicKey) -> dict[str, str]:
    nums = pub.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": _b64(nums.x, 32), "y": _b64(nums.y, 32)}


def thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of the required EC members."""
    canonical = json.dumps(
        {k: members[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    return (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    )


@dataclass(frozen=True)
class KeyRing:
    current: SigningKey
    previous: SigningKey | None = None

    def rotate(self, new: SigningKey) -> KeyRing:
        """`new` signs from now on; the old current key stays published as previous."""
        return KeyRing(new, self.current)

    def jwks(self) -> dict[str, Any]:
        keys = [self.current.public_jwk()]
        if self.previous is not None and self.previous.kid != self.current.kid:
            keys.append(self.previous.public_jwk())
        return {"keys": keys}


def load_keyring(directory: Path) -> KeyRing:
    """`current.pem` (required) and `previous.pem` (optional) from a mounted Secret."""
    current = SigningKey.from_pem((directory / "current.pem").read_bytes())
    prev_path = directory / "previous.pem"
    previous = SigningKey.from_pem(prev_path.read_bytes()) if prev_path.exists() else None
    return KeyRing(current, previous)


def sign_identity(
    ring: KeyRing,
    *,
    user: str,
    groups: Sequence[str],
    issuer: str,
    audience: str,
    now: float,
    ttl_seconds: int,
) -> str:
    """A compact JWS naming the user; valid from `now` for `ttl_seconds`."""
    iat = int(now)
    claims = {
        "iss": issuer,
        "sub": user,
        "aud": audience,
        "groups": list(groups),
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_seconds,
    }
    return jwt.encode(
        claims, ring.current.private_key, algorithm=ALGORITHM, headers={"kid": ring.current.kid}
    )


def verify_identity_token(
    token: str,
    jwks: Mapping[str, Any],
    audience: str,
    issuer: str,
    now: float | None = None,
    leeway: float = 30.0,
) -> dict[str, Any]:
    """For backends: the verified claims of a gateway identity JWT (`sub` is the user,
    `groups` the groups), or `kftenancy.gateway.jwt_verify.TokenRejected`.

    `jwks` is the document from the gateway's `/.well-known/jwks.json`; on
    `UnknownKid` fetch it again (the gateway rotated its key) and retry once.
    """
    claims = verify_jwt(
        token,
        keys=JWKSet.from_document(jwks),
        issuer=issuer,
        audiences=[audience],
        algorithms=[ALGORITHM],
        now=time.time() if now is None else now,
        leeway=leeway,
    )
    if not isinstance(claims.get("sub"), str):
        raise TokenRejected("missing-claim", "the token has no 'sub' claim")
    return claims
