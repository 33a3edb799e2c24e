"""What a platform team applies so that the cluster autoscaler serves the GPU pools.

`node_groups(policy)` describes each pool as an autoscaler node group: size limits, the
node template's labels (the pool's node selector plus `cluster-api/accelerator:
<accelerator>`, which tells the autoscaler a fresh node *will* have GPUs: without it a
node that is Ready but whose driver has not yet published `nvidia.com/gpu` looks like a
node without GPUs, and the autoscaler adds more nodes for the same pending pods), the
GPU taint, and capacity (for scale-from-zero). `autoscaler_manifests(policy)` renders
it for the platform: OpenShift's `ClusterAutoscaler` + one `MachineAutoscaler` per pool
(`resourceLimits.gpus[].type` must equal the accelerator label's value), or, on plain
Kubernetes, the cluster-api MachineDeployment annotations and the autoscaler flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kftenancy import constants as c
from kftenancy.policy import Flavor, TenancyPolicySpec
from kftenancy.render.meta import metadata, platform_labels

DEFAULT_EXPENDABLE_CUTOFF = -10  # cluster-autoscaler --expendable-pods-priority-cutoff
DEFAULT_SCAN_INTERVAL_SECONDS = 10
CAPI_ANNOTATION = "capacity.cluster-autoscaler.kubernetes.io"
CAPI_GROUP_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group"


@dataclass(frozen=True)
class NodeGroup:
    name: str
    min_size: int
    max_size: int
    labels: dict[str, str]
    taints: list[dict[str, str]]
    capacity: dict[str, str]
    accelerator: str
    gpus_per_node: int


def node_groups(policy: TenancyPolicySpec) -> list[NodeGroup]:
    gpu = policy.gpu
    taint = gpu.taint
    return [
        NodeGroup(
            name=p.name,
            min_size=p.min_nodes,
            max_size=p.max_nodes,
            labels={**p.node_selector, c.LABEL_ACCELERATOR: p.accelerator},
            taints=[{"key": taint.key, "value": taint.value, "effect": taint.effect}],
            capacity={
                "cpu": p.node.cpu,
                "memory": p.node.memory,
                gpu.resource_name: str(p.node.gpus),
            },
            accelerator=p.accelerator,
            gpus_per_node=p.node.gpus,
        )
        for p in gpu.pools
    ]


def autoscaler_flags(policy: TenancyPolicySpec) -> list[str]:
    """cluster-autoscaler flags that matter for the pools (others: the platform's)."""
    flags = [
        f"--expendable-pods-priority-cutoff={DEFAULT_EXPENDABLE_CUTOFF}",
        f"--scan-interval={DEFAULT_SCAN_INTERVAL_SECONDS}s",
    ]
    for g in node_groups(policy):
        flags.append(f"--gpu-total={g.accelerator}:0:{g.max_size * g.gpus_per_node}")
    return flags


def _openshift(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    labels = platform_labels("capacity")
    groups = node_groups(policy)
    totals: dict[str, tuple[int, int]] = {}
    for g in groups:
        lo, hi = totals.get(g.accelerator, (0, 0))
        totals[g.accelerator] = (
            lo + g.min_size * g.gpus_per_node,
            hi + g.max_size * g.gpus_per_node,
        )
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "autoscaling.openshift.io/v1",
            "kind": "ClusterAutoscaler",
            "metadata": metadata("default", labels),
            "spec": {
                "podPriorityThreshold": DEFAULT_EXPENDABLE_CUTOFF,
                "resourceLimits": {
                    "gpus": [{"type": t, "min": lo, "max": hi} for t, (lo, hi) in totals.items()]
                },
                "scaleDown": {"enabled": True},
            },
        }
    ]
    for g in groups:
        out.append(
            {
                "apiVersion": "autoscaling.openshift.io/v1beta1",
                "kind": "MachineAutoscaler",
                "metadata": metadata(g.name, labels, "openshift-machine-api"),
                "spec": {
                    "minReplicas": g.min_size,
                    "maxReplicas": g.max_size,
                    "scaleTargetRef": {
                        "apiVersion": "machine.openshift.io/v1beta1",
                        "kind": "MachineSet",
                        "name": g.name,
                    },
                },
            }
        )
        # The MachineSet is the platform's: what its template must carry, as a patch.
        out.append(
            {
                "apiVersion": "machine.openshift.io/v1beta1",
                "kind": "MachineSet",
                "metadata": {"name": g.name, "namespace": "openshift-machine-api"},
                "spec": {
                    "template": {"spec": {"metadata": {"labels": g.labels}, "taints": g.taints}}
                },
            }
        )
    return out


def _cluster_api(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    out = []
    for g in node_groups(policy):
        annotations = {
            f"{CAPI_GROUP_ANNOTATION}-min-size": str(g.min_size),
            f"{CAPI_GROUP_ANNOTATION}-max-size": str(g.max_size),
            f"{CAPI_ANNOTATION}/cpu": g.capacity["cpu"],
            f"{CAPI_ANNOTATION}/memory": g.capacity["memory"],
            f"{CAPI_ANNOTATION}/gpu-type": policy.gpu.resource_name,
            f"{CAPI_ANNOTATION}/gpu-count": str(g.gpus_per_node),
            f"{CAPI_ANNOTATION}/labels": ",".join(f"{k}={v}" for k, v in g.labels.items()),
            f"{CAPI_ANNOTATION}/taints": ",".join(
                f"{t['key']}={t['value']}:{t['effect']}" for t in g.taints
            ),
        }
        out.append(
            {
                "apiVersion": "cluster.x-k8s.io/v1beta1",
                "kind": "MachineDeployment",
                "metadata": {"name": g.name, "annotations": annotations},
                "spec": {"template": {"metadata": {"labels": g.labels}}},
            }
        )
    return out


def autoscaler_manifests(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The autoscaler configuration for the policy's platform ([] without GPU pools)."""
    if not (policy.gpu.enabled and policy.gpu.pools):
        return []
    if policy.platform.flavor == Flavor.OPENSHIFT:
        return _openshift(policy)
    return _cluster_api(policy)
