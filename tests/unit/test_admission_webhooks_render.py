"""The rendered webhook configurations: valid, narrow, documented failure policies."""

from __future__ import annotations

import base64
import fnmatch
import re
from typing import Any

import kubernetes_validate
from hypothesis import given
from hypothesis import strategies as st

from kftenancy import constants as c
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.webhooks import (
    WebhookEndpoint,
    exempt_names,
    glob_to_re2,
    webhook_configurations,
)


def hooks(policy: TenancyPolicySpec, **kw: Any) -> dict[str, dict[str, Any]]:
    mutating, validating = webhook_configurations(policy, **kw)
    return {h["name"]: h for h in mutating["webhooks"] + validating["webhooks"]}


def selector_values(hook: dict[str, Any], key: str) -> dict[str, Any]:
    return {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}[key]


def test_configurations_are_valid_kubernetes_objects() -> None:
    for policy in (load_policy(None), load_policy({"dataLake": {"enabled": True}})):
        for endpoint in (None, WebhookEndpoint(url="https://127.0.0.1:9443", ca_bundle=b"PEM")):
            for obj in webhook_configurations(policy, endpoint):
                kubernetes_validate.validate(obj, "1.36", strict=True)


def test_every_webhook_is_side_effect_free_short_and_has_the_documented_failure_policy() -> None:
    found = hooks(load_policy({"dataLake": {"enabled": True}}))
    assert {n: h["failurePolicy"] for n, h in found.items()} == {
        "namespaces.mutate.kftenancy.dev": "Ignore",
        "serviceaccounts.mutate.kftenancy.dev": "Ignore",
        "pods.mutate.kftenancy.dev": "Ignore",
        "namespaces.validate.kftenancy.dev": "Fail",
        "pods.validate.kftenancy.dev": "Fail",
    }
    for hook in found.values():
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert 1 <= hook["timeoutSeconds"] <= 5
        assert all(len(rule["resources"]) == 1 for rule in hook["rules"])
        excluded = selector_values(hook, "kubernetes.io/metadata.name")
        assert excluded["operator"] == "NotIn"
        assert {"kube-system", "kftenancy", "kubeflow"} <= set(excluded["values"])


def test_pod_validation_sees_only_non_tenant_namespaces_and_updates() -> None:
    hook = hooks(load_policy(None))["pods.validate.kftenancy.dev"]
    assert selector_values(hook, c.LABEL_TENANT)["operator"] == "DoesNotExist"
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    conditions = {m["name"]: m["expression"] for m in hook["matchConditions"]}
    assert "t.key == 'workload'" in conditions["may-tolerate-gpu-taint"]


def test_namespace_validation_only_for_label_changes_by_others() -> None:
    hook = hooks(load_policy(None), controller_users=["system:serviceaccount:kftenancy:ctl"])[
        "namespaces.validate.kftenancy.dev"
    ]
    conditions = {m["name"]: m["expression"] for m in hook["matchConditions"]}
    assert c.LABEL_TENANT in conditions["tenant-label-changed"]
    assert "'system:serviceaccount:kftenancy:ctl'" in conditions["not-kftenancy"]


def test_narrowing_follows_the_policy() -> None:
    off = hooks(load_policy(None))
    assert "serviceaccounts.mutate.kftenancy.dev" not in off  # data lake off
    assert selector_values(off["pods.mutate.kftenancy.dev"], c.LABEL_TENANT)["operator"] == "Exists"
    platform = hooks(load_policy({"dataLake": {"enabled": True, "injection": "platform"}}))
    assert selector_values(platform["pods.mutate.kftenancy.dev"], c.LABEL_TENANT)
    injecting = hooks(load_policy({"dataLake": {"enabled": True}}))["pods.mutate.kftenancy.dev"]
    keys = {e["key"] for e in injecting["namespaceSelector"]["matchExpressions"]}
    assert c.LABEL_TENANT not in keys  # role accounts anywhere (non-exempt) get injection
    assert injecting["reinvocationPolicy"] == "IfNeeded"
    no_gpu = hooks(load_policy({"gpu": {"enabled": False}}))
    assert set(no_gpu) == {"namespaces.validate.kftenancy.dev"}


def test_client_config_url_with_ca_bundle_or_service() -> None:
    url = hooks(
        load_policy(None), endpoint=WebhookEndpoint(url="https://127.0.0.1:9443/", ca_bundle=b"CA")
    )
    config = url["pods.validate.kftenancy.dev"]["clientConfig"]
    assert config == {
        "url": "https://127.0.0.1:9443/validate",
        "caBundle": base64.b64encode(b"CA").decode(),
    }
    svc = hooks(load_policy({"platform": {"namespace": "tenancy"}}))["pods.mutate.kftenancy.dev"]
    assert svc["clientConfig"] == {
        "service": {
            "name": "kftenancy-webhook",
            "namespace": "tenancy",
            "port": 443,
            "path": "/mutate",
        }
    }
    _, validating = webhook_configurations(
        load_policy(None), WebhookEndpoint(inject_ca_from="kftenancy/webhook")
    )
    assert validating["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "kftenancy/webhook"
    }


def test_exempt_patterns_split_into_selector_names_and_cel_regex() -> None:
    exact, patterns = exempt_names(load_policy(None))
    assert "kube-system" in exact and "openshift" in exact and "istio-system" in exact
    assert patterns == ["kube-*", "openshift-*", "knative-*"]
    hook = hooks(load_policy(None))["pods.mutate.kftenancy.dev"]
    condition = {m["name"]: m["expression"] for m in hook["matchConditions"]}["not-exempt"]
    assert condition == "!request.namespace.matches('^(kube-.*|openshift-.*|knative-.*)$')"
    ns_hook = hooks(load_policy(None))["namespaces.mutate.kftenancy.dev"]
    assert ns_hook["matchConditions"][0]["expression"].startswith("!object.metadata.name.matches(")


@given(
    pattern=st.text(alphabet="ab-*?", min_size=1, max_size=6),
    name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True),
)
def test_glob_regex_matches_exactly_what_fnmatch_matches(pattern: str, name: str) -> None:
    regex = "^(" + glob_to_re2(pattern) + ")$"
    assert "\\" not in regex
    assert bool(re.match(regex, name)) == fnmatch.fnmatchcase(name, pattern)


def test_platform_objects_carry_the_webhook_configurations() -> None:
    from kftenancy.render.platform import platform_objects

    objs = platform_objects(load_policy(None))
    kinds = {o["kind"]: o for o in objs}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        obj = kinds[kind]
        assert obj["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "kftenancy/kftenancy-webhook"
        }
        service = obj["webhooks"][0]["clientConfig"]["service"]
        assert (service["name"], service["namespace"]) == ("kftenancy-webhook", "kftenancy")
    validating = {h["name"]: h for h in kinds["ValidatingWebhookConfiguration"]["webhooks"]}
    conditions = validating["namespaces.validate.kftenancy.dev"]["matchConditions"]
    users = {m["name"]: m["expression"] for m in conditions}["not-kftenancy"]
    assert "'system:serviceaccount:kftenancy:kftenancy-controller'" in users
