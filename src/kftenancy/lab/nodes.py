"""Fake GPU nodes for kwok: a Node manifest kwok keeps Ready and whose scheduled pods
it marks Running, with `nvidia.com/gpu` capacity and the policy's GPU taint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kftenancy.policy import Taint

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"


def default_gpu_taints() -> list[dict[str, str]]:
    """The GPU taint of the seed policy (`workload=ai-ml:NoSchedule`)."""
    taint = Taint()
    return [{"key": taint.key, "value": taint.value, "effect": taint.effect}]


def gpu_node_manifest(
    name: str,
    *,
    gpus: int = 1,
    taints: Sequence[Mapping[str, str]] | None = None,
    labels: Mapping[str, str] | None = None,
    resource_name: str = "nvidia.com/gpu",
    cpu: str = "32",
    memory: str = "256Gi",
) -> dict[str, Any]:
    """A Node that kwok manages. `taints=None` means the seed policy's GPU taint; pass
    `[]` for an untainted node."""
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    capacity = {"cpu": cpu, "memory": memory, "pods": "110", resource_name: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **(labels or {}),
            },
        },
        "spec": {"taints": [dict(t) for t in (default_gpu_taints() if taints is None else taints)]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kwok",
                "kernelVersion": "fake",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "kwok",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
        },
    }
