"""Kueue objects for fair GPU sharing (`gpu.queues.enabled`).

Platform: one `ResourceFlavor` per GPU pool (its node labels and the toleration of the
GPU taint, which Kueue adds to a workload's pods only when it admits them on that
flavor) and `kftenancy-default` for cpu/memory. Per tenant: a `ClusterQueue` named after
the tenant (nominal GPU quota = its guarantee, borrowing from the shared cohort,
preemption to reclaim the guarantee; usable only from the tenant's namespace) and a
`LocalQueue` in its namespace. The LocalQueue is named `default` unless the policy says
otherwise: Kueue (LocalQueueDefaulting, GA in 0.17) then labels every job created
without `kueue.x-k8s.io/queue-name` in that namespace with `default`.

The Profile's quota maps onto the ClusterQueue: cpu/memory nominal quota from the
tenant's ResourceQuota (`requests.cpu`/`cpu`, `requests.memory`/`memory`), and its
`requests.<gpu>` caps guarantee + borrowing, so Kueue never admits what the
ResourceQuota would refuse.
"""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.policy import GPUPool, TenancyPolicySpec
from kftenancy.profile import Profile
from kftenancy.reconcile import quantity_value
from kftenancy.render.meta import metadata, platform_labels, tenant_labels

# No quota key for cpu/memory in the tenant's quota: Kueue needs a number anyway.
UNLIMITED = {"cpu": "100k", "memory": "1Pi"}


def enabled(policy: TenancyPolicySpec) -> bool:
    return policy.gpu.enabled and policy.gpu.queues.enabled and bool(policy.gpu.pools)


def resource_flavor(policy: TenancyPolicySpec, pool: GPUPool) -> dict[str, Any]:
    return {
        "apiVersion": c.KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": metadata(pool.name, platform_labels("capacity")),
        "spec": {
            "nodeLabels": dict(pool.node_selector),
            "tolerations": [policy.gpu.taint.toleration().manifest()],
        },
    }


def resource_flavors(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    if not enabled(policy):
        return []
    default = {
        "apiVersion": c.KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": metadata(c.DEFAULT_FLAVOR, platform_labels("capacity")),
        "spec": {},
    }
    return [default, *(resource_flavor(policy, p) for p in policy.gpu.pools)]


def guarantee(policy: TenancyPolicySpec, tenant: str, pool: str) -> int:
    """GPUs of `pool` guaranteed to `tenant` (its own entry, else the default, else 0)."""
    q = policy.gpu.queues
    own = q.tenants.get(tenant, {})
    return own.get(pool, q.guarantee_gpus.get(pool, 0))


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    number = quantity_value(str(value))
    return None if number is None else int(number)


def gpu_quotas(
    policy: TenancyPolicySpec, tenant: str, hard: dict[str, str]
) -> list[tuple[str, int, int | None]]:
    """Per pool (name, nominal, borrowing limit or None = unlimited) for one tenant.

    The tenant's GPU quota (`requests.<gpu>`), if any, caps nominal + borrowing: the
    guarantee is cut to it, and borrowing to what is left."""
    q = policy.gpu.queues
    cap = _count(hard.get(f"requests.{policy.gpu.resource_name}"))
    out: list[tuple[str, int, int | None]] = []
    for pool in policy.gpu.pools:
        nominal = guarantee(policy, tenant, pool.name)
        borrow = q.borrowing_limit_gpus
        if cap is not None:
            nominal = min(nominal, cap)
            borrow = cap - nominal if borrow is None else min(borrow, cap - nominal)
        out.append((pool.name, nominal, borrow))
    return out


def cluster_queue(
    policy: TenancyPolicySpec, profile: Profile, hard: dict[str, str]
) -> dict[str, Any]:
    q = policy.gpu.queues
    cpu = hard.get("requests.cpu") or hard.get("cpu") or UNLIMITED["cpu"]
    memory = hard.get("requests.memory") or hard.get("memory") or UNLIMITED["memory"]
    gpu_flavors = []
    for name, nominal, borrow in gpu_quotas(policy, profile.name, hard):
        quota: dict[str, Any] = {"name": policy.gpu.resource_name, "nominalQuota": str(nominal)}
        if borrow is not None:
            quota["borrowingLimit"] = str(borrow)
        gpu_flavors.append({"name": name, "resources": [quota]})
    preemption = q.preemption
    return {
        "apiVersion": c.KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": metadata(profile.name, tenant_labels(profile.name)),
        "spec": {
            "cohortName": q.cohort,
            # Only the tenant's own namespace may submit to it (a LocalQueue elsewhere
            # pointing here admits nothing).
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": profile.name}},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [
                        {
                            "name": c.DEFAULT_FLAVOR,
                            "resources": [
                                {"name": "cpu", "nominalQuota": str(cpu)},
                                {"name": "memory", "nominalQuota": str(memory)},
                            ],
                        }
                    ],
                },
                {"coveredResources": [policy.gpu.resource_name], "flavors": gpu_flavors},
            ],
            "preemption": {
                "reclaimWithinCohort": preemption.reclaim_within_cohort,
                "withinClusterQueue": preemption.within_cluster_queue,
                "borrowWithinCohort": {"policy": preemption.borrow_within_cohort},
            },
        },
    }


def local_queue(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    return {
        "apiVersion": c.KUEUE_API,
        "kind": "LocalQueue",
        "metadata": metadata(
            policy.gpu.queues.local_queue, tenant_labels(profile.name), profile.name
        ),
        "spec": {"clusterQueue": profile.name},
    }


def tenant_queues(
    policy: TenancyPolicySpec, profile: Profile, hard: dict[str, str]
) -> list[dict[str, Any]]:
    """The tenant's ClusterQueue and LocalQueue ([] when queues are off)."""
    if not enabled(policy):
        return []
    return [cluster_queue(policy, profile, hard), local_queue(policy, profile)]
