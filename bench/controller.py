"""Tenant controller: time from Profile creation to Ready, API writes per tenant, memory.

    .venv/bin/python bench/controller.py [--single 20] [--burst 1000]
                                         [--rss-at 1000,2000,5000] [--workers 16]

Starts a local control plane (etcd + kube-apiserver, the bundled CRDs), runs
`kftenancy run controller` as its own process (TLS /metrics on loopback, no leader
election), and from this process:

1. single: creates `--single` Profiles one after another, each only after the previous
   one is Ready; time = create request sent → Ready=True seen on a watch (p50/p99);
2. burst: creates `--burst` Profiles at once; same time per Profile (p50/p99) and the
   time until all are Ready;
3. where the burst's time goes: API requests per tenant as the API server counted them
   (`apiserver_request_total` by verb and resource, the bench's own Profile creates
   subtracted), the controller's writes per tenant from its `kftenancy_api_writes_total`
   (first reconcile: one apply per object + finalizer + status + Event), and the CPU
   seconds of the controller, kube-apiserver, etcd and this process over the burst
   (2 cores: their sum against 2 x the wall time says whether the burst is CPU-bound);
4. the writes a full resync of every tenant makes (budget: 0);
5. fills up to each `--rss-at` count and reads the controller's RSS (VmRSS) there, with
   the growth per 1,000 tenants since the previous reading.

Budgets (architecture.md): p99 <= 0.5 s alone; 1,000 tenants in <= 60 s on 2 cores;
<= 150 MB RSS at 5,000 tenants. The machine is shared; rerun when numbers look odd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_global_resource
from prometheus_client.parser import text_string_to_metric_families

from kftenancy import constants as c
from kftenancy.kube import Kube
from kftenancy.lab.binaries import ensure_binaries
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.policy import load_policy
from kftenancy.render import profile_for_user

POLICY_NAME = "bench"
POLICY: dict[str, Any] = {"platform": {"kubeflowInstalled": False}}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ReadyWatch:
    """Watches Profiles; records when each is first seen with Ready=True."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.ready_at: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.profile = create_global_resource(
            c.KUBEFLOW_GROUP, "v1", c.PROFILE_KIND, c.PROFILE_PLURAL
        )

    async def run(self) -> None:
        async for _, obj in self.client.watch(self.profile):
            name = obj["metadata"]["name"]
            conds = (obj.get("status") or {}).get("conditions") or []
            if name not in self.ready_at and any(
                x.get("type") == "Ready" and x.get("status") == "True" for x in conds
            ):
                self.ready_at[name] = time.perf_counter()
                self.changed.set()

    async def wait(self, names: list[str], within: float) -> None:
        deadline = time.perf_counter() + within
        while not all(n in self.ready_at for n in names):
            left = deadline - time.perf_counter()
            if left <= 0:
                missing = [n for n in names if n not in self.ready_at]
                raise SystemExit(
                    f"{len(missing)} Profiles not Ready after {within:.0f}s, e.g. {missing[:3]}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))


async def writes(http: aiohttp.ClientSession, url: str, ctx: ssl.SSLContext) -> dict[str, float]:
    async with http.get(url, ssl=ctx) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("kftenancy_api_writes", "kftenancy_reconcile"):
            for s in family.samples:
                if s.name.endswith("_total"):
                    key = f"{family.name}:{s.labels.get('verb') or s.labels.get('result')}"
                    out[key] = out.get(key, 0.0) + s.value
    return out


def total(snapshot: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in snapshot.items() if k.startswith(prefix))


async def create_profiles(kube: Kube, users: list[str]) -> dict[str, float]:
    policy = load_policy(POLICY)
    sent: dict[str, float] = {}

    async def one(user: str) -> None:
        manifest = profile_for_user(policy, user)
        sent[manifest["metadata"]["name"]] = time.perf_counter()
        await kube.create(manifest)

    await asyncio.gather(*(one(u) for u in users))
    return sent


async def apiserver_requests(
    http: aiohttp.ClientSession, cluster: LocalCluster
) -> dict[str, float]:
    """The API server's own request counts, by "VERB resource" (watches included)."""
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    ctx.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
    async with http.get(cluster.server + "/metrics", ssl=ctx) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "apiserver_request":
            for s in family.samples:
                if s.name.endswith("_total"):
                    resource = s.labels.get("resource", "") + (
                        f"/{s.labels['subresource']}" if s.labels.get("subresource") else ""
                    )
                    key = f"{s.labels.get('verb')} {resource}"
                    out[key] = out.get(key, 0.0) + s.value
    return out


def cpu_of(cluster: LocalCluster, controller_pid: int) -> dict[str, float]:
    out = {"controller": cpu_seconds(controller_pid), "bench": sum(os.times()[:2])}
    for name in ("kube-apiserver", "etcd"):
        out[name] = cpu_seconds(cluster.processes[name].pid)
    return out


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(cluster: LocalCluster, args: argparse.Namespace) -> None:
    cluster.install_crds(bundled_crds())
    checkpoints = sorted({int(x) for x in args.rss_at.split(",") if x})
    kube = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    await kube.apply(
        {
            "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
            "kind": c.POLICY_KIND,
            "metadata": {"name": POLICY_NAME},
            "spec": POLICY,
        }
    )
    port = free_port()
    env = {
        **os.environ,
        "KFTENANCY_KUBECONFIG": str(cluster.admin_kubeconfig),
        "KFTENANCY_METRICS_PORT": str(port),
        "KFTENANCY_LEADER_ELECTION": "false",
        "KFTENANCY_WORKERS": str(args.workers),
        "KFTENANCY_LOG_LEVEL": "WARNING",
        "KFTENANCY_RESYNC_SECONDS": str(args.resync),
        # The rendered webhook configuration points at an in-cluster Service the lab
        # does not run; registering it would fail every namespace create.
        "KFTENANCY_APPLY_PLATFORM": "false",
    }
    log_path = cluster.workdir / "controller-bench.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
            [
                str(Path(sys.executable).parent / "kftenancy"),
                "run",
                "controller",
                "--policy-name",
                POLICY_NAME,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    watch_client = AsyncClient(
        config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False
    )
    watcher = ReadyWatch(watch_client)
    watch_task = asyncio.create_task(watcher.run())
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 90
            while True:
                try:
                    async with http.get(url + "/readyz", ssl=ctx) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"controller did not become ready; see {log_path}")
                await asyncio.sleep(0.2)
            print(
                f"controller ready (pid {proc.pid}, RSS {rss_mb(proc.pid):.0f} MB idle; {load()})"
            )
            run_id = uuid.uuid4().hex[:5]

            # warm-up (not timed): the watch is established and first-use caches are filled
            sent = await create_profiles(kube, [f"warmup-{run_id}@example.com"])
            await watcher.wait(list(sent), 60)

            # 1. one tenant at a time
            took = []
            for i in range(args.single):
                sent = await create_profiles(kube, [f"single-{run_id}-{i}@example.com"])
                ((name, t0),) = sent.items()
                await watcher.wait([name], 60)
                took.append(watcher.ready_at[name] - t0)
            if took:
                print(
                    f"single tenant, Profile created -> Ready: p50 {ms(quantile(took, 0.5))}, p99 {ms(quantile(took, 0.99))} (n={len(took)}; budget p99 <= 500 ms)"
                )

            # 2. a burst
            before = await writes(http, url + "/metrics", ctx)
            requests_before = await apiserver_requests(http, cluster)
            cpu_before = cpu_of(cluster, proc.pid)
            began = time.perf_counter()
            sent = await create_profiles(
                kube, [f"burst-{run_id}-{i}@example.com" for i in range(args.burst)]
            )
            created = time.perf_counter() - began
            await watcher.wait(list(sent), 900)
            all_ready = max(watcher.ready_at[n] for n in sent) - began
            took = [watcher.ready_at[n] - t0 for n, t0 in sent.items()]
            cpu = {k: v - cpu_before[k] for k, v in cpu_of(cluster, proc.pid).items()}
            print(
                f"burst of {args.burst}: creates took {created:.1f} s; Profile -> Ready p50 {quantile(took, 0.5):.2f} s, p99 {quantile(took, 0.99):.2f} s; all Ready after {all_ready:.1f} s ({args.burst / all_ready:.1f} tenants/s; budget 1,000 in <= 60 s; {load()})"
            )
            print(
                f"  CPU over the burst ({all_ready:.1f} s wall, {2 * all_ready:.1f} core-seconds on 2 cores): "
                + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
                + f"; controller {cpu['controller'] / args.burst * 1000:.0f} ms per tenant"
            )
            await asyncio.sleep(3)  # let the follow-up reconciles (our own watch events) finish
            after = await writes(http, url + "/metrics", ctx)
            requests_after = await apiserver_requests(http, cluster)
            w = total(after, "kftenancy_api_writes") - total(before, "kftenancy_api_writes")
            by_verb = {
                k.split(":")[1]: after.get(k, 0) - before.get(k, 0)
                for k in after
                if k.startswith("kftenancy_api_writes")
            }
            objects = len(
                await kube.list_owned([("v1", "ServiceAccount")], tenant=next(iter(sent)))
            )
            print(
                f"  controller API writes per tenant: {w / args.burst:.1f} ({', '.join(f'{k} {v / args.burst:.1f}' for k, v in sorted(by_verb.items()) if v)}); {objects} ServiceAccounts per tenant as a sanity check"
            )
            delta = {k: v - requests_before.get(k, 0.0) for k, v in requests_after.items()}
            delta["POST profiles"] = delta.get("POST profiles", 0.0) - args.burst  # the bench's own
            delta = {k: v for k, v in delta.items() if v >= args.burst * 0.05}
            print(
                f"  API requests per tenant (API server's count, controller only): {sum(delta.values()) / args.burst:.1f}: "
                + ", ".join(
                    f"{k} {v / args.burst:.1f}"
                    for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
                )
            )
            print(
                f"  client concurrency: {args.workers} reconcile workers, at most 16 requests in flight per process (Kube max_inflight)"
            )

            # 3. fill up, reading memory at each checkpoint; one full resync at the first
            have = 1 + args.single + args.burst
            previous: tuple[int, float] | None = None
            for i, target in enumerate(checkpoints):
                if target > have:
                    began = time.perf_counter()
                    sent = await create_profiles(
                        kube,
                        [f"fill-{run_id}-{have + j}@example.com" for j in range(target - have)],
                    )
                    await watcher.wait(list(sent), 3600)
                    print(
                        f"filled to {target} tenants ({len(sent)} more in {time.perf_counter() - began:.1f} s, {len(sent) / (time.perf_counter() - began):.1f} tenants/s)"
                    )
                    have = target
                await asyncio.sleep(5)
                if i == 0 and args.resync_check:
                    quiet = await writes(http, url + "/metrics", ctx)
                    began = time.perf_counter()
                    # wait for a full periodic resync of every tenant (the controller's timer)
                    while True:
                        await asyncio.sleep(2)
                        now = await writes(http, url + "/metrics", ctx)
                        if (
                            total(now, "kftenancy_reconcile") - total(quiet, "kftenancy_reconcile")
                            >= have
                        ):
                            break
                        if time.perf_counter() - began > args.resync * 3 + 300:
                            raise SystemExit("no full resync seen")
                    resync_writes = total(now, "kftenancy_api_writes") - total(
                        quiet, "kftenancy_api_writes"
                    )
                    print(
                        f"full resync of {have} unchanged tenants: {resync_writes:.0f} API writes (budget 0)"
                    )
                rss = rss_mb(proc.pid)
                growth = (
                    ""
                    if previous is None
                    else f", +{(rss - previous[1]) / (have - previous[0]) * 1000:.1f} MB per 1,000 tenants since {previous[0]}"
                )
                print(
                    f"controller RSS at {have} tenants: {rss:.0f} MB{growth} (budget <= 150 MB at 5,000; {load()})"
                )
                previous = (have, rss)
    finally:
        watch_task.cancel()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await watch_client.close()
        await kube.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=20, help="tenants created one at a time")
    parser.add_argument("--burst", type=int, default=1000, help="tenants created at once")
    parser.add_argument(
        "--rss-at",
        default="1000,2000,5000",
        help="tenant counts at which to read the controller's RSS",
    )
    parser.add_argument("--workers", type=int, default=16, help="controller reconcile workers")
    parser.add_argument("--resync", type=float, default=60.0, help="controller resync period (s)")
    parser.add_argument(
        "--no-resync-check",
        dest="resync_check",
        action="store_false",
        help="skip waiting for a full resync",
    )
    args = parser.parse_args()
    ensure_binaries()
    cluster = LocalCluster()
    cluster.start()
    try:
        asyncio.run(run(cluster, args))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
