"""The tenant renderer: every object kind, every policy switch, schema-valid output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from manifest_schemas import validate_manifest

from kftenancy import constants as c
from kftenancy.naming import is_dns_label
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.profile import Profile, parse_profile
from kftenancy.render import profile_for_user, tenant_objects

SEED = load_policy(None)
KUBERNETES = load_policy(
    {
        "platform": {"flavor": "kubernetes", "kubeflowInstalled": False},
        "mesh": {"flavor": "istio"},
    }
)
SWITCHES: dict[str, dict[str, Any]] = {
    "seed": {},
    "kubernetes-istio": {"platform": {"flavor": "kubernetes"}, "mesh": {"flavor": "istio"}},
    "istio-revision": {"mesh": {"flavor": "istio", "revision": "1-24"}},
    "no-mesh": {"mesh": {"flavor": "none"}},
    "data-lake": {"dataLake": {"enabled": True}},
    "no-serverless": {"serverless": {"enabled": False}},
    "no-gpu": {"gpu": {"enabled": False}},
    "no-identity-token": {"identity": {"identityToken": {"enabled": False}}},
    "profile-controller": {"platform": {"kubeflowProfileController": True}},
    "prefix": {"naming": {"prefix": "kf-"}, "identity": {"userPrefix": "accounts.google.com:"}},
    "gpu-queues": {"gpu": {"pools": [{"name": "t4"}], "queues": {"enabled": True}}},
}


def _validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith(c.KUEUE_GROUP):
        # Kueue kinds are checked against Kueue's own CRDs and webhooks in
        # tests/integration/test_gpu_queues.py (its CRDs come with the Kueue build).
        return
    validate_manifest(obj)


def _profile(
    name: str = "alice",
    owner: str = "alice@example.com",
    contributors: list[dict[str, str]] | None = None,
    quota: dict[str, Any] | None = None,
) -> Profile:
    spec: dict[str, Any] = {"owner": {"kind": "User", "name": owner}}
    if contributors is not None:
        spec["contributors"] = contributors
    if quota is not None:
        spec["resourceQuotaSpec"] = quota
    return parse_profile(
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


CONTRIBUTORS = [
    {"kind": "User", "name": "bob@example.com", "role": "edit"},
    {"kind": "Group", "name": "ml-team", "role": "view"},
]
PROFILE = _profile(contributors=CONTRIBUTORS)


def _by(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = _by(objs, kind, name)
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in _by(objs, kind)])
    return found[0]


def _kinds(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_every_object_is_schema_valid_and_labelled_as_ours(switch: str) -> None:
    policy = load_policy(SWITCHES[switch])
    objs = tenant_objects(policy, PROFILE)
    assert objs
    for obj in objs:
        _validate(obj)
        labels = obj["metadata"]["labels"]
        assert labels[c.LABEL_MANAGED_BY] == "kftenancy"
        assert labels[c.LABEL_TENANT] == "alice"
        if obj["kind"] not in ("Namespace", "ClusterQueue"):
            assert obj["metadata"]["namespace"] == "alice"
    assert len(_kinds(objs)) == len(objs), "duplicate (kind, name)"


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_switch_changes_the_output(switch: str) -> None:
    if switch == "seed":
        return
    assert tenant_objects(load_policy(SWITCHES[switch]), PROFILE) != tenant_objects(SEED, PROFILE)


def test_rendering_is_deterministic() -> None:
    assert tenant_objects(SEED, PROFILE) == tenant_objects(
        load_policy(None), _profile(contributors=CONTRIBUTORS)
    )


def test_seed_tenant_has_the_full_upstream_compatible_set() -> None:
    objs = tenant_objects(SEED, PROFILE)
    assert _kinds(objs) == {
        ("Namespace", "alice"),
        ("ServiceMeshMember", "default"),
        ("ServiceAccount", "default-editor"),
        ("ServiceAccount", "default-viewer"),
        ("RoleBinding", "namespaceAdmin"),
        ("RoleBinding", "default-editor"),
        ("RoleBinding", "default-viewer"),
        ("RoleBinding", "user-bob-example-com-77bql6emqlfw-clusterrole-edit"),
        ("RoleBinding", "group-ml-team-clusterrole-view"),
        ("RoleBinding", "kftenancy-scc-nonroot"),
        ("AuthorizationPolicy", "ns-owner-access-istio"),
        ("AuthorizationPolicy", "user-bob-example-com-77bql6emqlfw-clusterrole-edit"),
        ("AuthorizationPolicy", "group-ml-team-clusterrole-view"),
        ("AuthorizationPolicy", "allow-from-serving-system-namespace"),
        ("RequestAuthentication", "kftenancy-identity"),
        ("NetworkPolicy", "allow-same-namespace"),
        ("NetworkPolicy", "allow-from-ingress-gateway"),
        ("NetworkPolicy", "allow-from-kubeflow-namespace"),
        ("NetworkPolicy", "allow-from-serving-system-namespace"),
        ("ResourceQuota", "kf-resource-quota"),
        ("LimitRange", "default-resources"),
    }
    assert objs[0]["kind"] == "Namespace"


def test_namespace_has_owner_kubeflow_labels_and_gpu_default_tolerations() -> None:
    ns = _one(tenant_objects(SEED, PROFILE), "Namespace", "alice")
    assert ns["metadata"]["annotations"]["owner"] == "alice@example.com"
    labels = ns["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "kubeflow-profile"
    assert labels["katib.kubeflow.org/metrics-collector-injection"] == "enabled"
    assert labels["serving.kubeflow.org/inferenceservice"] == "enabled"
    assert labels["pipelines.kubeflow.org/enabled"] == "true"
    assert "istio-injection" not in labels  # OSSM uses ServiceMeshMember
    tolerations = json.loads(ns["metadata"]["annotations"][c.ANN_DEFAULT_TOLERATIONS])
    assert tolerations == [
        {"operator": "Equal", "effect": "NoSchedule", "key": "workload", "value": "ai-ml"}
    ]


def test_gpu_off_means_no_default_tolerations() -> None:
    ns = _one(
        tenant_objects(load_policy({"gpu": {"enabled": False}}), PROFILE), "Namespace", "alice"
    )
    assert c.ANN_DEFAULT_TOLERATIONS not in ns["metadata"]["annotations"]


def test_upstream_istio_labels_namespace_for_injection_or_revision() -> None:
    objs = tenant_objects(KUBERNETES, PROFILE)
    ns = _one(objs, "Namespace", "alice")
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert not _by(objs, "ServiceMeshMember")
    rev = _one(
        tenant_objects(load_policy({"mesh": {"flavor": "istio", "revision": "1-24"}}), PROFILE),
        "Namespace",
        "alice",
    )
    assert rev["metadata"]["labels"]["istio.io/rev"] == "1-24"
    assert "istio-injection" not in rev["metadata"]["labels"]


def test_service_mesh_member_references_the_control_plane() -> None:
    policy = load_policy(
        {"mesh": {"controlPlaneRef": {"name": "data-science", "namespace": "mesh"}}}
    )
    smm = _one(tenant_objects(policy, PROFILE), "ServiceMeshMember", "default")
    assert smm["apiVersion"] == "maistra.io/v1"
    assert smm["spec"] == {"controlPlaneRef": {"name": "data-science", "namespace": "mesh"}}


def test_no_mesh_means_no_mesh_objects() -> None:
    objs = tenant_objects(load_policy({"mesh": {"flavor": "none"}}), PROFILE)
    assert not _by(objs, "ServiceMeshMember")
    assert not _by(objs, "AuthorizationPolicy")
    assert _by(objs, "NetworkPolicy")  # network isolation does not depend on the mesh


def test_rolebindings_bind_kubeflow_roles_with_upstream_annotations() -> None:
    objs = tenant_objects(SEED, PROFILE)
    admin = _one(objs, "RoleBinding", "namespaceAdmin")
    assert admin["roleRef"]["name"] == "kubeflow-admin"
    assert admin["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}
    ]
    assert admin["metadata"]["annotations"] == {"user": "alice@example.com", "role": "admin"}
    for sa, role in (("default-editor", "kubeflow-edit"), ("default-viewer", "kubeflow-view")):
        rb = _one(objs, "RoleBinding", sa)
        assert rb["roleRef"]["name"] == role
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "alice"}]


def test_contributors_include_users_and_groups() -> None:
    objs = tenant_objects(SEED, PROFILE)
    user = _one(objs, "RoleBinding", "user-bob-example-com-77bql6emqlfw-clusterrole-edit")
    assert user["roleRef"]["name"] == "kubeflow-edit"
    assert user["subjects"][0]["kind"] == "User"
    assert user["metadata"]["annotations"] == {"user": "bob@example.com", "role": "edit"}
    group = _one(objs, "RoleBinding", "group-ml-team-clusterrole-view")
    assert group["roleRef"]["name"] == "kubeflow-view"
    assert group["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ml-team"}
    ]
    ap = _one(objs, "AuthorizationPolicy", "group-ml-team-clusterrole-view")
    [rule] = ap["spec"]["rules"]
    assert rule["when"] == [{"key": "request.auth.claims[groups]", "values": ["ml-team"]}]
    assert rule["from"][0]["source"]["requestPrincipals"] == [
        "https://kftenancy-gateway.kftenancy.svc/*"
    ]
    user_ap = _one(
        objs, "AuthorizationPolicy", "user-bob-example-com-77bql6emqlfw-clusterrole-edit"
    )
    assert user_ap["spec"]["rules"][0]["when"][0] == {
        "key": "request.headers[kubeflow-userid]",
        "values": ["bob@example.com"],
    }


def test_contributors_whose_names_sanitise_alike_get_distinct_objects() -> None:
    profile = _profile(
        contributors=[
            {"kind": "User", "name": "a.b@x.org", "role": "edit"},
            {"kind": "User", "name": "a-b@x.org", "role": "edit"},
        ]
    )
    names = [o["metadata"]["name"] for o in _by(tenant_objects(SEED, profile), "RoleBinding")]
    assert len(names) == len(set(names))
    assert len([n for n in names if n.startswith("user-")]) == 2


def test_contributors_come_from_the_annotation_when_the_crd_prunes_spec() -> None:
    doc = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {
            "name": "alice",
            "annotations": {c.ANN_CONTRIBUTORS: json.dumps(CONTRIBUTORS)},
        },
        "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
    }
    assert tenant_objects(SEED, parse_profile(doc)) == tenant_objects(SEED, PROFILE)


def test_openshift_scc_binding_only_on_openshift() -> None:
    scc = _one(tenant_objects(SEED, PROFILE), "RoleBinding", "kftenancy-scc-nonroot")
    assert scc["roleRef"]["name"] == "system:openshift:scc:nonroot"
    assert {s["name"] for s in scc["subjects"]} == {"default", "default-editor"}
    assert not _by(tenant_objects(KUBERNETES, PROFILE), "RoleBinding", "kftenancy-scc-nonroot")


def test_owner_authorization_policy_matches_upstream_shape() -> None:
    policy = load_policy({"identity": {"userPrefix": "accounts.google.com:"}})
    ap = _one(tenant_objects(policy, PROFILE), "AuthorizationPolicy", "ns-owner-access-istio")
    assert ap["spec"]["action"] == "ALLOW"
    assert ap["metadata"]["annotations"] == {"user": "alice@example.com", "role": "admin"}
    gateway, same_ns, probes, culling = ap["spec"]["rules"]
    assert gateway["from"][0]["source"]["principals"] == [
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        "cluster.local/ns/kubeflow/sa/ml-pipeline-ui",
    ]
    assert gateway["when"] == [
        {
            "key": "request.headers[kubeflow-userid]",
            "values": ["accounts.google.com:alice@example.com"],
        }
    ]
    assert same_ns == {"from": [{"source": {"namespaces": ["alice"]}}]}
    assert probes == {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]}
    assert culling == {
        "from": [
            {
                "source": {
                    "principals": [
                        "cluster.local/ns/kubeflow/sa/notebook-controller-service-account"
                    ]
                }
            }
        ],
        "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}],
    }


def test_header_forwarders_and_culler_follow_the_policy() -> None:
    policy = load_policy(
        {"mesh": {"headerForwarders": [], "notebookCuller": None, "trustDomain": "corp.local"}}
    )
    ap = _one(tenant_objects(policy, PROFILE), "AuthorizationPolicy", "ns-owner-access-istio")
    assert len(ap["spec"]["rules"]) == 3
    assert ap["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        "corp.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    ]


def test_serverless_policy_is_narrower_than_allow_all() -> None:
    objs = tenant_objects(SEED, PROFILE)
    ap = _one(objs, "AuthorizationPolicy", "allow-from-serving-system-namespace")
    rules = ap["spec"]["rules"]
    assert all(r for r in rules), "an empty rule would allow everything"
    assert rules[0] == {
        "from": [{"source": {"namespaces": ["knative-serving", "knative-serving-ingress"]}}]
    }
    assert rules[1]["to"][0]["operation"]["paths"] == ["/healthz", "/metrics", "/wait-for-drain"]
    np = _one(objs, "NetworkPolicy", "allow-from-serving-system-namespace")
    peers = np["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {
            "matchLabels": {"serving.knative.openshift.io/system-namespace": "true"}
        }
    } in peers
    assert {
        "namespaceSelector": {"matchLabels": {"knative.openshift.io/system-namespace": "true"}}
    } in peers
    off = tenant_objects(load_policy({"serverless": {"enabled": False}}), PROFILE)
    assert not _by(off, "AuthorizationPolicy", "allow-from-serving-system-namespace")
    assert not _by(off, "NetworkPolicy", "allow-from-serving-system-namespace")


def test_network_policies_admit_gateway_kubeflow_and_same_namespace_only() -> None:
    objs = tenant_objects(SEED, PROFILE)
    for np in _by(objs, "NetworkPolicy"):
        assert np["spec"]["podSelector"] == {}
        assert np["spec"]["policyTypes"] == ["Ingress"]
    gw = _one(objs, "NetworkPolicy", "allow-from-ingress-gateway")["spec"]["ingress"][0]["from"]
    assert gw == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["istio-system"],
                    }
                ]
            },
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
        }
    ]
    same = _one(objs, "NetworkPolicy", "allow-same-namespace")["spec"]["ingress"][0]["from"]
    assert same == [{"podSelector": {}}]


def test_quota_defaults_from_policy_and_profile_overrides_per_key() -> None:
    objs = tenant_objects(SEED, PROFILE)
    hard = _one(objs, "ResourceQuota", "kf-resource-quota")["spec"]["hard"]
    assert hard == {
        "cpu": "8",
        "memory": "16Gi",
        "requests.nvidia.com/gpu": "10",
        "persistentvolumeclaims": "10",
        "requests.storage": "200Gi",
    }
    custom = _profile(quota={"hard": {"cpu": 32, "requests.nvidia.com/gpu": "2"}})
    hard = _one(tenant_objects(SEED, custom), "ResourceQuota", "kf-resource-quota")["spec"]["hard"]
    assert hard["cpu"] == "32" and hard["requests.nvidia.com/gpu"] == "2"
    assert hard["memory"] == "16Gi"


def test_empty_quota_renders_no_resource_quota() -> None:
    objs = tenant_objects(load_policy({"resources": {"quota": {}}}), PROFILE)
    assert not _by(objs, "ResourceQuota")


def test_limit_range_gives_default_requests() -> None:
    lr = _one(tenant_objects(SEED, PROFILE), "LimitRange", "default-resources")
    assert lr["spec"]["limits"] == [
        {"type": "Container", "defaultRequest": {"cpu": "200m", "memory": "100Mi"}}
    ]
    policy = load_policy({"resources": {"limitRange": {"default": {"cpu": "1"}}}})
    lr = _one(tenant_objects(policy, PROFILE), "LimitRange", "default-resources")
    assert lr["spec"]["limits"][0]["default"] == {"cpu": "1"}


def test_data_lake_annotates_listed_service_accounts_only() -> None:
    off = tenant_objects(SEED, PROFILE)
    assert "annotations" not in _one(off, "ServiceAccount", "default-editor")["metadata"]
    policy = load_policy(
        {
            "dataLake": {
                "enabled": True,
                "roleArnTemplate": "arn:aws:iam::111122223333:role/kf-{namespace}",
                "tokenExpirationSeconds": 3600,
            }
        }
    )
    objs = tenant_objects(policy, PROFILE)
    editor = _one(objs, "ServiceAccount", "default-editor")["metadata"]["annotations"]
    assert editor == {
        c.ANN_ROLE_ARN: "arn:aws:iam::111122223333:role/kf-alice",
        c.ANN_AUDIENCE: "sts.amazonaws.com",
        c.ANN_STS_REGIONAL: "true",
        c.ANN_TOKEN_EXPIRATION: "3600",
    }
    assert "annotations" not in _one(objs, "ServiceAccount", "default-viewer")["metadata"]


def test_profile_controller_mode_leaves_upstream_objects_alone() -> None:
    policy = load_policy({"platform": {"kubeflowProfileController": True}})
    kinds = _kinds(tenant_objects(policy, PROFILE))
    for owned in [
        ("Namespace", "alice"),
        ("ServiceAccount", "default-editor"),
        ("ServiceAccount", "default-viewer"),
        ("RoleBinding", "namespaceAdmin"),
        ("RoleBinding", "default-editor"),
        ("RoleBinding", "default-viewer"),
        ("AuthorizationPolicy", "ns-owner-access-istio"),
        ("ResourceQuota", "kf-resource-quota"),
    ]:
        assert owned not in kinds
    assert ("ServiceMeshMember", "default") in kinds
    assert ("RoleBinding", "group-ml-team-clusterrole-view") in kinds
    assert ("LimitRange", "default-resources") in kinds


def test_onboarding_profile_renders_a_workspace_for_each_example_user() -> None:
    policy: TenancyPolicySpec = SEED
    namespaces = set()
    for user in ("Alice.Smith@Example.com", "alice.smith@other.org", "CN=Bob,OU=ML,DC=corp"):
        doc = profile_for_user(policy, user)
        validate_manifest(doc)
        profile = parse_profile(doc)
        assert profile.owner.name == user
        assert profile.user_id == user
        objs = tenant_objects(policy, profile)
        for obj in objs:
            validate_manifest(obj)
        namespaces.add(_one(objs, "Namespace", profile.name)["metadata"]["name"])
    assert len(namespaces) == 3


def test_groups_are_matched_by_verified_token_claims() -> None:
    objs = tenant_objects(SEED, PROFILE)
    ra = _one(objs, "RequestAuthentication", "kftenancy-identity")
    assert ra["spec"]["jwtRules"] == [
        {
            "issuer": "https://kftenancy-gateway.kftenancy.svc",
            "audiences": ["kubeflow"],
            "jwksUri": "https://kftenancy-gateway.kftenancy.svc/.well-known/jwks.json",
            "fromHeaders": [{"name": "x-kftenancy-identity"}],
            "forwardOriginalToken": True,
        }
    ]
    users_only = _profile(contributors=[CONTRIBUTORS[0]])
    assert not _by(tenant_objects(SEED, users_only), "RequestAuthentication")


def test_without_identity_token_groups_fall_back_to_the_groups_header() -> None:
    policy = load_policy({"identity": {"identityToken": {"enabled": False}}})
    objs = tenant_objects(policy, PROFILE)
    assert not _by(objs, "RequestAuthentication")
    ap = _one(objs, "AuthorizationPolicy", "group-ml-team-clusterrole-view")
    assert ap["spec"]["rules"][0]["when"] == [
        {"key": "request.headers[kubeflow-groups]", "values": ["ml-team", "ml-team,*", "*,ml-team"]}
    ]


def test_renderer_and_admission_webhook_agree_on_web_identity_annotations() -> None:
    from kftenancy.admission import serviceaccounts
    from kftenancy.render.tenant import web_identity_annotations

    policy = load_policy({"dataLake": {"enabled": True, "stsRegionalEndpoints": False}})
    assert web_identity_annotations(policy, PROFILE) == (
        serviceaccounts.web_identity_annotations(policy, PROFILE.name)
    )


def test_tenant_kinds_lists_every_kind_any_switch_renders() -> None:
    from kftenancy.render.tenant import TENANT_KINDS

    seen = set()
    for spec in SWITCHES.values():
        for obj in tenant_objects(load_policy(spec), PROFILE):
            seen.add((obj["apiVersion"], obj["kind"]))
    assert seen == set(TENANT_KINDS)


_names = st.one_of(
    st.emails(),
    st.text(min_size=1, max_size=120).filter(lambda s: s.strip() != ""),
)


@settings(max_examples=20, deadline=None)
@given(
    owner=_names,
    contributors=st.lists(
        st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["User", "Group"]),
                "name": _names,
                "role": st.sampled_from(["edit", "view"]),
            }
        ),
        max_size=4,
    ),
    switch=st.sampled_from(sorted(SWITCHES)),
)
def test_any_onboarded_user_gets_valid_uniquely_named_objects(
    owner: str, contributors: list[dict[str, str]], switch: str
) -> None:
    policy = load_policy(SWITCHES[switch])
    doc = profile_for_user(policy, owner)
    doc["spec"]["contributors"] = contributors
    objs = tenant_objects(policy, parse_profile(doc))
    assert len(_kinds(objs)) == len(objs)
    for obj in objs:
        assert is_dns_label(obj["metadata"]["name"].lower()), obj["metadata"]["name"]
        _validate(obj)


QUEUES = load_policy(
    {
        "resources": {"quota": {"cpu": "8", "memory": "16Gi", "requests.nvidia.com/gpu": "4"}},
        "gpu": {
            "pools": [{"name": "t4", "maxNodes": 4}],
            "queues": {"enabled": True, "tenants": {"alice": {"t4": 2}}},
        },
    }
)


def test_cluster_queue_guarantee_is_nominal_and_the_gpu_quota_caps_borrowing() -> None:
    cq = _one(tenant_objects(QUEUES, PROFILE), "ClusterQueue", "alice")
    assert cq["spec"]["cohortName"] == "kftenancy-gpu"
    assert cq["spec"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "alice"}
    }
    cpu_group, gpu_group = cq["spec"]["resourceGroups"]
    assert cpu_group["flavors"][0]["resources"] == [
        {"name": "cpu", "nominalQuota": "8"},
        {"name": "memory", "nominalQuota": "16Gi"},
    ]
    assert gpu_group["flavors"] == [
        {
            "name": "t4",
            "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "2", "borrowingLimit": "2"}],
        }
    ]
    assert cq["spec"]["preemption"]["reclaimWithinCohort"] == "Any"


def test_profile_quota_overrides_map_onto_the_cluster_queue() -> None:
    profile = _profile(quota={"hard": {"cpu": "2", "requests.nvidia.com/gpu": "1"}})
    cq = _one(tenant_objects(QUEUES, profile), "ClusterQueue", "alice")
    cpu_group, gpu_group = cq["spec"]["resourceGroups"]
    assert cpu_group["flavors"][0]["resources"][0] == {"name": "cpu", "nominalQuota": "2"}
    # The guarantee (2) is cut to the Profile's GPU quota (1); nothing left to borrow.
    assert gpu_group["flavors"][0]["resources"] == [
        {"name": "nvidia.com/gpu", "nominalQuota": "1", "borrowingLimit": "0"}
    ]


def test_tenants_without_their_own_guarantee_get_the_default_and_a_default_local_queue() -> None:
    bob = _profile(name="bob", owner="bob@example.com")
    objs = tenant_objects(QUEUES, bob)
    gpu_group = _one(objs, "ClusterQueue", "bob")["spec"]["resourceGroups"][1]
    assert gpu_group["flavors"][0]["resources"][0]["nominalQuota"] == "0"
    lq = _one(objs, "LocalQueue", "default")
    assert lq["metadata"]["namespace"] == "bob"
    assert lq["spec"] == {"clusterQueue": "bob"}


def test_no_queues_unless_enabled() -> None:
    off = load_policy({"gpu": {"pools": [{"name": "t4"}]}})
    assert not _by(tenant_objects(off, PROFILE), "ClusterQueue")
