"""The simulated cluster autoscaler's scale-up decision, on plain data."""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.lab.autoscaler import Template, scale_up

TAINT = {"key": "workload", "value": "ai-ml", "effect": "NoSchedule"}
T4 = Template(
    name="t4",
    labels={"pool": "t4", c.LABEL_ACCELERATOR: "nvidia-t4"},
    taints=[TAINT],
    gpus_per_node=1,
    max_size=20,
)


def pending(
    gpus: int = 1, priority: int = 0, selector: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "spec": {
            "priority": priority,
            "nodeSelector": selector if selector is not None else {"pool": "t4"},
            "tolerations": [{**TAINT, "operator": "Equal"}],
            "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
        },
    }


def node(name: str, gpus: int, accelerator: bool) -> dict[str, Any]:
    labels = {"pool": "t4", **({c.LABEL_ACCELERATOR: "nvidia-t4"} if accelerator else {})}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
    }


def test_unschedulable_gpu_pods_ask_for_nodes_of_the_matching_group() -> None:
    assert scale_up([pending(), pending(2)], [], T4, 0) == 3
    assert scale_up([pending(selector={"pool": "a100"})], [], T4, 0) == 0


def test_pods_below_the_expendable_cutoff_never_scale_up() -> None:
    assert scale_up([pending(priority=-11)], [], T4, 0) == 0
    assert scale_up([pending(priority=-10), pending(priority=-1)], [], T4, 0) == 2


def test_provisioning_nodes_count_against_demand() -> None:
    assert scale_up([pending(), pending()], [], T4, 2) == 0


def test_gpu_nodes_whose_driver_is_not_ready_count_only_with_the_accelerator_label() -> None:
    waiting = [pending(), pending()]
    assert scale_up(waiting, [node("n1", 0, True), node("n2", 0, True)], T4, 0) == 0
    # Without the label they look like nodes without GPUs: the loop asks for more.
    assert scale_up(waiting, [node("n1", 0, False), node("n2", 0, False)], T4, 0) == 2


def test_free_gpus_on_registered_nodes_are_used_first_and_max_size_caps() -> None:
    assert scale_up([pending()], [node("n1", 1, True)], T4, 0) == 0
    small = Template("t4", T4.labels, T4.taints, 1, max_size=1)
    assert scale_up([pending(), pending()], [], small, 0) == 1
