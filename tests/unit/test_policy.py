"""The policy model: seed defaults, validation errors that name field and value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kftenancy.errors import describe_validation_error
from kftenancy.policy import Flavor, MeshFlavor, TenancyPolicySpec, load_policy


def test_defaults_reproduce_the_seed_recipe() -> None:
    p = load_policy(None)
    assert p.platform.flavor == Flavor.OPENSHIFT
    assert p.mesh.flavor == MeshFlavor.OSSM
    assert p.identity.user_header == "kubeflow-userid"
    assert (p.identity.authorization.rule.verb, p.identity.authorization.rule.resource) == (
        "get",
        "pods",
    )
    assert p.identity.authorization.rule.namespace == "kubeflow"
    assert p.resources.quota["requests.nvidia.com/gpu"] == "10"
    assert p.resources.limit_range.default_request == {"cpu": "200m", "memory": "100Mi"}
    assert (p.gpu.taint.key, p.gpu.taint.value, p.gpu.taint.effect) == (
        "workload",
        "ai-ml",
        "NoSchedule",
    )
    assert p.offboarding.retention_days is None  # never delete data by default


def test_whole_object_and_bare_spec_parse_the_same() -> None:
    spec = {"naming": {"prefix": "kf-"}}
    whole = {"apiVersion": "kftenancy.dev/v1alpha1", "kind": "TenancyPolicy", "spec": spec}
    assert load_policy(whole) == load_policy(spec)
    assert load_policy(spec).naming.prefix == "kf-"


def test_camel_case_aliases_round_trip() -> None:
    p = load_policy({"dataLake": {"enabled": True, "tokenExpirationSeconds": 3600}})
    dumped = p.model_dump(by_alias=True)
    assert dumped["dataLake"]["tokenExpirationSeconds"] == 3600
    assert TenancyPolicySpec.model_validate(dumped) == p


@pytest.mark.parametrize(
    ("doc", "field", "value"),
    [
        ({"naming": {"prefix": "Upper"}}, "naming.prefix", "'Upper'"),
        ({"resources": {"quota": {"cpu": "lots"}}}, "resources.quota", "'lots'"),
        ({"dataLake": {"tokenExpirationSeconds": 60}}, "dataLake.tokenExpirationSeconds", "60"),
        ({"dataLake": {"roleArnTemplate": "arn:{tenant}"}}, "dataLake.roleArnTemplate", "tenant"),
        ({"mesh": {"flavor": "linkerd"}}, "mesh.flavor", "'linkerd'"),
        (
            {"gpu": {"allowedTolerations": [{"key": "workload", "operator": "Exists"}]}},
            "gpu",
            "GPU taint",
        ),
        (
            {"identity": {"oidc": [{"issuer": "http://x", "audiences": ["a"]}]}},
            "identity.oidc[0].issuer",
            "https",
        ),
        ({"unknownSection": {}}, "unknownSection", "Extra inputs"),
        (
            {"gpu": {"pools": [{"name": "t4"}], "queues": {"guaranteeGpus": {"t4": -1}}}},
            "gpu.queues.guaranteeGpus.t4",
            "greater than or equal to 0",
        ),
        (
            {
                "gpu": {
                    "pools": [{"name": "t4", "maxNodes": 2}],
                    "queues": {"tenants": {"a": {"t4": 3}}},
                }
            },
            "gpu: queues.tenants.a.t4",
            "above the size of pool t4 (2 GPUs",
        ),
        (
            {"gpu": {"pools": [{"name": "t4"}], "queues": {"tenants": {"a": {"a100": 1}}}}},
            "gpu: queues.tenants.a.a100",
            "unknown flavor 'a100'",
        ),
        (
            {"gpu": {"pools": [{"name": "t4", "headroom": {"minimumGpus": -2}}]}},
            "gpu.pools[0].headroom.minimumGpus",
            "greater than or equal to 0",
        ),
        ({"gpu": {"timeZone": "Mars/Olympus"}}, "gpu.timeZone", "IANA"),
        (
            {
                "gpu": {
                    "pools": [
                        {
                            "name": "t4",
                            "headroom": {
                                "schedule": [{"start": "18:00", "end": "08:00", "minimumGpus": 1}]
                            },
                        }
                    ]
                }
            },
            "gpu.pools[0].headroom.schedule[0]",
            "must be after start",
        ),
    ],
)
def test_invalid_policy_names_field_and_value(
    doc: dict[str, object], field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as info:
        load_policy(doc)
    message = describe_validation_error(info.value, "policy.yaml")
    assert message.startswith(f"policy.yaml: {field}")
    assert value in message


def test_exempt_namespaces_include_own_kubeflow_mesh_and_patterns() -> None:
    p = load_policy(None)
    for ns in ("kftenancy", "kubeflow", "istio-system", "kube-system", "openshift-monitoring"):
        assert p.is_exempt(ns), ns
    for ns in ("default", "alice", "team-a"):
        assert not p.is_exempt(ns), ns
