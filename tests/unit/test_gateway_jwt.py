"""JWT verification (OIDC and identity tokens), the JWKS cache and the signer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kftenancy.gateway.jwt_verify import (
    JWKSCache,
    JWKSet,
    TokenRejected,
    UnknownKid,
    verify_jwt,
    verify_with_cache,
)
from kftenancy.gateway.signer import KeyRing, SigningKey, sign_identity, verify_identity_token

ISS = "https://idp.example.com"
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk_of(key: Any, kid: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
        if isinstance(key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())
    )
    d["kid"] = kid
    return d


KEYS = JWKSet.from_document({"keys": [jwk_of(RSA_KEY, "rsa1"), jwk_of(EC_KEY, "ec1")]})


def claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": ISS,
        "aud": "kubeflow",
        "email": "alice@example.com",
        "exp": NOW + 300,
        "iat": NOW,
        "nbf": NOW,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(
    c: Mapping[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa1"
) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(dict(c), key, algorithm=alg, headers=headers)


def verify(token: str, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "keys": KEYS,
        "issuer": ISS,
        "audiences": ["kubeflow"],
        "algorithms": ["RS256", "ES256"],
        "now": NOW,
        "leeway": 30,
    }
    args.update(kw)
    return verify_jwt(token, **args)


def reason(token: str, **kw: Any) -> str:
    with pytest.raises(TokenRejected) as e:
        verify(token, **kw)
    return e.value.reason


def test_valid_rs256_and_es256_tokens_pass() -> None:
    assert verify(sign(claims()))["email"] == "alice@example.com"
    assert verify(sign(claims(), EC_KEY, "ES256", "ec1"))["aud"] == "kubeflow"


def test_alg_none_is_rejected() -> None:
    tok = jwt.encode(claims(), None, algorithm="none", headers={"kid": "rsa1"})
    assert reason(tok) == "bad-algorithm"


def test_hs256_signed_with_the_public_key_is_rejected() -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert reason(f"{head}.{body}.{sig}") == "bad-algorithm"
    # even if a caller lists HS256, it is never accepted
    assert reason(f"{head}.{body}.{sig}", algorithms=["HS256", "RS256"]) == "bad-algorithm"


def test_alg_key_type_mismatch_is_rejected() -> None:
    tok = sign(claims(), EC_KEY, "ES256", "rsa1")  # names the RSA key
    assert reason(tok) == "bad-algorithm"


def test_algorithm_not_in_issuer_list_is_rejected() -> None:
    assert reason(sign(claims(), alg="PS256")) == "bad-algorithm"
    assert verify(sign(claims(), alg="PS256"), algorithms=["PS256"])["email"]


def test_signed_by_another_key_is_rejected() -> None:
    assert reason(sign(claims(), OTHER_RSA)) == "bad-signature"


def test_expired_and_not_yet_valid_are_rejected_with_skew() -> None:
    assert reason(sign(claims(exp=NOW - 31))) == "expired"
    assert verify(sign(claims(exp=NOW - 29)))  # within skew
    assert reason(sign(claims(nbf=NOW + 31))) == "not-yet-valid"
    assert verify(sign(claims(nbf=NOW + 29)))


def test_wrong_audience_and_issuer_are_rejected() -> None:
    assert reason(sign(claims(aud="other"))) == "wrong-audience"
    assert reason(sign(claims(iss="https://evil.example.com"))) == "wrong-issuer"


def test_missing_exp_is_rejected() -> None:
    assert reason(sign(claims(exp=None))) == "missing-claim"


def test_unknown_kid_is_reported_as_such() -> None:
    with pytest.raises(UnknownKid):
        verify(sign(claims(), kid="rotated"))


def test_garbage_is_rejected_not_raised() -> None:
    for bad in ("", "a.b.c", "not a jwt", "e30.e30.e30"):
        with pytest.raises(TokenRejected):
            verify(bad)


def test_jwks_skips_encryption_keys_and_keys_without_kid() -> None:
    enc = jwk_of(RSA_KEY, "enc") | {"use": "enc"}
    nokid = jwk_of(RSA_KEY, "x")
    del nokid["kid"]
    ks = JWKSet.from_document({"keys": [enc, nokid, "junk"]})
    assert ks.keys == {}
    assert JWKSet.from_document({"nokeys": 1}).keys == {}


async def test_jwks_cache_refreshes_on_unknown_kid_with_rate_limit() -> None:
    docs = [{"keys": [jwk_of(RSA_KEY, "rsa1")]}, {"keys": [jwk_of(OTHER_RSA, "rsa2")]}]
    served: list[int] = []

    async def fetch() -> Mapping[str, Any]:
        served.append(1)
        return docs[min(len(served) - 1, 1)]

    cache = JWKSCache(fetch, min_refresh_interval=10, max_age=3600)
    kw: dict[str, Any] = {
        "issuer": ISS,
        "audiences": ["kubeflow"],
        "algorithms": ["RS256"],
        "leeway": 30,
    }
    assert await verify_with_cache(sign(claims()), cache, now=NOW, **kw)
    assert cache.fetches == 1
    rotated = sign(claims(), OTHER_RSA, kid="rsa2")
    with pytest.raises(UnknownKid):  # within the rate limit: no refetch
        await verify_with_cache(rotated, cache, now=NOW + 5, **kw)
    assert cache.fetches == 1
    assert await verify_with_cache(rotated, cache, now=NOW + 11, **kw)
    assert cache.fetches == 2
    # a known kid never triggers a fetch
    await verify_with_cache(rotated, cache, now=NOW + 100, **kw)
    assert cache.fetches == 2


async def test_jwks_cache_collapses_concurrent_refreshes() -> None:
    async def fetch() -> Mapping[str, Any]:
        await asyncio.sleep(0.01)
        return {"keys": [jwk_of(RSA_KEY, "rsa1")]}

    cache = JWKSCache(fetch)
    await asyncio.gather(*(cache.get("rsa1", NOW) for _ in range(20)))
    assert cache.fetches == 1


def test_identity_token_round_trip_and_rotation() -> None:
    old = SigningKey.generate()
    ring = KeyRing(old)
    kw: dict[str, Any] = {
        "user": "alice",
        "groups": ["ml"],
        "issuer": "https://gw",
        "audience": "kubeflow",
        "ttl_seconds": 300,
    }
    t_old = sign_identity(ring, now=NOW, **kw)
    ring2 = ring.rotate(SigningKey.generate())
    jwks = ring2.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [ring2.current.kid, old.kid]
    t_new = sign_identity(ring2, now=NOW, **kw)
    for t in (t_old, t_new):
        c = verify_identity_token(t, jwks, "kubeflow", "https://gw", now=NOW + 10)
        assert c["sub"] == "alice" and c["groups"] == ["ml"]
    assert jwt.get_unverified_header(t_new)["kid"] == ring2.current.kid
    # after the previous key is dropped, its tokens no longer verify
    with pytest.raises(UnknownKid):
        verify_identity_token(
            t_old, KeyRing(ring2.current).jwks(), "kubeflow", "https://gw", now=NOW
        )


def test_identity_token_expires_and_is_audience_bound() -> None:
    ring = KeyRing(SigningKey.generate())
    t = sign_identity(
        ring, user="a", groups=[], issuer="https://gw", audience="kubeflow", now=NOW, ttl_seconds=60
    )
    with pytest.raises(TokenRejected, match="expired"):
        verify_identity_token(t, ring.jwks(), "kubeflow", "https://gw", now=NOW + 120)
    with pytest.raises(TokenRejected, match="audience"):
        verify_identity_token(t, ring.jwks(), "other", "https://gw", now=NOW)


def test_kid_is_a_stable_thumbprint_and_pem_round_trips() -> None:
    k = SigningKey.generate()
    again = SigningKey.from_pem(k.to_pem())
    assert again.kid == k.kid and len(k.kid) == 43
    assert "d" not in k.public_jwk()  # never publishes the private part
    with pytest.raises(ValueError, match="P-256"):
        SigningKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
