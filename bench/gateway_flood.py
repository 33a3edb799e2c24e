"""A flood of random bearer tokens at the gateway: TokenReviews spent, legitimate p99.

    .venv/bin/python bench/gateway_flood.py [--runs 3] [--tokens 10000] [--rate 500]
                                            [--legit-connections 4] [--legit-rate R]
                                            [--no-limits] [--global-limit RATE/BURST]

Setup (stated with the numbers it prints):
- a real local control plane (etcd + kube-apiserver); `kftenancy run gateway --mode
  ext-authz` as its own process pinned to one CPU, default flood limits (or none with
  `--no-limits`), TokenReview and SubjectAccessReview on the real API server;
- legitimate load: N keep-alive TLS connections sending checks with one of 20
  service-account tokens (verified and authorized once before timing: warm caches) from
  their own addresses (`x-forwarded-for`, as Envoy sends it). Either a closed loop (the
  default: each connection sends its next check as soon as the last is answered, which
  keeps the gateway's core busy, the worst case for the tail) or, with `--legit-rate R`,
  an open loop of R checks per second (users arriving at a given rate, as at the budget's
  3,000 checks/s; latency counted from the moment a check is started, so one waiting for
  a free connection counts as slow);
- each run: a fresh gateway; 20 s quiet (legitimate load only, `--quiet-seconds`: as long
  as a flood, so both p99s rest on as many samples); then a flood of T random
  bearer tokens sent open-loop at R per second from one address; then the same flood from
  T/10 addresses (each flood from a sender process started, and past its own start-up,
  before the flood's clock starts). The legitimate load runs throughout. The flood is sent from a second
  process pinned, like the legitimate client, to the other CPU; etcd and kube-apiserver
  run there too (the bench pins itself before starting them), so the gateway's CPU runs
  only the gateway, as in a cluster whose API server runs on other nodes;
- TokenReviews are counted by the gateway (`kftenancy_gateway_api_calls_total`) and by the
  API server itself (`apiserver_request_total{resource="tokenreviews"}`).

Prints per run and the median of the runs: TokenReviews per flood against the documented
bound (`burst + rate x flood seconds`), legitimate p50/p99 round trip quiet vs during each
flood (goal: p99 within 2x of quiet), and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.authentication_v1 import TokenRequest, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from kftenancy.gateway.limits import FloodLimits, Rate
from kftenancy.lab.cluster import LocalCluster

NS = "bench-flood"
GATEWAY_USER = "kftenancy-gateway-bench"
USERS = 20
KFTENANCY = str(Path(sys.executable).parent / "kftenancy")


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# Read once, before anything is pinned: a process pinned to one CPU (and every child it
# starts) sees only that CPU in its own affinity, so "the other CPU" must come from here.
CPUS = sorted(os.sched_getaffinity(0))


def pin(cpu: int) -> None:
    os.sched_setaffinity(0, {CPUS[cpu % len(CPUS)]})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def prepare(cluster: LocalCluster) -> list[str]:
    admin = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    rbac = "rbac.authorization.k8s.io"
    sas = [f"user-{i}" for i in range(USERS)]
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench-gateway-auth-delegator"},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": GATEWAY_USER}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": NS},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "entry", "namespace": NS},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS} for sa in sas],
        },
    ]
    objs += [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": NS}}
        for sa in sas
    ]
    for obj in objs:
        await admin.apply(codecs.from_dict(obj), field_manager="bench", force=True)
    tokens = []
    for sa in sas:
        issued = await admin.create(
            ServiceAccountToken(
                metadata=ObjectMeta(name=sa, namespace=NS),
                spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
            ),
            sa,
            namespace=NS,
        )
        assert isinstance(issued, TokenRequest) and issued.status is not None
        tokens.append(issued.status.token)
    await admin.close()
    return tokens


async def metric(
    http: aiohttp.ClientSession, url: str, ssl_ctx: Any, family: str, match: str
) -> float:
    """The sum of the `family` counter's samples whose labels contain `match`."""
    async with http.get(url, ssl=ssl_ctx) as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(family + "{") and match in line
    )


def flood_main(
    url: str, ca_file: str, tokens: int, rate: float, many: bool, out: Any, start: Any
) -> None:
    """Send `tokens` random bearer tokens open-loop at `rate`/s (separate process), once
    `start` is set: the process's own start-up (a Python interpreter importing aiohttp on
    the legitimate client's CPU) is not part of the flood."""
    pin(1)
    out.send("ready")
    start.wait()

    async def go() -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=ca_file)
        statuses: dict[int, int] = {}
        sem = asyncio.Semaphore(256)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

            async def one(i: int) -> None:
                a = i % max(1, tokens // 10)
                client = f"10.0.{a // 250}.{a % 250}" if many else "203.0.113.66"
                headers = {
                    "authorization": f"Bearer {secrets.token_urlsafe(32)}",
                    "x-forwarded-for": client,
                }
                async with sem:
                    try:
                        async with http.get(url, headers=headers, ssl=ctx) as r:
                            await r.read()
                            statuses[r.status] = statuses.get(r.status, 0) + 1
                    except aiohttp.ClientError:
                        statuses[0] = statuses.get(0, 0) + 1

            started = time.perf_counter()
            tasks = []
            for i in range(tokens):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            return {"seconds": time.perf_counter() - started, "statuses": statuses}

    out.send(asyncio.run(go()))


async def one_run(
    cluster: LocalCluster, tokens: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    work = cluster.workdir / "bench-flood"
    work.mkdir(exist_ok=True)
    policy = work / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "spec": {
                    "identity": {
                        "methods": ["kubernetesToken"],
                        "authorization": {
                            "rule": {"verb": "get", "resource": "pods", "namespace": NS}
                        },
                        "onboarding": [],
                    }
                }
            }
        )
    )
    tls = cluster.serving_cert("bench-flood-gateway")
    port = free_port()
    argv = [
        KFTENANCY, "run", "gateway", "--mode", "ext-authz", "--host", "127.0.0.1",
        "--port", str(port), "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file),
        "--policy", str(policy), "--kubeconfig", str(cluster.kubeconfig_for(GATEWAY_USER)),
        "--log-level", "WARNING",
    ]  # fmt: skip
    if args.global_limit:
        argv += ["--token-review-global-limit", args.global_limit]
    if args.no_limits:
        argv += ["--token-review-limit", "100000/100000", "--token-review-global-limit",
                 "100000/100000", "--token-review-inflight", "100000"]  # fmt: skip
    log = (work / "gateway.log").open("ab")
    proc = subprocess.Popen(  # noqa: ASYNC220 - once per run, before timing
        argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: pin(0)
    )
    base = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    admin_ctx = cluster._ssl_context()
    out: dict[str, Any] = {}
    try:
        legit_pool = aiohttp.TCPConnector(limit=args.legit_connections + 2)  # + metric reads
        async with aiohttp.ClientSession(connector=legit_pool) as http:
            for _ in range(300):
                try:
                    async with http.get(base + "/readyz", ssl=ctx) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            for i, tok in enumerate(tokens):  # warm: one TokenReview + SAR per user
                headers = {"authorization": f"Bearer {tok}", "x-forwarded-for": f"198.51.100.{i}"}
                async with http.get(base + "/check/x", headers=headers, ssl=ctx) as r:
                    assert r.status == 200, (r.status, await r.text())
            phase: list[str] = ["quiet"]
            latencies: dict[str, list[float]] = {"quiet": [], "flood-1": [], "flood-many": []}
            bad: list[int] = []
            stop = asyncio.Event()

            async def one_check(i: int) -> None:
                tok = tokens[i % len(tokens)]
                headers = {
                    "authorization": f"Bearer {tok}",
                    "x-forwarded-for": f"198.51.100.{i % len(tokens)}",
                }
                t0 = time.perf_counter()
                async with http.get(base + "/check/x", headers=headers, ssl=ctx) as r:
                    await r.read()
                    if r.status != 200:
                        bad.append(r.status)
                if phase[0] in latencies:
                    latencies[phase[0]].append(time.perf_counter() - t0)

            async def closed_loop(n: int) -> None:
                i = n
                while not stop.is_set():
                    await one_check(i)
                    i += args.legit_connections

            async def open_loop(rate: float) -> None:
                """Checks started at `rate`/s whatever the answers take (users do not wait
                for each other); a check waiting for a free connection counts as slow."""
                running: set[asyncio.Task[None]] = set()
                started, i = time.perf_counter(), 0
                while not stop.is_set():
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    task = asyncio.create_task(one_check(i))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    i += 1
                await asyncio.gather(*running)

            if args.legit_rate:
                loops = [asyncio.create_task(open_loop(args.legit_rate))]
            else:
                loops = [asyncio.create_task(closed_loop(n)) for n in range(args.legit_connections)]
            await asyncio.sleep(args.quiet_seconds)
            for name, many in (("flood-1", False), ("flood-many", True)):
                gw_before = await metric(
                    http, base + "/metrics", ctx, "kftenancy_gateway_api_calls_total", "tokenreview"
                )
                api_before = await metric(
                    http,
                    cluster.server + "/metrics",
                    admin_ctx,
                    "apiserver_request_total",
                    'resource="tokenreviews"',
                )
                recv, send = mp.Pipe(duplex=False)
                spawn = mp.get_context("spawn")
                start = spawn.Event()
                p = spawn.Process(
                    target=flood_main,
                    args=(
                        base + "/check/x",
                        str(cluster.ca_file),
                        args.tokens,
                        args.rate,
                        many,
                        send,
                        start,
                    ),
                )
                p.start()
                assert await asyncio.to_thread(recv.recv) == "ready"
                await asyncio.sleep(1)
                phase[0] = name
                start.set()
                result = await asyncio.to_thread(recv.recv)
                await asyncio.to_thread(p.join)
                phase[0] = "between"
                await asyncio.sleep(1)
                gw_after = await metric(
                    http, base + "/metrics", ctx, "kftenancy_gateway_api_calls_total", "tokenreview"
                )
                api_after = await metric(
                    http,
                    cluster.server + "/metrics",
                    admin_ctx,
                    "apiserver_request_total",
                    'resource="tokenreviews"',
                )
                out[name] = {
                    **result,
                    "gateway_reviews": gw_after - gw_before,
                    "api_reviews": api_after - api_before,
                }
            stop.set()
            await asyncio.gather(*loops)
            if bad:
                raise SystemExit(f"legitimate requests refused during the run: {sorted(set(bad))}")
            for k, v in latencies.items():
                out.setdefault(k, {})
                out[k]["p50"] = quantile(v, 0.5)
                out[k]["p99"] = quantile(v, 0.99)
                out[k]["n"] = len(v)
    finally:
        proc.terminate()
        proc.wait(15)
    out["load"] = load()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0, help="flood tokens per second")
    parser.add_argument("--legit-connections", type=int, default=4)
    parser.add_argument("--quiet-seconds", type=float, default=20.0)
    parser.add_argument(
        "--legit-rate",
        type=float,
        default=0.0,
        help="legitimate checks per second, open loop over the connections (default: a "
        "closed loop, each connection sending its next check when the last is answered)",
    )
    parser.add_argument("--no-limits", action="store_true", help="limits off (for comparison)")
    parser.add_argument(
        "--global-limit", help="RATE/BURST for all TokenReviews (default: the gateway's)"
    )
    args = parser.parse_args()
    pin(1)
    lim = FloodLimits()
    if args.global_limit:
        lim = FloodLimits(token_review_global=Rate.parse(args.global_limit))
    if args.no_limits:  # (the bounds printed are then those the defaults would give)
        print("no limits: the 'bound' figures below are what the default limits would allow")
    print(
        f"limits: {'OFF' if args.no_limits else f'per client {lim.token_review_per_client}, global {lim.token_review_global}, in flight {lim.token_review_inflight}'}; "
        f"flood {args.tokens} random tokens at {args.rate:g}/s; legitimate load: {f'{args.legit_rate:g} checks/s open loop over ' if args.legit_rate else 'closed loop on '}{args.legit_connections} connections; {load()}"
    )
    with LocalCluster() as cluster:
        tokens = asyncio.run(prepare(cluster))
        runs = []
        for i in range(args.runs):
            r = asyncio.run(one_run(cluster, tokens, args))
            runs.append(r)
            q, f1, fm = r["quiet"], r["flood-1"], r["flood-many"]
            print(
                f"run {i + 1} ({r['load']}): quiet p50/p99 {ms(q['p50'])}/{ms(q['p99'])} (n={q['n']}); "
                f"flood from 1 address: {f1['gateway_reviews']:.0f} TokenReviews (API server counted {f1['api_reviews']:.0f}; "
                f"bound {lim.token_review_per_client.burst + lim.token_review_per_client.per_second * f1['seconds']:.0f} in {f1['seconds']:.1f} s), "
                f"statuses {f1['statuses']}, legit p50/p99 {ms(f1['p50'])}/{ms(f1['p99'])}; "
                f"flood from {args.tokens // 10 if args.tokens >= 10 else 1}+ addresses: {fm['gateway_reviews']:.0f} TokenReviews (API server {fm['api_reviews']:.0f}; "
                f"bound {lim.token_review_global.burst + lim.token_review_global.per_second * fm['seconds']:.0f} in {fm['seconds']:.1f} s), "
                f"statuses {fm['statuses']}, legit p50/p99 {ms(fm['p50'])}/{ms(fm['p99'])}",
                flush=True,
            )

        def med(path: tuple[str, str]) -> float:
            return statistics.median(r[path[0]][path[1]] for r in runs)

        qp99 = med(("quiet", "p99"))
        print(
            f"median of {len(runs)}: quiet p99 {ms(qp99)}; "
            f"flood 1 address: {med(('flood-1', 'gateway_reviews')):.0f} TokenReviews, legit p99 {ms(med(('flood-1', 'p99')))} "
            f"({med(('flood-1', 'p99')) / qp99:.2f}x quiet); "
            f"flood many addresses: {med(('flood-many', 'gateway_reviews')):.0f} TokenReviews, legit p99 {ms(med(('flood-many', 'p99')))} "
            f"({med(('flood-many', 'p99')) / qp99:.2f}x quiet); goal <= 2x; {load()}"
        )


if __name__ == "__main__":
    main()
