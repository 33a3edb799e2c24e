"""`gpu_findings(policy, cluster)`: what is missing for GPU pools, fair queues and warm
headroom to work on a cluster, each with its fix. Pure: the caller reads the cluster
into a `GPUCluster` (plain dicts) first."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kftenancy import constants as c
from kftenancy.capacity.autoscaler import DEFAULT_EXPENDABLE_CUTOFF
from kftenancy.policy import TenancyPolicySpec

Severity = Literal["error", "warning", "ok"]
_CUTOFF_FLAG = re.compile(r"^--expendable-pods-priority-cutoff=(-?\d+)$")


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class GPUCluster:
    """What the check reads from a cluster."""

    nodes: Sequence[Mapping[str, Any]] = ()
    priority_classes: Sequence[Mapping[str, Any]] = ()
    # Container args of cluster-autoscaler Deployments found (None: none found).
    autoscaler_args: Sequence[str] | None = None
    # OpenShift ClusterAutoscaler objects.
    cluster_autoscalers: Sequence[Mapping[str, Any]] = ()
    served_kinds: frozenset[tuple[str, str]] = field(default_factory=frozenset)


def _labels(node: Mapping[str, Any]) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _cutoff(cluster: GPUCluster) -> int:
    for obj in cluster.cluster_autoscalers:
        value = (obj.get("spec") or {}).get("podPriorityThreshold")
        if value is not None:
            return int(value)
    for arg in cluster.autoscaler_args or ():
        m = _CUTOFF_FLAG.match(arg)
        if m:
            return int(m.group(1))
    return DEFAULT_EXPENDABLE_CUTOFF


def _priority(policy: TenancyPolicySpec, cluster: GPUCluster) -> list[Finding]:
    pc = next(
        (
            p
            for p in cluster.priority_classes
            if (p.get("metadata") or {}).get("name") == c.PRIORITY_CLASS_PLACEHOLDER
        ),
        None,
    )
    if pc is None:
        return [
            Finding(
                "error",
                "placeholder-priority",
                f"PriorityClass {c.PRIORITY_CLASS_PLACEHOLDER} is missing: no warm headroom",
                "apply the platform objects (`kftenancy render --platform | kubectl apply -f -`, "
                "or run the controller, which applies them)",
            )
        ]
    value = int(pc.get("value", 0))
    cutoff = _cutoff(cluster)
    if value < cutoff:
        return [
            Finding(
                "error",
                "placeholder-priority",
                f"placeholder priority {value} is below the autoscaler's expendable-pods "
                f"cutoff {cutoff}: placeholder pods never trigger a scale-up (no warm nodes)",
                f"set --expendable-pods-priority-cutoff (OpenShift: ClusterAutoscaler "
                f"spec.podPriorityThreshold) to {value} or lower",
            )
        ]
    if value >= 0:
        return [
            Finding(
                "error",
                "placeholder-priority",
                f"placeholder priority {value} is not below the default 0: real pods "
                "cannot preempt placeholders",
                "re-apply the platform objects (the rendered value is -1)",
            )
        ]
    return [
        Finding("ok", "placeholder-priority", f"placeholder priority {value} ≥ cutoff {cutoff}")
    ]


def _pools(policy: TenancyPolicySpec, cluster: GPUCluster) -> list[Finding]:
    out: list[Finding] = []
    taint = policy.gpu.taint
    for pool in policy.gpu.pools:
        nodes = [
            n
            for n in cluster.nodes
            if all(_labels(n).get(k) == v for k, v in pool.node_selector.items())
        ]
        selector = ",".join(f"{k}={v}" for k, v in pool.node_selector.items())
        if not nodes:
            out.append(
                Finding(
                    "ok" if pool.min_nodes == 0 else "warning",
                    f"pool {pool.name}",
                    f"no node carries {selector} (minNodes {pool.min_nodes})",
                    "" if pool.min_nodes == 0 else "check the node group's template labels",
                )
            )
            continue
        for node in nodes:
            name = (node.get("metadata") or {}).get("name")
            label = _labels(node).get(c.LABEL_ACCELERATOR)
            if label is None:
                out.append(
                    Finding(
                        "error",
                        f"pool {pool.name}",
                        f"node {name} has no {c.LABEL_ACCELERATOR} label: while its GPU "
                        "driver installs, the autoscaler sees a node without GPUs and adds "
                        "more nodes for the same pods",
                        f"add {c.LABEL_ACCELERATOR}={pool.accelerator} to the node group's "
                        "template labels (`kftenancy autoscaler` renders them)",
                    )
                )
            elif label != pool.accelerator:
                out.append(
                    Finding(
                        "error",
                        f"pool {pool.name}",
                        f"node {name}: {c.LABEL_ACCELERATOR}={label}, the policy says "
                        f"{pool.accelerator}",
                        "make the template label and gpu.pools[].accelerator agree "
                        "(and the ClusterAutoscaler's resourceLimits.gpus[].type)",
                    )
                )
            taints = (node.get("spec") or {}).get("taints") or []
            if not any(
                t.get("key") == taint.key
                and t.get("value") == taint.value
                and t.get("effect") == taint.effect
                for t in taints
            ):
                out.append(
                    Finding(
                        "error",
                        f"pool {pool.name}",
                        f"node {name} lacks the GPU taint {taint.key}={taint.value}:"
                        f"{taint.effect}: any pod can land on it",
                        "add the taint to the node group's template",
                    )
                )
    for ca in cluster.cluster_autoscalers:
        types = {
            str(g.get("type"))
            for g in ((ca.get("spec") or {}).get("resourceLimits") or {}).get("gpus") or []
        }
        for pool in policy.gpu.pools:
            if pool.accelerator not in types:
                out.append(
                    Finding(
                        "error",
                        f"pool {pool.name}",
                        f"ClusterAutoscaler resourceLimits.gpus has no type {pool.accelerator!r} "
                        f"(has {sorted(types)}): it will not scale pool {pool.name} for GPUs",
                        "add {type: " + pool.accelerator + ", min: 0, max: <GPUs>} "
                        "(`kftenancy autoscaler` renders it)",
                    )
                )
    return out


def gpu_findings(policy: TenancyPolicySpec, cluster: GPUCluster) -> list[Finding]:
    """Every GPU/autoscaler/Kueue finding, errors first within each check."""
    if not (policy.gpu.enabled and policy.gpu.pools):
        return [Finding("ok", "gpu", "no GPU pools in the policy: nothing to check")]
    out = _priority(policy, cluster) + _pools(policy, cluster)
    if cluster.autoscaler_args is None and not cluster.cluster_autoscalers:
        out.append(
            Finding(
                "warning",
                "autoscaler",
                "no cluster-autoscaler Deployment or ClusterAutoscaler found: pools will not grow",
                "install the cluster autoscaler with the node groups `kftenancy autoscaler` renders",
            )
        )
    if policy.gpu.queues.enabled:
        missing = [
            k
            for k in ("ClusterQueue", "LocalQueue", "ResourceFlavor")
            if (c.KUEUE_GROUP, k) not in cluster.served_kinds
        ]
        if missing:
            out.append(
                Finding(
                    "error",
                    "kueue",
                    f"gpu.queues.enabled but Kueue does not serve {', '.join(missing)} "
                    f"({c.KUEUE_API})",
                    "install Kueue v0.17 or newer (v1beta2 API), or set gpu.queues.enabled: false",
                )
            )
        else:
            out.append(Finding("ok", "kueue", f"Kueue serves {c.KUEUE_API}"))
    return out
