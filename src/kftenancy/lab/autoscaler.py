"""A simulated cluster autoscaler for the lab (the real one cannot be built here: the Go
module proxy answers 403 for every version of `k8s.io/autoscaler/cluster-autoscaler`).

It reproduces the parts of the autoscaler's scale-up loop that decide time to GPU and
over-provisioning, and nothing else:

- every `scan_interval` (default 10 s) it looks at pods the scheduler marked
  unschedulable (`PodScheduled=False`, reason `Unschedulable`);
- pods with a priority below `expendable_cutoff` (default -10) never trigger a scale-up;
- node groups come from templates (labels, taints, GPUs per node, min/max size): a pod
  counts for a group only if the template's labels satisfy its nodeSelector and it
  tolerates the template's taints;
- upcoming nodes count against demand: requested but not yet registered nodes
  (provisioning) offer their template capacity, and so does a registered node that
  carries the group's `cluster-api/accelerator` label but has 0 allocatable GPUs yet
  (the autoscaler's GPU rule: "GPU not ready yet"). A node *without* that label and
  without allocatable GPUs counts as a ready node with no GPU: the pods still do not
  fit, and the next scan asks for more nodes — the over-provisioning the label fixes;
- a scale-up adds ceil(unmet GPUs / GPUs per node) nodes, within max size;
- node provisioning and the GPU driver are delays: after `provision_seconds` a kwok node
  registers (Ready, no `nvidia.com/gpu`), after `driver_seconds` more its GPUs appear in
  capacity/allocatable.

Not reproduced: scale-down, expanders (there is one group per pool), balancing,
back-off after failed scale-ups, pod-level bin packing beyond whole GPUs per node.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube import codecs
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType

from kftenancy import constants as c
from kftenancy.capacity.demand import pod_gpus
from kftenancy.lab.nodes import gpu_node_manifest

GPU = "nvidia.com/gpu"
# The seed's figures: ~5 min for a node, 3-4 min more for the GPU driver.
SEED_PROVISION_SECONDS = 300.0
SEED_DRIVER_SECONDS = 210.0


@dataclass(frozen=True)
class Template:
    name: str
    labels: dict[str, str]
    taints: list[dict[str, str]]
    gpus_per_node: int
    min_size: int = 0
    max_size: int = 10


@dataclass
class GroupState:
    provisioning: list[float] = field(default_factory=list)  # register-at times
    added: int = 0  # nodes requested so far
    registered: int = 0


def _tolerates(pod: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if t.get("effect") not in (None, "", taint["effect"]):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value", "") == taint["value"]:
            return True
    return False


def fits_template(pod: Mapping[str, Any], template: Template) -> bool:
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(template.labels.get(k) != v for k, v in selector.items()):
        return False
    return all(_tolerates(pod, t) for t in template.taints)


def unschedulable(pod: Mapping[str, Any]) -> bool:
    if (pod.get("spec") or {}).get("nodeName"):
        return False
    return any(
        cd.get("type") == "PodScheduled"
        and cd.get("status") == "False"
        and cd.get("reason") == "Unschedulable"
        for cd in (pod.get("status") or {}).get("conditions") or []
    )


def node_gpus(node: Mapping[str, Any]) -> int:
    alloc = ((node.get("status") or {}).get("allocatable") or {}).get(GPU)
    return int(alloc) if alloc is not None else 0


def scale_up(
    pods: Sequence[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    template: Template,
    provisioning: int,
    *,
    expendable_cutoff: int = -10,
    resource: str = GPU,
) -> int:
    """Nodes to add to `template`'s group in this scan (pure)."""
    demand = sum(
        pod_gpus(p, resource)
        for p in pods
        if unschedulable(p)
        and int((p.get("spec") or {}).get("priority") or 0) >= expendable_cutoff
        and fits_template(p, template)
    )
    group_nodes = [
        n
        for n in nodes
        if all(
            ((n.get("metadata") or {}).get("labels") or {}).get(k) == v
            for k, v in template.labels.items()
            if k != c.LABEL_ACCELERATOR
        )
    ]
    # Upcoming capacity: provisioning nodes, and registered GPU nodes whose driver is not
    # ready yet, but only when they carry the accelerator label.
    upcoming = provisioning + sum(
        1
        for n in group_nodes
        if node_gpus(n) == 0 and c.LABEL_ACCELERATOR in ((n["metadata"].get("labels")) or {})
    )
    # Free GPUs on registered nodes: the pending pods the scheduler will still place there
    # (the autoscaler's "filter out schedulable pods").
    names = {str(n["metadata"]["name"]) for n in group_nodes}
    used: dict[str, int] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        phase = (p.get("status") or {}).get("phase")
        if node in names and phase not in ("Succeeded", "Failed"):
            used[str(node)] = used.get(str(node), 0) + pod_gpus(p, resource)
    free = sum(max(0, node_gpus(n) - used.get(str(n["metadata"]["name"]), 0)) for n in group_nodes)
    unmet = demand - free - upcoming * template.gpus_per_node
    if unmet <= 0:
        return 0
    room = template.max_size - len(group_nodes) - provisioning
    return max(0, min(math.ceil(unmet / template.gpus_per_node), room))


class SimulatedAutoscaler:
    """The scale-up loop against a lab cluster (a thread; `stop()` ends it)."""

    def __init__(
        self,
        client: Any,
        templates: Sequence[Template],
        *,
        scan_interval: float = 10.0,
        provision_seconds: float = SEED_PROVISION_SECONDS,
        driver_seconds: float = SEED_DRIVER_SECONDS,
        accelerator_label: bool = True,
        expendable_cutoff: int = -10,
        prefix: str = "sim",
    ) -> None:
        self.client = client
        self.templates = list(templates)
        self.scan_interval = scan_interval
        self.provision_seconds = provision_seconds
        self.driver_seconds = driver_seconds
        self.accelerator_label = accelerator_label
        self.expendable_cutoff = expendable_cutoff
        self.prefix = prefix
        self.state = {t.name: GroupState() for t in self.templates}
        self._drivers: list[tuple[float, str, int]] = []  # (ready at, node, gpus)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sim-autoscaler", daemon=True)
        self.errors: list[str] = []

    def start(self) -> SimulatedAutoscaler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def nodes_added(self, group: str) -> int:
        return self.state[group].added

    def _labels(self, t: Template) -> dict[str, str]:
        if self.accelerator_label:
            return dict(t.labels)
        return {k: v for k, v in t.labels.items() if k != c.LABEL_ACCELERATOR}

    def _register(self, t: Template) -> None:
        st = self.state[t.name]
        name = f"{self.prefix}-{t.name}-{st.registered}"
        st.registered += 1
        manifest = gpu_node_manifest(name, gpus=0, taints=t.taints, labels=self._labels(t))
        self.client.create(codecs.from_dict(manifest))
        self._drivers.append((time.monotonic() + self.driver_seconds, name, t.gpus_per_node))

    def _driver_ready(self, name: str, gpus: int) -> None:
        node = self.client.get(Node, name)
        status = node.status
        cap = dict(status.capacity or {})
        cap[GPU] = str(gpus)
        alloc = dict(status.allocatable or {})
        alloc[GPU] = str(gpus)
        self.client.patch(
            Node.Status,
            name,
            {"status": {"capacity": cap, "allocatable": alloc}},
            patch_type=PatchType.MERGE,
        )

    def scan(self) -> None:
        # Registrations and driver completions due now first, so that the lists below see
        # every node that is no longer "provisioning".
        self._due()
        now = time.monotonic()
        pods = [p.to_dict() for p in self.client.list(Pod, namespace="*")]
        nodes = [n.to_dict() for n in self.client.list(Node)]
        for t in self.templates:
            st = self.state[t.name]
            n = scale_up(
                pods, nodes, t, len(st.provisioning), expendable_cutoff=self.expendable_cutoff
            )
            for _ in range(n):
                st.provisioning.append(now + self.provision_seconds)
                st.added += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.scan()
            except Exception as err:  # keep scanning, like the real loop; report later
                self.errors.append(repr(err))
            # Registrations and driver completions happen between scans too.
            deadline = started + self.scan_interval
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._tick_delays()
                self._stop.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _due(self) -> None:
        now = time.monotonic()
        for at, name, gpus in [d for d in self._drivers if d[0] <= now]:
            self._drivers.remove((at, name, gpus))
            self._driver_ready(name, gpus)
        for t in self.templates:
            st = self.state[t.name]
            for at in [a for a in st.provisioning if a <= now]:
                st.provisioning.remove(at)
                self._register(t)

    def _tick_delays(self) -> None:
        try:
            self._due()
        except Exception as err:
            self.errors.append(repr(err))
