"""Identity extraction: which credential a request carries, in policy order."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from kftenancy.gateway.identity import (
    Identity,
    KubeTokenCredential,
    OIDCCredential,
    ProxyCredential,
    Rejected,
    Request,
    identity_from_claims,
    identity_from_token_review,
    normalize_headers,
    select_credential,
    unverified_issuer,
)
from kftenancy.policy import load_policy

ISS = "https://idp.example.com"
SECRET = "s3cret-value"


def policy(methods: list[str] | None = None, **identity: object):
    ident: dict[str, object] = {
        "oidc": [{"issuer": ISS, "audiences": ["kubeflow"]}],
        **identity,
    }
    if methods is not None:
        ident["methods"] = methods
    return load_policy({"identity": ident})


def fake_jwt(claims: dict[str, object]) -> str:
    def enc(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln"


def req(headers: dict[str, str] | list[tuple[str, str]], method: str = "GET") -> Request:
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    h, dup = normalize_headers(pairs)
    return Request(method, "/", h, dup)


def test_no_credentials_selects_nothing() -> None:
    assert select_credential(policy(), req({"accept": "text/html"}), SECRET) is None


def test_proxy_headers_without_secret_are_ignored() -> None:
    r = req({"x-forwarded-user": "mallory", "kubeflow-userid": "admin"})
    assert select_credential(policy(), r, SECRET) is None


def test_proxy_headers_ignored_when_gateway_has_no_secret_configured() -> None:
    r = req({"x-forwarded-user": "alice", "x-kftenancy-proxy-secret": ""})
    assert select_credential(policy(), r, None) is None
    assert select_credential(policy(), r, "") is None


def test_proxy_headers_with_correct_secret_name_the_user() -> None:
    r = req(
        {
            "x-forwarded-user": "alice",
            "x-forwarded-groups": "ml, data ,,",
            "x-kftenancy-proxy-secret": SECRET,
        }
    )
    cred = select_credential(policy(), r, SECRET)
    assert cred == ProxyCredential(Identity("alice", ("ml", "data"), "trustedProxy"))


def test_wrong_proxy_secret_is_rejected_not_ignored() -> None:
    r = req({"x-forwarded-user": "alice", "x-kftenancy-proxy-secret": "guess"})
    cred = select_credential(policy(), r, SECRET)
    assert isinstance(cred, Rejected) and cred.reason == "bad-proxy-secret"
    assert SECRET not in cred.detail and "guess" not in cred.detail


def test_proxy_prefers_email_when_configured() -> None:
    p = policy(trustedProxy={"preferEmail": True})
    r = req(
        {
            "x-forwarded-user": "alice",
            "x-forwarded-email": "alice@example.com",
            "x-kftenancy-proxy-secret": SECRET,
        }
    )
    cred = select_credential(p, r, SECRET)
    assert isinstance(cred, ProxyCredential) and cred.identity.user == "alice@example.com"


def test_duplicated_proxy_user_header_is_a_bad_request() -> None:
    r = req(
        [
            ("x-forwarded-user", "alice"),
            ("X-Forwarded-User", "admin"),
            ("x-kftenancy-proxy-secret", SECRET),
        ]
    )
    cred = select_credential(policy(), r, SECRET)
    assert isinstance(cred, Rejected) and cred.status == 400


def test_bearer_jwt_from_configured_issuer_selects_oidc() -> None:
    tok = fake_jwt({"iss": ISS, "email": "a@b"})
    cred = select_credential(policy(), req({"authorization": f"Bearer {tok}"}), SECRET)
    assert isinstance(cred, OIDCCredential) and cred.issuer.issuer == ISS


def test_bearer_from_other_issuer_goes_to_token_review() -> None:
    tok = fake_jwt({"iss": "https://kubernetes.default.svc"})
    cred = select_credential(policy(), req({"authorization": f"bearer {tok}"}), SECRET)
    assert cred == KubeTokenCredential(tok)


def test_opaque_bearer_goes_to_token_review() -> None:
    cred = select_credential(policy(), req({"authorization": "Bearer sha256~abcDEF123"}), None)
    assert cred == KubeTokenCredential("sha256~abcDEF123")


def test_method_order_is_the_policy_order() -> None:
    headers = {
        "x-forwarded-user": "proxyuser",
        "x-kftenancy-proxy-secret": SECRET,
        "authorization": "Bearer opaque",
    }
    first_proxy = select_credential(policy(), req(headers), SECRET)
    assert isinstance(first_proxy, ProxyCredential)
    token_first = select_credential(
        policy(["kubernetesToken", "trustedProxy"]), req(headers), SECRET
    )
    assert token_first == KubeTokenCredential("opaque")


def test_disabled_method_is_never_used() -> None:
    only_oidc = policy(["oidc"])
    assert select_credential(only_oidc, req({"authorization": "Bearer opaque"}), None) is None
    r = req({"x-forwarded-user": "alice", "x-kftenancy-proxy-secret": SECRET})
    assert select_credential(only_oidc, r, SECRET) is None


def test_basic_auth_is_not_a_bearer() -> None:
    assert select_credential(policy(), req({"authorization": "Basic YTpi"}), None) is None


def test_malformed_bearer_is_rejected() -> None:
    for bad in ("Bearer ", "Bearer a b", "Bearer " + "a" * 20000, "Bearer tok\u00e9n"):
        cred = select_credential(policy(), req({"authorization": bad}), None)
        assert isinstance(cred, Rejected), bad


def test_two_authorization_headers_are_a_bad_request() -> None:
    r = req([("authorization", "Bearer a"), ("Authorization", "Bearer b")])
    cred = select_credential(policy(), r, None)
    assert isinstance(cred, Rejected) and cred.status == 400


def test_identity_from_claims_uses_configured_claims() -> None:
    p = policy(
        oidc=[
            {
                "issuer": ISS,
                "audiences": ["k"],
                "userClaim": "preferred_username",
                "groupsClaim": "roles",
            }
        ]
    )
    ident = identity_from_claims(
        p.identity.oidc[0], {"preferred_username": "bob", "roles": ["a", "b,admins", 3]}
    )
    assert ident == Identity("bob", ("a",), "oidc")


def test_identity_from_claims_requires_the_user_claim() -> None:
    p = policy()
    assert isinstance(identity_from_claims(p.identity.oidc[0], {"sub": "x"}), Rejected)
    assert isinstance(identity_from_claims(p.identity.oidc[0], {"email": ""}), Rejected)
    assert isinstance(identity_from_claims(p.identity.oidc[0], {"email": ["a"]}), Rejected)


def test_identity_from_claims_accepts_single_group_string() -> None:
    ident = identity_from_claims(policy().identity.oidc[0], {"email": "a@b", "groups": "ml"})
    assert isinstance(ident, Identity) and ident.groups == ("ml",)


def test_token_review_status() -> None:
    ok = identity_from_token_review(
        {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:ns:sa",
                "groups": ["system:serviceaccounts"],
            },
        }
    )
    assert ok == Identity(
        "system:serviceaccount:ns:sa", ("system:serviceaccounts",), "kubernetesToken"
    )
    assert isinstance(identity_from_token_review({"authenticated": False}), Rejected)
    assert isinstance(identity_from_token_review({"authenticated": True, "user": {}}), Rejected)


@given(st.text(max_size=200))
def test_unverified_issuer_never_raises(token: str) -> None:
    assert unverified_issuer(token) is None or isinstance(unverified_issuer(token), str)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "authorization",
                "x-forwarded-user",
                "x-kftenancy-proxy-secret",
                "x-forwarded-groups",
                "accept",
            ]
        ),
        st.text(max_size=100),
    )
)
def test_select_credential_never_raises(headers: dict[str, str]) -> None:
    out = select_credential(policy(), Request("GET", "/", headers), SECRET)
    assert out is None or isinstance(
        out, ProxyCredential | OIDCCredential | KubeTokenCredential | Rejected
    )


def test_reserved_system_names_never_come_from_an_idp_or_proxy() -> None:
    issuer = policy().identity.oidc[0]
    assert isinstance(identity_from_claims(issuer, {"email": "system:admin"}), Rejected)
    ident = identity_from_claims(issuer, {"email": "a@b", "groups": ["system:masters", "ml"]})
    assert isinstance(ident, Identity) and ident.groups == ("ml",)
    r = req(
        {
            "x-forwarded-user": "system:serviceaccount:kube-system:admin",
            "x-kftenancy-proxy-secret": SECRET,
        }
    )
    assert isinstance(select_credential(policy(), r, SECRET), Rejected)
    r = req(
        {
            "x-forwarded-user": "alice",
            "x-forwarded-groups": "system:masters,ml",
            "x-kftenancy-proxy-secret": SECRET,
        }
    )
    cred = select_credential(policy(), r, SECRET)
    assert isinstance(cred, ProxyCredential) and cred.identity.groups == ("ml",)


def test_token_review_keeps_system_groups_from_the_api_server() -> None:
    ident = identity_from_token_review(
        {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:a:b",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
        }
    )
    assert isinstance(ident, Identity)
    assert ident.groups == ("system:serviceaccounts", "system:authenticated")
