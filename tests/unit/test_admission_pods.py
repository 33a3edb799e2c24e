"""Pod rules: GPU toleration for tenants, denial of GPU tolerations elsewhere, and the
web-identity injection."""

from __future__ import annotations

from typing import Any

import pytest
from admission_support import (
    GPU_TOLERATION,
    OTHER_NS,
    TENANT_NS,
    admission_review,
    context,
    denial,
    lake_policy,
    mutated,
    pod,
    policy,
    run,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from kftenancy import constants as c
from kftenancy.admission import Phase
from kftenancy.admission.serviceaccounts import web_identity_annotations

TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"


def lake_context(ns: str = TENANT_NS, sa: str = "default-editor", **overrides: str) -> Any:
    annotations = {**web_identity_annotations(lake_policy(), ns), **overrides}
    return context(service_accounts={(ns, sa): annotations})


# ---------------------------------------------------------------- GPU toleration


def test_tenant_pod_gets_the_gpu_toleration() -> None:
    out = mutated(policy(), pod(TENANT_NS))
    assert out["spec"]["tolerations"] == [GPU_TOLERATION]


def test_tenant_pod_keeps_its_tolerations_and_gets_ours_appended() -> None:
    mine = {"key": "team", "operator": "Exists", "effect": "NoSchedule"}
    out = mutated(policy(), pod(TENANT_NS, tolerations=[mine]))
    assert out["spec"]["tolerations"] == [mine, GPU_TOLERATION]


@pytest.mark.parametrize(
    "existing",
    [
        GPU_TOLERATION,
        {"operator": "Exists"},
        {"key": "workload", "operator": "Exists"},
        {"key": "workload", "operator": "Equal", "value": "ai-ml"},
    ],
)
def test_tenant_pod_that_already_tolerates_gpu_is_not_patched(existing: dict[str, Any]) -> None:
    out = run(policy(), admission_review(pod(TENANT_NS, tolerations=[existing])), Phase.MUTATE)
    assert "patch" not in out.response["response"]


def test_tenant_pod_with_a_different_value_for_the_gpu_key_still_gets_ours() -> None:
    other = {"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    out = mutated(policy(), pod(TENANT_NS, tolerations=[other]))
    assert out["spec"]["tolerations"] == [other, GPU_TOLERATION]
    outcome = run(policy(), admission_review(pod(TENANT_NS, tolerations=[other])), Phase.MUTATE)
    assert outcome.decision.warnings == (
        "kftenancy: added the GPU toleration workload=ai-ml:NoSchedule next to "
        "workload=batch:NoSchedule, which does not tolerate the GPU taint",
    )


def test_non_tenant_pod_is_not_given_the_toleration() -> None:
    out = run(policy(), admission_review(pod(OTHER_NS)), Phase.MUTATE)
    assert "patch" not in out.response["response"]


@pytest.mark.parametrize(
    "toleration",
    [
        GPU_TOLERATION,
        {"operator": "Exists"},  # tolerates every taint
        {"operator": "Exists", "effect": "NoSchedule"},
        {"key": "workload", "operator": "Exists"},
        {"key": "workload", "value": "ai-ml"},  # empty operator means Equal
        {"key": "workload", "operator": "Gt", "value": "1"},  # unknown operator: fail closed
    ],
)
def test_non_tenant_pod_tolerating_gpu_is_denied_with_reason(toleration: dict[str, Any]) -> None:
    message = denial(
        run(policy(), admission_review(pod(OTHER_NS, tolerations=[toleration])), Phase.VALIDATE)
    )
    assert "tolerates the GPU taint workload=ai-ml:NoSchedule" in message
    assert OTHER_NS in message and c.LABEL_TENANT in message


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
        {"key": "workload", "operator": "Exists", "effect": "NoExecute"},
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ],
)
def test_non_tenant_pod_with_harmless_tolerations_is_allowed(toleration: dict[str, Any]) -> None:
    out = run(policy(), admission_review(pod(OTHER_NS, tolerations=[toleration])), Phase.VALIDATE)
    assert out.response["response"]["allowed"] is True


def test_unknown_namespace_counts_as_non_tenant() -> None:
    out = run(
        policy(), admission_review(pod("nowhere", tolerations=[GPU_TOLERATION])), Phase.VALIDATE
    )
    assert out.decision.code == "gpu_toleration"


def test_tenant_and_exempt_pods_may_tolerate_gpu() -> None:
    for ns in (TENANT_NS, "kube-system", "nvidia-gpu-operator"):
        review = admission_review(pod(ns, tolerations=[{"operator": "Exists"}]))
        assert run(policy(), review, Phase.VALIDATE).response["response"]["allowed"] is True, ns


def test_update_judges_only_added_tolerations() -> None:
    old = pod(OTHER_NS, tolerations=[GPU_TOLERATION])
    new = pod(OTHER_NS, tolerations=[GPU_TOLERATION])
    new["metadata"]["finalizers"] = []
    review = admission_review(new, operation="UPDATE", old=old)
    assert run(policy(), review, Phase.VALIDATE).response["response"]["allowed"] is True
    added = pod(OTHER_NS, tolerations=[{"operator": "Exists"}])
    review = admission_review(added, operation="UPDATE", old=pod(OTHER_NS))
    assert run(policy(), review, Phase.VALIDATE).decision.code == "gpu_toleration"


def test_custom_taint_from_policy() -> None:
    pol = policy(
        gpu={"taint": {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}}
    )
    out = mutated(pol, pod(TENANT_NS))
    assert out["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    denied = run(
        pol,
        admission_review(
            pod(OTHER_NS, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
        ),
        Phase.VALIDATE,
    )
    assert denied.decision.code == "gpu_toleration"


# ---------------------------------------------------------------- web identity


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_pod_of_a_role_account_gets_token_volume_mount_and_env() -> None:
    p = pod(
        TENANT_NS,
        service_account="default-editor",
        containers=[
            {"name": "main", "image": "x"},
            {"name": "side", "image": "y", "env": [{"name": "A", "value": "1"}]},
        ],
        init_containers=[{"name": "init", "image": "z"}],
    )
    out = mutated(lake_policy(), p, lake_context())
    assert out["spec"]["volumes"] == [
        {
            "name": "aws-iam-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": "sts.amazonaws.com",
                            "expirationSeconds": 86400,
                            "path": "token",
                        }
                    }
                ]
            },
        }
    ]
    for container in out["spec"]["initContainers"] + out["spec"]["containers"]:
        assert {"name": "aws-iam-token", "mountPath": TOKEN_DIR, "readOnly": True} in container[
            "volumeMounts"
        ]
        env = env_of(container)
        assert env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/kubeflow-alice"
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{TOKEN_DIR}/token"
        assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env_of(out["spec"]["containers"][1])["A"] == "1"
    assert out["spec"]["tolerations"] == [GPU_TOLERATION]


def test_audience_and_expiry_come_from_the_service_account() -> None:
    ctx = lake_context(**{c.ANN_AUDIENCE: "seaweed", c.ANN_TOKEN_EXPIRATION: "3600"})
    out = mutated(lake_policy(), pod(TENANT_NS, service_account="default-editor"), ctx)
    token = out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert (token["audience"], token["expirationSeconds"]) == ("seaweed", 3600)


def test_too_short_or_invalid_expiry_is_corrected_with_a_warning() -> None:
    for raw, want in (("60", 600), ("soon", 86400)):
        ctx = lake_context(**{c.ANN_TOKEN_EXPIRATION: raw})
        review = admission_review(pod(TENANT_NS, service_account="default-editor"))
        outcome = run(lake_policy(), review, Phase.MUTATE, ctx)
        assert any(c.ANN_TOKEN_EXPIRATION in w for w in outcome.decision.warnings)
        out = mutated(lake_policy(), pod(TENANT_NS, service_account="default-editor"), ctx)
        assert (
            out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"][
                "expirationSeconds"
            ]
            == want
        )


def test_skip_containers_annotation_is_respected() -> None:
    p = pod(
        TENANT_NS,
        service_account="default-editor",
        containers=[{"name": "main", "image": "x"}, {"name": "istio-proxy", "image": "y"}],
        annotations={c.ANN_SKIP_CONTAINERS: "istio-proxy, other"},
    )
    out = mutated(lake_policy(), p, lake_context())
    main, proxy = out["spec"]["containers"]
    assert "AWS_ROLE_ARN" in env_of(main)
    assert "env" not in proxy and "volumeMounts" not in proxy


def test_user_set_env_is_not_overridden() -> None:
    p = pod(
        TENANT_NS,
        service_account="default-editor",
        containers=[
            {"name": "m", "image": "x", "env": [{"name": "AWS_REGION", "value": "eu-central-1"}]}
        ],
    )
    out = mutated(lake_policy(), p, lake_context())
    names = [e["name"] for e in out["spec"]["containers"][0]["env"]]
    assert (
        names.count("AWS_REGION") == 1
        and env_of(out["spec"]["containers"][0])["AWS_REGION"] == "eu-central-1"
    )


def test_non_root_pod_without_fs_group_gets_one() -> None:
    cases: list[tuple[dict[str, Any] | None, list[dict[str, Any]] | None, int | None]] = [
        ({"runAsNonRoot": True}, None, 65534),
        ({"runAsUser": 1000, "runAsGroup": 1000}, None, 1000),
        (None, [{"name": "m", "image": "x", "securityContext": {"runAsUser": 1001}}], 65534),
        ({"runAsUser": 1000, "fsGroup": 42}, None, 42),
        (None, None, None),  # root (or unknown): nothing to do
    ]
    for security, containers, want in cases:
        p = pod(
            TENANT_NS,
            service_account="default-editor",
            security_context=security,
            containers=containers,
        )
        out = mutated(lake_policy(), p, lake_context())
        assert out["spec"].get("securityContext", {}).get("fsGroup") == want, security


def test_no_injection_without_role_or_with_platform_injection() -> None:
    cases = [
        (lake_policy(), pod(OTHER_NS), lake_context()),  # SA without role
        (
            lake_policy(injection="platform"),
            pod(TENANT_NS, service_account="default-editor"),
            lake_context(),
        ),
        (policy(), pod(TENANT_NS, service_account="default-editor"), lake_context()),  # lake off
    ]
    for pol, p, ctx in cases:
        out = mutated(pol, p, ctx)
        assert "volumes" not in out["spec"]
        assert all("env" not in ct for ct in out["spec"]["containers"])


def test_any_namespace_with_an_annotated_account_gets_injection() -> None:
    ctx = context(
        service_accounts={(OTHER_NS, "runner"): {c.ANN_ROLE_ARN: "arn:aws:iam::1:role/r"}}
    )
    out = mutated(lake_policy(), pod(OTHER_NS, service_account="runner"), ctx)
    assert env_of(out["spec"]["containers"][0])["AWS_ROLE_ARN"] == "arn:aws:iam::1:role/r"
    assert "tolerations" not in out["spec"]


def test_existing_volume_and_mount_are_not_duplicated() -> None:
    first = mutated(lake_policy(), pod(TENANT_NS, service_account="default-editor"), lake_context())
    first["spec"]["containers"].append({"name": "late", "image": "x"})  # e.g. a sidecar added later
    second = mutated(lake_policy(), first, lake_context())
    assert len(second["spec"]["volumes"]) == 1
    assert "AWS_ROLE_ARN" in env_of(second["spec"]["containers"][1])


# ---------------------------------------------------------------- properties

names = st.sampled_from(["main", "side", "istio-proxy", "init"])
env_entries = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["AWS_REGION", "AWS_ROLE_ARN", "HOME", "X"]),
            "value": st.text(max_size=3),
        }
    ),
    max_size=3,
)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": names, "image": st.just("x")},
        optional={
            "env": env_entries,
            "volumeMounts": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["data", "aws-iam-token"]),
                        "mountPath": st.sampled_from(["/data", TOKEN_DIR]),
                    }
                ),
                max_size=2,
            ),
        },
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda ct: ct["name"],
)
tolerations = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "key": st.sampled_from(["", "workload", "team"]),
            "operator": st.sampled_from(["Equal", "Exists"]),
            "value": st.sampled_from(["ai-ml", "batch"]),
            "effect": st.sampled_from(["NoSchedule", "NoExecute"]),
        },
    ),
    max_size=3,
)


@given(
    cs=containers,
    inits=st.one_of(st.none(), containers),
    ts=st.one_of(st.none(), tolerations),
    skip=st.one_of(st.none(), st.sampled_from(["istio-proxy", "main,side"])),
    security=st.one_of(
        st.none(), st.sampled_from([{"runAsNonRoot": True}, {"runAsUser": 0}, {"fsGroup": 7}])
    ),
    namespace_=st.sampled_from([TENANT_NS, OTHER_NS]),
)
@settings(max_examples=200)
def test_mutation_is_idempotent_and_only_adds(
    cs: list[dict[str, Any]],
    inits: list[dict[str, Any]] | None,
    ts: list[dict[str, Any]] | None,
    skip: str | None,
    security: dict[str, Any] | None,
    namespace_: str,
) -> None:
    p = pod(
        namespace_,
        service_account="default-editor",
        containers=cs,
        init_containers=inits,
        tolerations=ts,
        annotations={c.ANN_SKIP_CONTAINERS: skip} if skip else None,
        security_context=security,
    )
    ctx = lake_context(namespace_)
    review = admission_review(p)
    if run(lake_policy(), review, Phase.VALIDATE, ctx).decision.code == "gpu_toleration":
        return  # refused anyway; mutation of such a pod is moot
    out = mutated(lake_policy(), p, ctx)  # asserts a second pass patches nothing
    for field in ("containers", "initContainers"):
        for before, after in zip(
            p["spec"].get(field) or [], out["spec"].get(field) or [], strict=True
        ):
            assert after["name"] == before["name"]
            assert after.get("env", [])[: len(before.get("env", []))] == before.get("env", [])
            assert after.get("volumeMounts", [])[
                : len(before.get("volumeMounts", []))
            ] == before.get("volumeMounts", [])
            skipped = after["name"] in {s.strip() for s in (skip or "").split(",")}
            has_role = any(e["name"] == "AWS_ROLE_ARN" for e in after.get("env", []))
            assert has_role or skipped
    assert out["spec"]["tolerations" if namespace_ == TENANT_NS else "containers"]
