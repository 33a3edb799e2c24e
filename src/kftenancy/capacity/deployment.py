"""The placeholder Deployment of a pool: `replicas` pods that each request one whole GPU
on the pool's nodes at the placeholder PriorityClass (negative, `preemptionPolicy:
Never`): any real pod preempts one at once, and its ReplicaSet recreates it, pending,
which is what makes a cluster autoscaler bring the next warm node."""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.policy import GPUPool, TenancyPolicySpec
from kftenancy.render.meta import metadata, platform_labels

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def deployment_name(pool: GPUPool) -> str:
    return f"kftenancy-gpu-headroom-{pool.name}"


def placeholder_deployment(
    policy: TenancyPolicySpec, pool: GPUPool, replicas: int
) -> dict[str, Any]:
    gpu = policy.gpu
    selector = {c.LABEL_GPU_POOL: pool.name, c.LABEL_COMPONENT: "gpu-placeholder"}
    one_gpu = {gpu.resource_name: "1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            deployment_name(pool), platform_labels("capacity"), policy.platform.namespace
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**selector, c.LABEL_MANAGED_BY: c.MANAGED_BY}},
                "spec": {
                    "priorityClassName": c.PRIORITY_CLASS_PLACEHOLDER,
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "nodeSelector": dict(pool.node_selector),
                    "tolerations": [gpu.taint.toleration().manifest()],
                    "containers": [
                        {
                            "name": "placeholder",
                            "image": PAUSE_IMAGE,
                            "resources": {"requests": one_gpu, "limits": one_gpu},
                        }
                    ],
                },
            },
        },
    }


def placeholder_deployments(
    policy: TenancyPolicySpec, replicas: dict[str, int]
) -> list[dict[str, Any]]:
    """One Deployment per pool (0 replicas where no headroom is wanted, or GPUs are off)."""
    on = policy.gpu.enabled
    return [
        placeholder_deployment(policy, p, replicas.get(p.name, 0) if on else 0)
        for p in policy.gpu.pools
    ]
