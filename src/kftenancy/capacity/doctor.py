"""`gpu_capacity_findings(policy, cluster)`: what warm headroom and fair GPU queues need
from a cluster beyond tainted, labelled GPU nodes (the doctor's `gpu-nodes` check): the
placeholder PriorityClass at or above the autoscaler's expendable-pods cutoff, an
autoscaler whose GPU limits name each pool's accelerator, and Kueue's v1beta2 API when
queues are on. Pure: the doctor reads the cluster into a `GPUCluster` first."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kftenancy import constants as c
from kftenancy.capacity.autoscaler import DEFAULT_EXPENDABLE_CUTOFF
from kftenancy.doctor.model import Finding, error, ok
from kftenancy.policy import TenancyPolicySpec

CHECK = "gpu-capacity"
_CUTOFF_FLAG = re.compile(r"^--expendable-pods-priority-cutoff=(-?\d+)$")
FIX_RENDER = "`kftenancy render --platform` renders the class; `kftenancy autoscaler` the autoscaler settings"


@dataclass(frozen=True)
class GPUCluster:
    """What the check reads from a cluster."""

    priority_classes: Sequence[Mapping[str, Any]] = ()
    # Container args of cluster-autoscaler Deployments found (None: none found).
    autoscaler_args: Sequence[str] | None = None
    cluster_autoscalers: Sequence[Mapping[str, Any]] = ()  # OpenShift ClusterAutoscaler
    served_kinds: frozenset[tuple[str, str]] = field(default_factory=frozenset)


def expendable_cutoff(cluster: GPUCluster) -> int:
    for obj in cluster.cluster_autoscalers:
        value = (obj.get("spec") or {}).get("podPriorityThreshold")
        if value is not None:
            return int(value)
    for arg in cluster.autoscaler_args or ():
        m = _CUTOFF_FLAG.match(arg)
        if m:
            return int(m.group(1))
    return DEFAULT_EXPENDABLE_CUTOFF


def _priority(cluster: GPUCluster) -> Finding:
    pc = next(
        (
            p
            for p in cluster.priority_classes
            if (p.get("metadata") or {}).get("name") == c.PRIORITY_CLASS_PLACEHOLDER
        ),
        None,
    )
    ref = f"PriorityClass/{c.PRIORITY_CLASS_PLACEHOLDER}"
    if pc is None:
        return error(
            CHECK,
            f"PriorityClass {c.PRIORITY_CLASS_PLACEHOLDER} is missing: no placeholder can run",
            "re-apply the platform objects (" + FIX_RENDER + ")",
            ref,
        )
    value = int(pc.get("value", 0))
    cutoff = expendable_cutoff(cluster)
    if value < cutoff:
        return error(
            CHECK,
            f"placeholder priority {value} is below the autoscaler's expendable-pods cutoff "
            f"{cutoff}: placeholders never trigger a scale-up, so no warm node is kept",
            f"lower --expendable-pods-priority-cutoff (OpenShift: ClusterAutoscaler "
            f"spec.podPriorityThreshold) to {value} or below, or re-apply the platform "
            "objects (the rendered value is -1)",
            ref,
        )
    if value >= 0:
        return error(
            CHECK,
            f"placeholder priority {value} is not below 0: ordinary pods cannot preempt placeholders",
            "re-apply the platform objects (the rendered value is -1)",
            ref,
        )
    return ok(CHECK, f"placeholder priority {value} is at or above the autoscaler cutoff {cutoff}")


def gpu_capacity_findings(policy: TenancyPolicySpec, cluster: GPUCluster) -> list[Finding]:
    gpu = policy.gpu
    if not (gpu.enabled and gpu.pools):
        return [ok(CHECK, "no GPU pools in the policy: no headroom or queues to check")]
    out = [_priority(cluster)]
    if cluster.autoscaler_args is None and not cluster.cluster_autoscalers:
        out.append(
            ok(
                CHECK,
                "no cluster-autoscaler Deployment (kube-system) or ClusterAutoscaler found: "
                "nothing to check there (without one, pools do not grow and headroom only "
                "holds existing nodes)",
            )
        )
    for ca in cluster.cluster_autoscalers:
        limits = ((ca.get("spec") or {}).get("resourceLimits") or {}).get("gpus") or []
        types = {str(g.get("type")) for g in limits}
        for pool in gpu.pools:
            if pool.accelerator not in types:
                out.append(
                    error(
                        CHECK,
                        f"ClusterAutoscaler resourceLimits.gpus has no type {pool.accelerator!r} "
                        f"(has {sorted(types)}): pool {pool.name} is not scaled for GPUs",
                        f"add {{type: {pool.accelerator}, min: 0, max: {pool.gpus}}}: the type "
                        "must equal the MachineSet's cluster-api/accelerator label",
                        f"ClusterAutoscaler/{(ca.get('metadata') or {}).get('name')}",
                    )
                )
    if gpu.queues.enabled:
        missing = [
            k
            for k in ("ClusterQueue", "LocalQueue", "ResourceFlavor")
            if (c.KUEUE_API, k) not in cluster.served_kinds
        ]
        if missing:
            out.append(
                error(
                    CHECK,
                    f"gpu.queues.enabled but {c.KUEUE_API} {', '.join(missing)} is not served",
                    "install Kueue v0.17 or newer (v1beta2 API), or set gpu.queues.enabled: false",
                )
            )
        else:
            out.append(ok(CHECK, f"Kueue serves {c.KUEUE_API}"))
    return out
