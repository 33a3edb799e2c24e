"""The capacity loop: keep each pool's placeholder Deployment at the computed headroom,
and publish each tenant's GPU status (with fair queues on).

Every `interval` seconds: list pods and nodes, compute `placeholders(pool, demand, now)`
per pool (`kftenancy.capacity`), apply the placeholder Deployments where their replicas
differ (nothing is written when nothing changed), and write each tenant's
`kftenancy-gpu-status` ConfigMap where it changed. Level based: a missed tick is caught
up by the next. The Deployment's ReplicaSet recreates a placeholder a real pod
preempted; this loop only decides how many there are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from kftenancy import constants as c
from kftenancy.capacity import observe_demand, placeholder_deployments, placeholders
from kftenancy.capacity.status import status_configmap, tenant_gpu
from kftenancy.kube import ApiError, Kube
from kftenancy.policy import TenancyPolicySpec
from kftenancy.reconcile import Obj, plan
from kftenancy.render.queues import enabled as queues_enabled

log = logging.getLogger("kftenancy.capacity")

PROFILE_API = f"{c.KUBEFLOW_GROUP}/{c.PROFILE_VERSIONS[0]}"


class CapacityLoop:
    def __init__(
        self,
        kube: Kube,
        policy: Callable[[], TenancyPolicySpec],
        *,
        now: Callable[[], datetime],
        interval: float = 5.0,
    ) -> None:
        self.kube = kube
        self._policy = policy
        self._now = now
        self.interval = interval
        self.last: dict[str, int] = {}  # pool → placeholders wanted at the last tick

    async def _apply_changed(self, desired: list[Obj]) -> int:
        observed = [
            o
            for o in await asyncio.gather(
                *(
                    self.kube.get(
                        d["apiVersion"],
                        d["kind"],
                        d["metadata"]["name"],
                        d["metadata"].get("namespace"),
                    )
                    for d in desired
                )
            )
            if o is not None
        ]
        p = plan(desired, observed)
        written = 0
        for obj in [*p.create, *(ch.desired for ch in p.update)]:
            try:
                await self.kube.apply(obj)
                written += 1
            except ApiError as err:  # e.g. a tenant namespace not there yet: next tick
                log.warning("capacity loop: %s %s: %s", obj["kind"], obj["metadata"]["name"], err)
        return written

    async def tick(self) -> dict[str, int]:
        """One round; returns the placeholders wanted per pool."""
        policy = self._policy()
        gpu = policy.gpu
        if not gpu.pools:
            return {}
        pods, nodes = await asyncio.gather(
            self.kube.list("v1", "Pod"), self.kube.list("v1", "Node")
        )
        demand = observe_demand(pods, nodes, gpu.pools, gpu.resource_name)
        zone = ZoneInfo(gpu.time_zone)
        now = self._now()
        wanted = {p.name: placeholders(p, demand[p.name], now, zone) for p in gpu.pools}
        if wanted != self.last:
            log.info(
                "GPU headroom",
                extra={"placeholders": wanted, "demand": {k: vars(v) for k, v in demand.items()}},
            )
        self.last = wanted
        await self._apply_changed(placeholder_deployments(policy, wanted))
        if queues_enabled(policy):
            await self.publish_status(policy)
        return wanted

    async def publish_status(self, policy: TenancyPolicySpec) -> None:
        profiles = await self.kube.list(PROFILE_API, c.PROFILE_KIND)
        queues = {
            q["metadata"]["name"]: q
            for q in await self.kube.list(
                c.KUEUE_API, "ClusterQueue", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY}
            )
        }
        workloads: dict[str, list[dict[str, Any]]] = {}
        for w in await self.kube.list(c.KUEUE_API, "Workload"):
            workloads.setdefault(str(w["metadata"].get("namespace")), []).append(w)
        desired = []
        for obj in profiles:
            name = obj["metadata"]["name"]
            if name not in queues or obj["metadata"].get("deletionTimestamp"):
                continue
            view = tenant_gpu(name, queues[name], workloads.get(name, []))
            desired.append(status_configmap(policy, view))
        await self._apply_changed(desired)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except (ApiError, OSError) as err:
                log.warning("capacity loop: %s", err)
            except Exception:
                log.exception("capacity loop: unexpected error")
            await asyncio.sleep(self.interval)
