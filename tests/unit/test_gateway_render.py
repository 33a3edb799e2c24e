"""Rendered mesh/gateway configuration for the front door."""

from __future__ import annotations

from kftenancy.gateway.authz import AuthzResult
from kftenancy.gateway.decision import decide
from kftenancy.gateway.identity import Identity, Request
from kftenancy.policy import load_policy
from kftenancy.render.gateway import ext_authz_provider, gateway_objects, istio_mesh_config


def by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def test_upstream_headers_cover_everything_an_allowed_check_sets() -> None:
    for identity in (
        {},
        {"userHeader": "x-user", "identityToken": {"header": "x-id"}},
        {"identityToken": {"enabled": False}},
    ):
        p = load_policy({"identity": identity})
        d = decide(p, Identity("a"), AuthzResult(True), Request("GET", "/", {}), "tok")
        allowed = ext_authz_provider(p)["envoyExtAuthzHttp"]["headersToUpstreamOnAllow"]
        assert set(d.headers_to_set) == set(allowed)


def test_provider_has_timeout_no_fail_open_and_sends_credentials() -> None:
    p = load_policy({"mesh": {"extAuthzTimeout": "500ms"}})
    e = ext_authz_provider(p)["envoyExtAuthzHttp"]
    assert e["timeout"] == "500ms" and e["failOpen"] is False and e["pathPrefix"] == "/check"
    assert e["service"] == "kftenancy-gateway.kftenancy.svc.cluster.local" and e["port"] == 8443
    for h in ("authorization", "x-forwarded-user", "x-kftenancy-proxy-secret", "accept"):
        assert h in e["includeRequestHeadersInCheck"]
    assert {"www-authenticate", "location"} <= set(e["headersToDownstreamOnDeny"])
    assert istio_mesh_config(p) == {"extensionProviders": [ext_authz_provider(p)]}


def test_ossm_renders_smcp_custom_deny_and_destination_rule() -> None:
    objs = by_kind(gateway_objects(load_policy({})))
    smcp = objs["ServiceMeshControlPlane"][0]
    assert smcp["metadata"] == {"name": "basic", "namespace": "istio-system"}
    assert smcp["spec"]["meshConfig"]["extensionProviders"][0]["name"] == "kftenancy-gateway"
    aps = {o["metadata"]["name"]: o for o in objs["AuthorizationPolicy"]}
    custom = aps["kftenancy-ext-authz"]
    assert custom["spec"]["action"] == "CUSTOM" and custom["spec"]["provider"] == {
        "name": "kftenancy-gateway"
    }
    assert custom["spec"]["selector"]["matchLabels"] == {"istio": "ingressgateway"}
    assert custom["spec"]["rules"] == [{}]  # every request, every port
    deny = aps["kftenancy-deny-forged-identity"]
    assert deny["spec"]["action"] == "DENY"
    headers = {r["when"][0]["key"] for r in deny["spec"]["rules"]}
    assert headers == {
        "request.headers[kubeflow-userid]",
        "request.headers[kubeflow-groups]",
        "request.headers[x-kftenancy-identity]",
    }
    senders = deny["spec"]["rules"][0]["from"][0]["source"]["notPrincipals"]
    assert "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account" in senders
    assert "cluster.local/ns/kubeflow/sa/*" in senders
    assert "cluster.local/ns/knative-serving/sa/*" in senders
    assert objs["DestinationRule"][0]["spec"]["trafficPolicy"]["tls"]["mode"] == "SIMPLE"
    for o in gateway_objects(load_policy({})):
        if o["kind"] != "ServiceMeshControlPlane":  # a partial apply of someone else's object
            assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kftenancy"


def test_upstream_istio_has_no_smcp() -> None:
    kinds = by_kind(gateway_objects(load_policy({"mesh": {"flavor": "istio"}})))
    assert "ServiceMeshControlPlane" not in kinds and len(kinds["AuthorizationPolicy"]) == 2


def test_gateway_api_without_mesh() -> None:
    p = load_policy(
        {
            "mesh": {"flavor": "none"},
            "identity": {"frontDoor": {"gatewayApi": {"name": "kubeflow", "namespace": "gw"}}},
        }
    )
    objs = by_kind(gateway_objects(p))
    assert set(objs) == {"SecurityPolicy", "BackendTLSPolicy", "ReferenceGrant"}
    sp = objs["SecurityPolicy"][0]
    assert sp["metadata"]["namespace"] == "gw"
    assert sp["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kubeflow"}
    ]
    http = sp["spec"]["extAuth"]["http"]
    assert http["path"] == "/check" and http["backendRefs"] == [
        {"name": "kftenancy-gateway", "namespace": "kftenancy", "port": 8443}
    ]
    assert http["headersToBackend"] == [
        "kubeflow-userid",
        "kubeflow-groups",
        "x-kftenancy-identity",
    ]
    assert sp["spec"]["extAuth"]["failOpen"] is False
    grant = objs["ReferenceGrant"][0]
    assert (
        grant["metadata"]["namespace"] == "kftenancy"
        and grant["spec"]["from"][0]["namespace"] == "gw"
    )


def test_no_mesh_no_gateway_api_renders_nothing() -> None:
    assert gateway_objects(load_policy({"mesh": {"flavor": "none"}})) == []


def test_platform_objects_carry_the_mesh_policies_only_with_a_mesh() -> None:
    from kftenancy.render.platform import platform_objects

    def names(p: object) -> set[str]:
        return {
            o["metadata"]["name"] for o in platform_objects(p) if o["kind"] == "AuthorizationPolicy"
        }  # type: ignore[arg-type]

    assert names(load_policy({})) == {"kftenancy-ext-authz", "kftenancy-deny-forged-identity"}
    assert names(load_policy({"mesh": {"flavor": "none"}})) == set()
    gateway_role = next(
        o
        for o in platform_objects(load_policy({}))
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "kftenancy-gateway"
    )
    verbs = {
        (g, r, v)
        for rule in gateway_role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "list") in verbs
