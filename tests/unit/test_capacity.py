"""Warm GPU headroom: placeholders = f(pool policy, observed demand, time), on plain data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from kftenancy import constants as c
from kftenancy.capacity import (
    PoolDemand,
    headroom_gpus,
    observe_demand,
    placeholder_deployments,
    placeholders,
)
from kftenancy.policy import GPUPool, load_policy

UTC_ZONE = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
MONDAY_NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # 13:00 in Paris
SUNDAY_NOON = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)


def pool(**headroom: Any) -> GPUPool:
    return GPUPool.model_validate({"name": "t4", "maxNodes": 8, "headroom": headroom})


def test_headroom_is_not_zero_when_nothing_runs() -> None:
    assert placeholders(pool(minimumGpus=1), PoolDemand(), MONDAY_NOON, UTC_ZONE) == 1


def test_headroom_follows_a_fraction_of_use_rounded_up() -> None:
    assert headroom_gpus(pool(percent=20, minimumGpus=0), 6, MONDAY_NOON, UTC_ZONE) == 2


def test_working_hours_window_in_the_policy_time_zone() -> None:
    p = pool(minimumGpus=0, schedule=[{"start": "13:00", "end": "14:00", "minimumGpus": 3}])
    assert headroom_gpus(p, 0, MONDAY_NOON, PARIS) == 3  # 13:00 in Paris
    assert headroom_gpus(p, 0, MONDAY_NOON, UTC_ZONE) == 0  # 12:00 in UTC
    assert headroom_gpus(p, 0, SUNDAY_NOON, PARIS) == 0  # not a week day


def test_ceiling_caps_headroom() -> None:
    assert headroom_gpus(pool(percent=100, maximumGpus=2), 6, MONDAY_NOON, UTC_ZONE) == 2


def test_zero_when_the_policy_says_zero() -> None:
    assert (
        placeholders(pool(percent=0, minimumGpus=0), PoolDemand(5, 0), MONDAY_NOON, UTC_ZONE) == 0
    )


def test_placeholders_never_take_what_waiting_tenants_need() -> None:
    # 8 GPUs, 6 in use, 2 real pods waiting: no room for a placeholder.
    assert placeholders(pool(minimumGpus=2), PoolDemand(6, 2), MONDAY_NOON, UTC_ZONE) == 0


@given(
    in_use=st.integers(0, 40),
    pending=st.integers(0, 40),
    percent=st.integers(0, 100),
    minimum=st.integers(0, 10),
    maximum=st.one_of(st.none(), st.integers(0, 10)),
    hour=st.integers(0, 23),
)
def test_placeholders_stay_within_the_ceiling_and_the_pool(
    in_use: int, pending: int, percent: int, minimum: int, maximum: int | None, hour: int
) -> None:
    p = pool(percent=percent, minimumGpus=minimum, maximumGpus=maximum)
    n = placeholders(p, PoolDemand(in_use, pending), MONDAY_NOON.replace(hour=hour), UTC_ZONE)
    assert 0 <= n <= p.gpus - min(p.gpus, in_use + pending)
    if maximum is not None:
        assert n <= maximum


def _pod(name: str, gpus: int, *, node: str | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]
    }
    if node:
        spec["nodeName"] = node
    spec.update(extra.pop("spec", {}))
    return {"metadata": {"name": name, **extra}, "spec": spec, "status": {}}


def test_demand_counts_bound_pending_and_placeholder_pods_per_pool() -> None:
    t4 = pool()
    nodes = [
        {"metadata": {"name": "gpu-1", "labels": {"workload": "ai-ml"}}},
        {"metadata": {"name": "cpu-1", "labels": {}}},
    ]
    pods = [
        _pod("running", 2, node="gpu-1"),
        _pod("waiting", 1, spec={"nodeSelector": {"workload": "ai-ml"}}),
        _pod("elsewhere", 1, node="cpu-1"),
        _pod("warm", 1, node="gpu-1", labels={c.LABEL_GPU_POOL: "t4"}),
        {**_pod("done", 4, node="gpu-1"), "status": {"phase": "Succeeded"}},
    ]
    assert observe_demand(pods, nodes, [t4], "nvidia.com/gpu") == {"t4": PoolDemand(2, 1, 1)}


def test_placeholder_deployment_requests_one_gpu_each_at_the_placeholder_priority() -> None:
    policy = load_policy({"gpu": {"pools": [{"name": "t4"}]}})
    [dep] = placeholder_deployments(policy, {"t4": 3})
    assert dep["metadata"]["namespace"] == "kftenancy"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == c.PRIORITY_CLASS_PLACEHOLDER
    assert pod["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "1"}
    assert pod["tolerations"] == [
        {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}
    ]
    off = load_policy({"gpu": {"enabled": False, "pools": [{"name": "t4"}]}})
    assert placeholder_deployments(off, {"t4": 3})[0]["spec"]["replicas"] == 0


def test_tenant_gpu_view_from_its_cluster_queue_and_workloads() -> None:
    from kftenancy.capacity.status import status_configmap, tenant_gpu

    cq = {
        "spec": {
            "resourceGroups": [
                {"coveredResources": ["cpu", "memory"], "flavors": []},
                {
                    "coveredResources": ["nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": "t4",
                            "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "2"}],
                        }
                    ],
                },
            ]
        },
        "status": {
            "flavorsReservation": [
                {
                    "name": "t4",
                    "resources": [{"name": "nvidia.com/gpu", "total": "3", "borrowed": "1"}],
                }
            ]
        },
    }

    def workload(name: str, gpus: int, admitted: bool, created: str) -> dict[str, Any]:
        pod = {"spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]}}
        conds = [{"type": "QuotaReserved", "status": "True" if admitted else "False"}]
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"podSets": [{"count": 1, "template": pod}]},
            "status": {"conditions": conds},
        }

    wls = [
        workload("late", 1, False, "2026-01-01T00:02:00Z"),
        workload("running", 3, True, "2026-01-01T00:00:00Z"),
        workload("early", 2, False, "2026-01-01T00:01:00Z"),
    ]
    view = tenant_gpu("alice", cq, wls)
    assert (view.guarantee, view.in_use, view.borrowed, view.pending) == (2, 3, 1, 3)
    assert view.pending_workloads == ["early", "late"]
    cm = status_configmap(load_policy({}), view)
    assert cm["metadata"]["namespace"] == "alice"
    assert cm["data"]["inUse"] == "3" and cm["data"]["borrowed"] == "1"


def test_gpu_capacity_findings_name_the_problem_and_the_fix() -> None:
    from kftenancy.capacity.doctor import GPUCluster, gpu_capacity_findings
    from kftenancy.doctor import Severity

    policy = load_policy({"gpu": {"pools": [{"name": "t4"}], "queues": {"enabled": True}}})
    pc = {"metadata": {"name": c.PRIORITY_CLASS_PLACEHOLDER}, "value": -1}
    openshift = {
        "metadata": {"name": "default"},
        "spec": {
            "podPriorityThreshold": -10,
            "resourceLimits": {"gpus": [{"type": "nvidia-a100"}]},
        },
    }
    found = gpu_capacity_findings(
        policy, GPUCluster(priority_classes=[pc], cluster_autoscalers=[openshift])
    )
    errors = [f for f in found if f.severity == Severity.ERROR]
    assert len(errors) == 2
    assert "no type 'nvidia-t4'" in errors[0].message and errors[0].fix
    assert "kueue.x-k8s.io/v1beta2" in errors[1].message
    # The old value -10 is below a cutoff of -5: placeholders would keep no warm node.
    old = {**pc, "value": -10}
    strict = GPUCluster(
        priority_classes=[old], autoscaler_args=["--expendable-pods-priority-cutoff=-5"]
    )
    [priority] = [f for f in gpu_capacity_findings(policy, strict) if f.object]
    assert priority.severity == Severity.ERROR and "cutoff -5" in priority.message


def test_autoscaler_templates_carry_the_accelerator_label_the_taint_and_gpu_limits() -> None:
    from kftenancy.capacity.autoscaler import autoscaler_flags, autoscaler_manifests

    pools = [{"name": "t4", "maxNodes": 3, "node": {"gpus": 2}}]
    openshift = autoscaler_manifests(load_policy({"gpu": {"pools": pools}}))
    ca, ma, ms = openshift
    assert ca["spec"]["resourceLimits"]["gpus"] == [{"type": "nvidia-t4", "min": 0, "max": 6}]
    assert ca["spec"]["podPriorityThreshold"] == -10
    assert ma["spec"]["maxReplicas"] == 3
    template = ms["spec"]["template"]["spec"]
    assert template["metadata"]["labels"][c.LABEL_ACCELERATOR] == "nvidia-t4"
    assert template["taints"] == [{"key": "workload", "value": "ai-ml", "effect": "NoSchedule"}]
    capi = autoscaler_manifests(
        load_policy({"platform": {"flavor": "kubernetes"}, "gpu": {"pools": pools}})
    )
    annotations = capi[0]["metadata"]["annotations"]
    assert annotations["capacity.cluster-autoscaler.kubernetes.io/gpu-count"] == "2"
    assert (
        "cluster-api/accelerator=nvidia-t4"
        in annotations["capacity.cluster-autoscaler.kubernetes.io/labels"]
    )
    assert "--gpu-total=nvidia-t4:0:6" in autoscaler_flags(load_policy({"gpu": {"pools": pools}}))
