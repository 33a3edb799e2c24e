"""Time to GPU with and without warm headroom, nodes added for a burst with and without the
`cluster-api/accelerator` label, and Kueue admission latency for 100 queued jobs.

    .venv/bin/python bench/gpu_capacity.py [--runs 3] [--scale 30]

On the lab cluster (real kube-apiserver, kube-scheduler, kube-controller-manager, kwok
GPU nodes, real Kueue v0.17.0) with the in-process kftenancy controller (tenant objects,
placeholder Deployments) and the simulated cluster autoscaler of
`kftenancy.lab.autoscaler` (the real one cannot be built from the Go module proxy). The
seed's delays (node 300 s, GPU driver 210 s, scan interval 10 s) are divided by `--scale`
so that a run takes seconds; the scheduler, preemption and Kueue are not scaled.
Reports medians of `--runs`, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import CascadeType

from kftenancy import constants as c
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.kube import Kube
from kftenancy.lab.autoscaler import (
    SEED_DRIVER_SECONDS,
    SEED_PROVISION_SECONDS,
    SimulatedAutoscaler,
    Template,
)
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.policy import load_policy

POLICY_API = f"{c.API_GROUP}/{c.API_VERSION}"
GPU = "nvidia.com/gpu"
TENANT = "bench"
TAINT = {"key": "workload", "value": "ai-ml", "effect": "NoSchedule"}
POOL_LABELS = {"workload": "ai-ml", "pool": "t4"}


def spec(minimum_gpus: int) -> dict[str, Any]:
    return {
        "platform": {"flavor": "kubernetes", "kubeflowInstalled": False},
        "mesh": {"flavor": "none"},
        "identity": {"onboarding": ["gateway"]},
        "resources": {"quota": {"cpu": "64", "memory": "256Gi", f"requests.{GPU}": "64"}},
        "gpu": {
            "pools": [
                {
                    "name": "t4",
                    "nodeSelector": POOL_LABELS,
                    "accelerator": "nvidia-t4",
                    "maxNodes": 40,
                    "node": {"gpus": 1},
                    "headroom": {"percent": 0, "minimumGpus": minimum_gpus},
                }
            ],
            "queues": {"enabled": True, "tenants": {TENANT: {"t4": 8}}},
        },
    }


def template() -> Template:
    policy = load_policy(spec(0))
    pool = policy.gpu.pools[0]
    return Template(
        name=pool.name,
        labels={**pool.node_selector, c.LABEL_ACCELERATOR: pool.accelerator},
        taints=[TAINT],
        gpus_per_node=pool.node.gpus,
        max_size=pool.max_nodes,
    )


def gpu_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": TENANT},
        "spec": {
            "nodeSelector": {"pool": "t4"},
            "containers": [
                {
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {GPU: "1"}, "limits": {GPU: "1"}},
                }
            ],
        },
    }


async def _is(value: bool) -> bool:
    return value


async def until(check: Callable[[], Awaitable[Any]], within: float = 600.0) -> None:
    """Poll `check` every 50 ms until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {check}")
        await asyncio.sleep(0.05)


class Bench:
    def __init__(self, lab: LocalCluster, kube: Kube, ctl: Controller, scale: float) -> None:
        self.lab, self.kube, self.ctl = lab, kube, ctl
        self.client = lab.client()
        self.scale = scale
        self.current: SimulatedAutoscaler | None = None
        self.sims = 0

    def sim(self, label: bool = True) -> SimulatedAutoscaler:
        self.sims += 1  # fresh node names: a pod bound to an old node must not come back
        self.current = SimulatedAutoscaler(
            self.client,
            [template()],
            scan_interval=10.0 / self.scale,
            provision_seconds=SEED_PROVISION_SECONDS / self.scale,
            driver_seconds=SEED_DRIVER_SECONDS / self.scale,
            accelerator_label=label,
            prefix=f"sim{self.sims}",
        ).start()
        return self.current

    async def set_headroom(self, gpus: int) -> None:
        obj = {"apiVersion": POLICY_API, "kind": c.POLICY_KIND, "metadata": {"name": "bench"}}
        await self.kube.apply({**obj, "spec": spec(gpus)})
        await until(lambda: _is(self.ctl.policy.gpu.pools[0].headroom.minimum_gpus == gpus))

    async def running(self, names: list[str]) -> bool:
        pods = {
            p["metadata"]["name"]: p for p in await self.kube.list("v1", "Pod", namespace=TENANT)
        }
        return all((pods.get(n, {}).get("status") or {}).get("phase") == "Running" for n in names)

    async def placeholder_pods(self) -> list[dict[str, Any]]:
        return await self.kube.list(
            "v1", "Pod", namespace="kftenancy", labels={c.LABEL_GPU_POOL: "t4"}
        )

    async def placeholders_running(self) -> int:
        return sum(
            1
            for p in await self.placeholder_pods()
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        )

    async def wait(self, check: Any) -> None:
        async def checked() -> Any:
            if self.current is not None and self.current.errors:
                raise SystemExit(f"simulated autoscaler errors: {self.current.errors[:3]}")
            return await check()

        await until(checked)

    async def cleanup(self, sim: SimulatedAutoscaler) -> None:
        """Pods gone (placeholders too) while their nodes still exist, then the nodes."""
        sim.stop()
        if sim.errors:
            raise SystemExit(f"simulated autoscaler errors: {sim.errors[:3]}")
        await self.set_headroom(0)
        for p in self.client.list(Pod, namespace=TENANT):
            self.client.delete(Pod, p.metadata.name, namespace=TENANT, grace_period=0)
        await until(lambda: _is(not list(self.client.list(Pod, namespace=TENANT))))

        async def no_placeholders() -> bool:
            return not await self.placeholder_pods()

        await until(no_placeholders)
        for n in self.client.list(Node):
            if n.metadata.name.startswith(sim.prefix + "-"):
                self.client.delete(Node, n.metadata.name)

    async def time_to_gpu(self, headroom: int, run: int) -> float:
        await self.set_headroom(headroom)
        sim = self.sim()
        try:
            if headroom:
                await self.wait(lambda: self._at_least(headroom))
            name = f"ttg-{headroom}-{run}"
            began = time.monotonic()
            await self.kube.create(gpu_pod(name))
            await self.wait(lambda: self.running([name]))
            return time.monotonic() - began
        finally:
            await self.cleanup(sim)

    async def _at_least(self, n: int) -> bool:
        return await self.placeholders_running() >= n

    async def burst(self, label: bool, run: int) -> tuple[int, float]:
        await self.set_headroom(0)
        sim = self.sim(label)
        try:
            names = [f"burst-{int(label)}-{run}-{i}" for i in range(10)]
            began = time.monotonic()
            await asyncio.gather(*(self.kube.create(gpu_pod(n)) for n in names))
            await self.wait(lambda: self.running(names))
            took = time.monotonic() - began
            # Let requests already in flight register before counting.
            await asyncio.sleep(sim.provision_seconds + sim.driver_seconds)
            return sim.nodes_added("t4"), took
        finally:
            await self.cleanup(sim)

    async def admission(self, run: int, jobs: int = 100) -> list[float]:
        names = [f"adm-{run}-{i}" for i in range(jobs)]
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "c",
                                "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            }
                        ],
                    }
                }
            },
        }
        created: dict[str, float] = {}

        async def create(n: str) -> None:
            await self.kube.create({**body, "metadata": {"name": n, "namespace": TENANT}})
            created[n] = time.monotonic()

        admitted: dict[str, float] = {}
        await asyncio.gather(*(create(n) for n in names))
        while len(admitted) < jobs:
            now = time.monotonic()
            for w in await self.kube.list(c.KUEUE_API, "Workload", namespace=TENANT):
                owner = next(iter(w["metadata"].get("ownerReferences") or []), {}).get("name")
                conds = (w.get("status") or {}).get("conditions") or []
                if (
                    owner in created
                    and owner not in admitted
                    and any(x["type"] == "Admitted" and x["status"] == "True" for x in conds)
                ):
                    admitted[owner] = now
            await asyncio.sleep(0.05)
        for n in names:
            self.client.delete(Job, n, namespace=TENANT, cascade=CascadeType.BACKGROUND)

        async def drained() -> bool:  # the next run starts from an empty queue
            return not await self.kube.list(c.KUEUE_API, "Workload", namespace=TENANT)

        await until(drained)
        return sorted(admitted[n] - created[n] for n in names)


@contextlib.asynccontextmanager
async def controller(lab: LocalCluster, kube: Kube) -> AsyncIterator[Controller]:
    await kube.apply(
        {
            "apiVersion": POLICY_API,
            "kind": c.POLICY_KIND,
            "metadata": {"name": "bench"},
            "spec": spec(0),
        }
    )
    ctl = Controller(
        ControllerSettings(
            kubeconfig=str(lab.admin_kubeconfig),
            policy_name="bench",
            metrics_port=0,
            leader_election=False,
            apply_platform=False,
            capacity_seconds=0.5,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:
        while not ctl.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        try:
            await ctl.apply_platform()
        finally:
            for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                await kube.delete("admissionregistration.k8s.io/v1", kind, "kftenancy")
        await kube.create(
            {
                "apiVersion": PROFILE_API_VERSION,
                "kind": c.PROFILE_KIND,
                "metadata": {"name": TENANT},
                "spec": {"owner": {"kind": "User", "name": "bench@example.com"}},
            }
        )
        await until(lambda: kube.get(c.KUEUE_API, "LocalQueue", "default", TENANT))
        await until(lambda: kube.get("v1", "ServiceAccount", "default", TENANT))
        yield ctl
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await ctl.kube.close()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


async def report_time_to_gpu(b: Bench, runs: int) -> None:
    cold = [await b.time_to_gpu(0, r) for r in range(runs)]
    warm = [await b.time_to_gpu(1, r) for r in range(runs)]
    c_med, w_med = statistics.median(cold), statistics.median(warm)
    print(
        f"time to GPU, no headroom:   median {c_med:.2f} s  {[round(x, 2) for x in cold]}  ({load()})"
    )
    print(
        f"time to GPU, warm headroom: median {w_med:.2f} s  {[round(x, 2) for x in warm]}  ({load()})"
    )
    print(f"ratio no-headroom / headroom: {c_med / w_med:.1f}x")


async def report_burst(b: Bench, runs: int) -> None:
    for label in (True, False):
        results = [await b.burst(label, r) for r in range(runs)]
        added = statistics.median(n for n, _ in results)
        took = statistics.median(t for _, t in results)
        print(
            f"burst of 10 GPU pods, accelerator label {'on ' if label else 'off'}: "
            f"nodes added median {added:g} {[n for n, _ in results]}, all Running after "
            f"{took:.1f} s ({load()})"
        )


async def report_admission(b: Bench, runs: int) -> None:
    lat = [await b.admission(r) for r in range(runs)]
    p50 = statistics.median(statistics.median(x) for x in lat)
    p99 = statistics.median(x[98] for x in lat)
    last = statistics.median(x[-1] for x in lat)
    print(
        f"Kueue admission, 100 queued jobs: p50 {p50:.2f} s, p99 {p99:.2f} s, last {last:.2f} s "
        f"(medians of {runs} runs, lasts {[round(x[-1], 1) for x in lat]}; {load()})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=30.0, help="divide the seed's delays")
    parser.add_argument(
        "--only", choices=["time-to-gpu", "burst", "admission"], help="run one part only"
    )
    args = parser.parse_args()
    lab = LocalCluster(controller_manager=True, scheduler=True, kwok=True, kueue=True)
    lab.start()
    try:
        lab.install_crds(bundled_crds())
        lab.add_gpu_node("cpu-1", gpus=0, taints=[], labels={"pool": "cpu"})
        kube = Kube.from_kubeconfig(str(lab.admin_kubeconfig))
        async with controller(lab, kube) as ctl:
            b = Bench(lab, kube, ctl, args.scale)
            print(
                f"delays: node {SEED_PROVISION_SECONDS / args.scale:.1f} s, GPU driver "
                f"{SEED_DRIVER_SECONDS / args.scale:.1f} s, scan {10 / args.scale:.2f} s "
                f"(seed figures / {args.scale:g})"
            )
            if args.only in (None, "time-to-gpu"):
                await report_time_to_gpu(b, args.runs)
            if args.only in (None, "burst"):
                await report_burst(b, args.runs)
            if args.only in (None, "admission"):
                await report_admission(b, args.runs)
        await kube.close()
    finally:
        lab.stop()


if __name__ == "__main__":
    asyncio.run(main())
