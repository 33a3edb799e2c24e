"""A tenant's GPU view: guarantee, in use, borrowed, pending, from its Kueue
ClusterQueue and Workloads (plain dicts). Pure; `kftenancy status` and the tenant's
status ConfigMap (`kftenancy-gpu-status`, readable by the tenant, who cannot read
cluster-scoped ClusterQueues) both show it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kftenancy import constants as c
from kftenancy.capacity.demand import pod_gpus
from kftenancy.policy import TenancyPolicySpec
from kftenancy.reconcile import quantity_value
from kftenancy.render.meta import metadata, tenant_labels


@dataclass(frozen=True)
class TenantGPU:
    tenant: str
    guarantee: int = 0
    in_use: int = 0
    borrowed: int = 0
    pending: int = 0  # GPUs asked for by workloads waiting in the queue
    pending_workloads: list[str] = field(default_factory=list)  # in queue order


def _gpu_usage(cq: Mapping[str, Any], resource: str, key: str) -> tuple[int, int]:
    total = borrowed = 0
    for flavor in (cq.get("status") or {}).get(key) or []:
        for res in flavor.get("resources") or []:
            if res.get("name") == resource:
                total += int(quantity_value(str(res.get("total", "0"))) or 0)
                borrowed += int(quantity_value(str(res.get("borrowed", "0"))) or 0)
    return total, borrowed


def _condition(obj: Mapping[str, Any], kind: str) -> bool:
    return any(
        cd.get("type") == kind and cd.get("status") == "True"
        for cd in (obj.get("status") or {}).get("conditions") or []
    )


def workload_gpus(workload: Mapping[str, Any], resource: str) -> int:
    total = 0
    for ps in (workload.get("spec") or {}).get("podSets") or []:
        total += pod_gpus(ps.get("template") or {}, resource) * int(ps.get("count", 1))
    return total


def gpu_resource(cluster_queue: Mapping[str, Any]) -> str | None:
    """The accelerator resource a kftenancy ClusterQueue covers (not cpu/memory)."""
    for group in (cluster_queue.get("spec") or {}).get("resourceGroups") or []:
        for name in group.get("coveredResources") or []:
            if name not in ("cpu", "memory"):
                return str(name)
    return None


def tenant_gpu(
    tenant: str, cluster_queue: Mapping[str, Any], workloads: Iterable[Mapping[str, Any]]
) -> TenantGPU:
    """The tenant's GPU view from its ClusterQueue (guarantee = nominal quota, what Kueue
    enforces; in use and borrowed from its reservations) and its namespace's Workloads
    (pending ones in queue order: priority, then age)."""
    resource = gpu_resource(cluster_queue) or "nvidia.com/gpu"
    guarantee = 0
    for group in (cluster_queue.get("spec") or {}).get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            for res in flavor.get("resources") or []:
                if res.get("name") == resource:
                    guarantee += int(quantity_value(str(res.get("nominalQuota", "0"))) or 0)
    in_use, borrowed = _gpu_usage(cluster_queue, resource, "flavorsReservation")
    waiting = sorted(
        (
            w
            for w in workloads
            if not _condition(w, "QuotaReserved") and not _condition(w, "Finished")
        ),
        key=lambda w: (
            -int((w.get("spec") or {}).get("priority") or 0),
            str((w.get("metadata") or {}).get("creationTimestamp") or ""),
        ),
    )
    return TenantGPU(
        tenant=tenant,
        guarantee=guarantee,
        in_use=in_use,
        borrowed=borrowed,
        pending=sum(workload_gpus(w, resource) for w in waiting),
        pending_workloads=[str(w["metadata"]["name"]) for w in waiting],
    )


def status_configmap(policy: TenancyPolicySpec, view: TenantGPU) -> dict[str, Any]:
    """The tenant-visible status, in the tenant's namespace."""
    data = {k: str(v) for k, v in asdict(view).items() if k not in ("tenant", "pending_workloads")}
    data["queue"] = json.dumps(
        [{"position": i + 1, "workload": n} for i, n in enumerate(view.pending_workloads)]
    )
    data["localQueue"] = policy.gpu.queues.local_queue
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(c.GPU_STATUS_CONFIGMAP, tenant_labels(view.tenant), view.tenant),
        "data": {_camel(k): v for k, v in data.items()},
    }


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)
