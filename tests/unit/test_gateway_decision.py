"""The decision: status and headers for every authentication/authorization outcome."""

from __future__ import annotations

from kftenancy.gateway.authz import (
    AuthzResult,
    access_review,
    authz_from_review,
    cache_key,
    cache_seconds,
)
from kftenancy.gateway.decision import client_identity_headers, decide, is_browser
from kftenancy.gateway.identity import Identity, Rejected, Request
from kftenancy.policy import load_policy

P = load_policy(
    {
        "identity": {
            "userPrefix": "accounts.example.com:",
            "signInUrl": "https://login.example.com/start",
        }
    }
)
ALICE = Identity("alice@example.com", ("ml", "data"), "oidc")
OK = AuthzResult(True, "may get pods in namespace kubeflow")


def req(headers: dict[str, str], method: str = "GET") -> Request:
    return Request(method, "/notebook/x", headers)


def test_allowed_sets_prefixed_user_groups_and_identity_token() -> None:
    d = decide(P, ALICE, OK, req({}), "signed.jwt.value")
    assert d.status == 200 and d.allowed and d.reason == "allowed"
    assert d.headers_to_set == {
        "kubeflow-userid": "accounts.example.com:alice@example.com",
        "kubeflow-groups": "ml,data",
        "x-kftenancy-identity": "signed.jwt.value",
    }


def test_client_supplied_identity_headers_are_overwritten_or_removed() -> None:
    client = {
        "kubeflow-userid": "admin",
        "kubeflow-groups": "admins",
        "x-kftenancy-identity": "forged",
        "x-forwarded-user": "admin",
        "x-forwarded-email": "admin@example.com",
        "x-forwarded-groups": "admins",
        "x-kftenancy-proxy-secret": "guess",
        "x-auth-request-user": "admin",
    }
    d = decide(P, ALICE, OK, req(client), "tok")
    for name in client:
        assert name in d.headers_to_set or name in d.headers_to_remove, name
    assert d.headers_to_set["kubeflow-userid"] != "admin"
    # never both set and removed (Envoy would apply them in an unspecified order)
    assert not set(d.headers_to_set) & set(d.headers_to_remove)


def test_groups_header_is_set_even_when_empty() -> None:
    d = decide(
        P, Identity("bob", (), "kubernetesToken"), OK, req({"kubeflow-groups": "admins"}), "t"
    )
    assert d.headers_to_set["kubeflow-groups"] == ""


def test_custom_header_names_are_stripped_too() -> None:
    p = load_policy(
        {
            "identity": {
                "userHeader": "X-User",
                "groupsHeader": "x-groups",
                "identityToken": {"header": "x-id"},
                "trustedProxy": {"userHeader": "x-proxy-user", "secretHeader": "x-proxy-key"},
            }
        }
    )
    names = client_identity_headers(p)
    for h in ("x-user", "x-groups", "x-id", "x-proxy-user", "x-proxy-key", "x-forwarded-user"):
        assert h in names
    d = decide(p, ALICE, OK, req({}), "t")
    assert set(d.headers_to_set) == {"x-user", "x-groups", "x-id"}
    assert "x-proxy-key" in d.headers_to_remove


def test_identity_token_header_absent_when_disabled() -> None:
    p = load_policy({"identity": {"identityToken": {"enabled": False}}})
    d = decide(p, ALICE, OK, req({}), None)
    assert "x-kftenancy-identity" not in d.headers_to_set
    assert "x-kftenancy-identity" in d.headers_to_remove


def test_unauthenticated_browser_is_redirected_to_sign_in() -> None:
    d = decide(P, None, None, req({"accept": "text/html,application/xhtml+xml"}))
    assert d.status == 302 and d.headers_to_set == {"location": "https://login.example.com/start"}


def test_unauthenticated_api_call_gets_401_with_challenge() -> None:
    d = decide(P, None, None, req({"accept": "application/json"}))
    assert d.status == 401 and d.reason == "no-credentials"
    assert d.headers_to_set["www-authenticate"].startswith("Bearer")


def test_browser_without_sign_in_url_gets_401() -> None:
    d = decide(load_policy({}), None, None, req({"accept": "text/html"}))
    assert d.status == 401


def test_xhr_and_post_are_not_browsers() -> None:
    assert not is_browser(req({"accept": "text/html", "x-requested-with": "XMLHttpRequest"}))
    assert not is_browser(req({"accept": "text/html"}, "POST"))
    assert is_browser(req({"accept": "text/html"}, "HEAD"))


def test_invalid_credentials_get_401_invalid_token_even_for_browsers() -> None:
    d = decide(
        P,
        Rejected("expired", "the token has expired"),
        None,
        req({"authorization": "Bearer x", "accept": "text/html"}),
    )
    assert d.status == 401 and 'error="invalid_token"' in d.headers_to_set["www-authenticate"]
    assert d.reason == "expired"


def test_malformed_request_gets_400() -> None:
    d = decide(P, Rejected("malformed-request", "two Authorization headers", 400), None, req({}))
    assert d.status == 400


def test_verifier_outage_gets_503_not_500() -> None:
    d = decide(P, Rejected("authn-unavailable", "JWKS unreachable", 503), None, req({}))
    assert d.status == 503
    d = decide(P, ALICE, None, req({}))
    assert d.status == 503 and d.reason == "authz-unavailable"


def test_authenticated_but_not_authorized_gets_403_with_reason() -> None:
    denied = authz_from_review(P, {"allowed": False})
    d = decide(P, ALICE, denied, req({}))
    assert d.status == 403 and d.reason == "forbidden"
    assert d.detail == "alice@example.com is not allowed to get pods in namespace kubeflow"
    assert d.headers_to_set == {}


def test_sar_denied_overrides_allowed() -> None:
    assert not authz_from_review(P, {"allowed": True, "denied": True}).allowed
    assert authz_from_review(P, {"allowed": True}).allowed


def test_access_review_carries_rule_and_groups() -> None:
    body = access_review(P, ALICE)
    assert body["spec"] == {
        "user": "alice@example.com",
        "groups": ["ml", "data"],
        "resourceAttributes": {
            "verb": "get",
            "group": "",
            "resource": "pods",
            "namespace": "kubeflow",
        },
    }
    cluster_rule = load_policy(
        {
            "identity": {
                "authorization": {
                    "rule": {
                        "verb": "list",
                        "resource": "profiles",
                        "group": "kubeflow.org",
                        "namespace": None,
                    }
                }
            }
        }
    )
    assert "namespace" not in access_review(cluster_rule, ALICE)["spec"]["resourceAttributes"]


def test_cache_key_ignores_group_order_and_ttls_differ() -> None:
    assert cache_key(ALICE) == cache_key(Identity("alice@example.com", ("data", "ml")))
    assert cache_seconds(P, OK) == 300
    assert cache_seconds(P, AuthzResult(False)) == 10
