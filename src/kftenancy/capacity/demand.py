"""Observed GPU demand per pool, from plain pod and node dicts (what a list returns)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kftenancy import constants as c
from kftenancy.policy import GPUPool
from kftenancy.reconcile import quantity_value


@dataclass(frozen=True)
class PoolDemand:
    """GPUs requested in a pool by real (non-placeholder) pods: bound and not finished
    (`in_use`), still waiting for a node (`pending`); and the placeholders there now."""

    in_use: int = 0
    pending: int = 0
    placeholders: int = 0


def pod_gpus(pod: Mapping[str, Any], resource: str) -> int:
    """Whole GPUs a pod requests (requests, else limits, summed over its containers)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        res = container.get("resources") or {}
        qty = (res.get("requests") or {}).get(resource) or (res.get("limits") or {}).get(resource)
        number = quantity_value(str(qty)) if qty is not None else None
        total += int(number) if number is not None else 0
    return total


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_pool(
    pod: Mapping[str, Any], pools: Iterable[GPUPool], node_labels: Mapping[str, Mapping[str, str]]
) -> str | None:
    """The pool a pod runs on (its node's labels) or asks for (its nodeSelector)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    labels = node_labels.get(str(node), {}) if node else dict(spec.get("nodeSelector") or {})
    return next((p.name for p in pools if _matches(p.node_selector, labels)), None)


def observe_demand(
    pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    pools: Iterable[GPUPool],
    resource: str,
) -> dict[str, PoolDemand]:
    """Per pool name: GPUs in use, GPUs pending, placeholder pods."""
    pools = list(pools)
    node_labels = {
        str(n["metadata"]["name"]): dict(n["metadata"].get("labels") or {}) for n in nodes
    }
    counts: dict[str, list[int]] = {p.name: [0, 0, 0] for p in pools}
    for pod in pods:
        meta = pod.get("metadata") or {}
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
            continue
        pool = pod_pool(pod, pools, node_labels)
        if pool is None:
            continue
        if (meta.get("labels") or {}).get(c.LABEL_GPU_POOL) == pool:
            counts[pool][2] += 1
            continue
        gpus = pod_gpus(pod, resource)
        bound = bool((pod.get("spec") or {}).get("nodeName"))
        counts[pool][0 if bound else 1] += gpus
    return {name: PoolDemand(*v) for name, v in counts.items()}
