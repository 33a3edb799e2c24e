"""Platform objects, tolerations annotations, IAM documents and the onboarding Profile."""

from __future__ import annotations

import json
from typing import Any

import pytest
from manifest_schemas import validate_manifest

from kftenancy import constants as c
from kftenancy.errors import KftenancyError
from kftenancy.naming import NamingError, profile_name
from kftenancy.policy import load_policy
from kftenancy.profile import parse_profile
from kftenancy.render import (
    default_tolerations_annotation,
    iam_documents,
    platform_objects,
    profile_for_user,
    whitelist_annotation,
)

SEED = load_policy(None)
STANDALONE = load_policy(
    {
        "platform": {"flavor": "kubernetes", "kubeflowInstalled": False},
        "mesh": {"flavor": "istio"},
        "gpu": {"pools": [{"name": "t4"}]},
        "offboarding": {"retentionDays": 30},
    }
)


def _names(objs: list[dict[str, Any]], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objs if o["kind"] == kind}


def _role(objs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    [role] = [o for o in objs if o["kind"] == "ClusterRole" and o["metadata"]["name"] == name]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


@pytest.mark.parametrize("policy", [SEED, STANDALONE], ids=["seed", "standalone"])
def test_platform_objects_are_schema_valid_and_ours(policy: Any) -> None:
    objs = platform_objects(policy)
    for obj in objs:
        validate_manifest(obj)
        assert obj["metadata"]["labels"][c.LABEL_MANAGED_BY] == "kftenancy"
    assert objs[0]["kind"] == "CustomResourceDefinition"


def test_profile_crd_and_kubeflow_roles_only_without_kubeflow() -> None:
    seed = platform_objects(SEED)
    assert _names(seed, "CustomResourceDefinition") == {"tenancypolicies.kftenancy.dev"}
    assert not {"kubeflow-admin", "kubeflow-edit", "kubeflow-view"} & _names(seed, "ClusterRole")
    alone = platform_objects(STANDALONE)
    assert "profiles.kubeflow.org" in _names(alone, "CustomResourceDefinition")
    assert {"kubeflow-admin", "kubeflow-edit", "kubeflow-view"} <= _names(alone, "ClusterRole")


def test_kubeflow_roles_aggregate_view_into_edit_into_admin() -> None:
    roles = {
        o["metadata"]["name"]: o for o in platform_objects(STANDALONE) if o["kind"] == "ClusterRole"
    }
    edit_labels = roles["kubeflow-edit"]["metadata"]["labels"]
    assert edit_labels["rbac.authorization.kubeflow.org/aggregate-to-kubeflow-admin"] == "true"
    view_labels = roles["kubeflow-view"]["metadata"]["labels"]
    assert view_labels["rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit"] == "true"
    selector = roles["kubeflow-kubernetes-edit"]["aggregationRule"]["clusterRoleSelectors"]
    assert selector == [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]


def test_each_component_has_its_own_identity_in_the_kftenancy_namespace() -> None:
    objs = platform_objects(SEED)
    components = {c.COMPONENT_CONTROLLER, c.COMPONENT_WEBHOOK, c.COMPONENT_GATEWAY}
    assert components <= _names(objs, "ServiceAccount")
    assert components <= _names(objs, "ClusterRole")
    for binding in (o for o in objs if o["kind"] == "ClusterRoleBinding"):
        name = binding["metadata"]["name"]
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": "kftenancy"}
        ]


def test_component_roles_are_least_privilege() -> None:
    objs = platform_objects(SEED)
    controller = _role(objs, c.COMPONENT_CONTROLLER)
    webhook = _role(objs, c.COMPONENT_WEBHOOK)
    gateway = _role(objs, c.COMPONENT_GATEWAY)
    for rules in (controller, webhook, gateway):
        for rule in rules:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert "*" not in rule["apiGroups"]
            assert "escalate" not in rule["verbs"] and "impersonate" not in rule["verbs"]
    # No data is ever deleted without a retention period.
    assert not _grants(controller, "", "namespaces", "delete")
    standalone = _role(platform_objects(STANDALONE), c.COMPONENT_CONTROLLER)
    assert _grants(standalone, "", "namespaces", "delete")
    # Binding Kubeflow roles is limited by name.
    [bind] = [r for r in controller if r["verbs"] == ["bind"]]
    assert set(bind["resourceNames"]) == {
        "kubeflow-admin",
        "kubeflow-edit",
        "kubeflow-view",
        "system:openshift:scc:nonroot",
    }
    assert not _grants(controller, "", "secrets", "get")
    assert _grants(controller, "maistra.io", "servicemeshmembers", "create")
    assert _grants(controller, "user.openshift.io", "users", "watch")
    assert not _grants(webhook, "", "namespaces", "patch")
    assert _grants(gateway, "authentication.k8s.io", "tokenreviews", "create")
    assert _grants(gateway, "authorization.k8s.io", "subjectaccessreviews", "create")
    assert _grants(gateway, "kubeflow.org", "profiles", "create")
    assert not _grants(gateway, "kubeflow.org", "profiles", "delete")


def test_component_roles_follow_policy_switches() -> None:
    controller = _role(platform_objects(STANDALONE), c.COMPONENT_CONTROLLER)
    assert not _grants(controller, "maistra.io", "servicemeshmembers", "create")
    assert not _grants(controller, "user.openshift.io", "users", "watch")
    assert _grants(controller, "security.istio.io", "authorizationpolicies", "patch")
    assert _grants(controller, "security.istio.io", "requestauthentications", "patch")
    no_mesh = _role(
        platform_objects(load_policy({"mesh": {"flavor": "none"}})), c.COMPONENT_CONTROLLER
    )
    assert not _grants(no_mesh, "security.istio.io", "authorizationpolicies", "patch")
    gateway = _role(
        platform_objects(load_policy({"identity": {"onboarding": ["openshiftUsers"]}})),
        c.COMPONENT_GATEWAY,
    )
    assert not _grants(gateway, "kubeflow.org", "profiles", "create")


def test_placeholder_priority_class_never_preempts_and_yields_to_default_pods() -> None:
    assert not _names(platform_objects(SEED), "PriorityClass")  # no pools, no headroom
    [pc] = [o for o in platform_objects(STANDALONE) if o["kind"] == "PriorityClass"]
    assert pc["metadata"]["name"] == c.PRIORITY_CLASS_PLACEHOLDER
    assert pc["value"] < 0
    # The cluster autoscaler ignores pods below --expendable-pods-priority-cutoff (default
    # -10) for scale-up: placeholders must stay at or above it to keep warm nodes.
    assert pc["value"] >= -10
    assert pc["preemptionPolicy"] == "Never"
    assert not pc.get("globalDefault", False)


def test_whitelist_allows_automatic_tolerations_never_the_gpu_taint() -> None:
    whitelist = json.loads(whitelist_annotation(SEED))
    keys = {t["key"] for t in whitelist}
    assert keys == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/memory-pressure",
    }
    assert whitelist, "an empty whitelist means no restriction"
    assert all(t["key"] != "workload" for t in whitelist)
    not_ready = next(t for t in whitelist if t["key"] == "node.kubernetes.io/not-ready")
    assert not_ready == {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }


def test_default_tolerations_annotation_is_stable_json_of_the_gpu_taint() -> None:
    value = default_tolerations_annotation(SEED)
    assert value == '[{"effect":"NoSchedule","key":"workload","operator":"Equal","value":"ai-ml"}]'
    assert default_tolerations_annotation(load_policy({"gpu": {"enabled": False}})) == "[]"


def test_iam_trust_is_restricted_to_the_tenant_service_accounts_and_audience() -> None:
    policy = load_policy(
        {"dataLake": {"enabled": True, "serviceAccounts": ["default-editor", "pipeline-runner"]}}
    )
    profile = parse_profile(profile_for_user(policy, "alice"))
    docs = iam_documents(policy, profile)
    assert docs["roleArn"] == "arn:aws:iam::123456789012:role/kubeflow-alice"
    [statement] = docs["trustPolicy"]["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example.com"
    }
    assert statement["Condition"]["StringEquals"] == {
        "oidc.example.com:aud": "sts.amazonaws.com",
        "oidc.example.com:sub": [
            "system:serviceaccount:alice:default-editor",
            "system:serviceaccount:alice:pipeline-runner",
        ],
    }
    assert "*" not in json.dumps(docs["trustPolicy"])
    assert len(json.dumps(docs["trustPolicy"])) < 2048


def test_iam_permissions_are_restricted_to_the_tenant_prefix() -> None:
    policy = load_policy({"dataLake": {"enabled": True, "bucket": "lake"}})
    docs = iam_documents(policy, parse_profile(profile_for_user(policy, "alice")))
    listing, objects = docs["permissionPolicy"]["Statement"]
    assert listing["Resource"] == ["arn:aws:s3:::lake"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["alice/", "alice/*"]}}
    assert objects["Resource"] == ["arn:aws:s3:::lake/alice/*"]
    assert "s3:*" not in objects["Action"]


def test_iam_documents_need_the_data_lake() -> None:
    with pytest.raises(KftenancyError, match=r"dataLake\.enabled"):
        iam_documents(SEED, parse_profile(profile_for_user(SEED, "alice")))


def test_profile_for_user_keeps_the_exact_id_and_uses_the_safe_name() -> None:
    user = "Alice.Smith@Example.com"
    doc = profile_for_user(SEED, user)
    validate_manifest(doc)
    assert doc["apiVersion"] == "kubeflow.org/v1" and doc["kind"] == "Profile"
    assert doc["metadata"]["name"] == profile_name(SEED, user)
    assert doc["metadata"]["annotations"] == {c.ANN_USER_ID: user}
    assert doc["spec"] == {"owner": {"kind": "User", "name": user}}
    with pytest.raises(NamingError):
        profile_for_user(SEED, "   ")


def test_resource_flavor_per_pool_tolerates_exactly_the_gpu_taint() -> None:
    policy = load_policy(
        {"gpu": {"pools": [{"name": "t4"}, {"name": "a100", "nodeSelector": {"gpu": "a100"}}],
                 "queues": {"enabled": True}}}
    )  # fmt: skip
    flavors = {
        o["metadata"]["name"]: o for o in platform_objects(policy) if o["kind"] == "ResourceFlavor"
    }
    assert set(flavors) == {"kftenancy-default", "t4", "a100"}
    assert flavors["a100"]["spec"] == {
        "nodeLabels": {"gpu": "a100"},
        "tolerations": [
            {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}
        ],
    }
    assert flavors["kftenancy-default"]["spec"] == {}
    rules = _role(platform_objects(policy), "kftenancy-controller")
    assert _grants(rules, "kueue.x-k8s.io", "clusterqueues", "patch")
    assert not _grants(_role(platform_objects(STANDALONE), "kftenancy-controller"),
                       "kueue.x-k8s.io", "clusterqueues", "patch")  # fmt: skip
    assert not [o for o in platform_objects(STANDALONE) if o["kind"] == "ResourceFlavor"]
