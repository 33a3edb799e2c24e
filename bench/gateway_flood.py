"""A flood of random bearer tokens at the gateway: TokenReviews spent, legitimate p99.

    .venv/bin/python bench/gateway_flood.py [--runs 3] [--tokens 10000] [--rate 500]
                                            [--legit-connections 4] [--legit-rate R]
                                            [--quiet-seconds S] [--order one-first|many-first]
                                            [--keep-results DIR] [--control-plane-nice N]
                                            [--no-limits] [--global-limit RATE/BURST]

Setup (stated with the numbers it prints):
- a real local control plane (etcd + kube-apiserver); `kftenancy run gateway --mode
  ext-authz` as its own process pinned to one CPU, default flood limits (or none with
  `--no-limits`), TokenReview and SubjectAccessReview on the real API server;
- the load comes from vegeta (the Go HTTP load generator, `hack/build-tools.sh vegeta`,
  built on first use), pinned to the other CPU with etcd and kube-apiserver (the bench
  pins itself before starting them), so the gateway's CPU runs only the gateway, as in a
  cluster whose API server runs on other nodes. Not Python clients: measured side by
  side, aiohttp clients for the legitimate load and the flood filled the clients' CPU,
  and the legitimate p99 then measured the two clients taking turns on it, not the
  gateway (vegeta needs about a third of the CPU for the same load);
- legitimate load: N keep-alive TLS connections (HTTP/1.1, as Envoy's ext_authz client
  holds them) sending checks with one of 20 service-account tokens (verified and
  authorized once before timing: warm caches) from their own addresses
  (`x-forwarded-for`, as Envoy sends it). Either a closed loop (the default: each
  connection sends its next check as soon as the last is answered, which keeps the
  gateway's core busy, the worst case for the tail) or, with `--legit-rate R`, an open
  loop of R checks per second over at most N connections (users arriving at a given
  rate, as at the budget's 3,000 checks/s; a check waiting for a free connection counts
  as slow);
- each run: a fresh gateway; a quiet phase (legitimate load only, as long as a flood, so
  both p99s rest on as many samples); then a flood of T random bearer tokens sent open
  loop at R per second from one address over 64 connections, with the legitimate load
  beside it; then the same flood from T/10 addresses (`--order many-first` swaps the two);
- TokenReviews are counted by the gateway (`kftenancy_gateway_api_calls_total`) and by the
  API server itself (`apiserver_request_total{resource="tokenreviews"}`); CPU per phase
  from /proc (gateway, control plane) and the reaped load generators' rusage (clients),
  as a share of one core, and the share of 100 ms windows in which each core was at least
  95% busy (a saturated core, not the gateway, sets the tail then).

Prints per run and the median of the runs: TokenReviews per flood against the documented
bound (`burst + rate x flood seconds`), legitimate p50/p99 quiet vs during each flood
(goal: p99 within 2x of quiet), the flood's statuses, CPU shares and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
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
from kftenancy.lab.tools import tool

NS = "bench-flood"
GATEWAY_USER = "kftenancy-gateway-bench"
USERS = 20
KFTENANCY = str(Path(sys.executable).parent / "kftenancy")
FLOOD_CONNECTIONS = 64  # the flood's sender: as many connections as a small botnet's proxy
FLOOD_ADDRESS = "203.0.113.66"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# Read once, before anything is pinned: a process pinned to one CPU (and every child it
# starts) sees only that CPU in its own affinity, so "the other CPU" must come from here.
CPUS = sorted(os.sched_getaffinity(0))


def pin(cpu: int) -> None:
    os.sched_setaffinity(0, {CPUS[cpu % len(CPUS)]})


def renice(pids: Iterable[int], nice: int) -> None:
    """Set every thread of these processes to `nice` (a Go process's threads each have one)."""
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)


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
        tokens.append(str(issued.status.token))
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


def write_targets(path: Path, url: str, requests: list[tuple[str, str]]) -> Path:
    """vegeta's JSON targets: one GET of `url` per (bearer token, client address)."""
    with path.open("w") as f:
        for token, client in requests:
            header = {"Authorization": [f"Bearer {token}"], "X-Forwarded-For": [client]}
            f.write(json.dumps({"method": "GET", "url": url, "header": header}) + "\n")
    return path


def attack(
    vegeta: Path,
    targets: Path,
    results: Path,
    ca_file: Path,
    *,
    seconds: float,
    connections: int,
    rate: float = 0.0,
) -> subprocess.Popen[bytes]:
    """Start `vegeta attack` on the load CPU: open loop at `rate`/s, or (rate 0) a closed
    loop of `connections` workers each sending its next request once answered."""
    argv = [
        str(vegeta), "attack", "-format", "json", "-targets", str(targets),
        "-output", str(results), "-root-certs", str(ca_file), "-http2=false",
        "-redirects", "-1", "-duration", f"{seconds:.3f}s",
        "-max-connections", str(connections), "-connections", str(connections),
    ]  # fmt: skip
    if rate:
        argv += ["-rate", f"{rate:g}/1s"]
    else:
        argv += ["-rate", "0", "-workers", str(connections), "-max-workers", str(connections)]
    env = {**os.environ, "GOMAXPROCS": "1"}
    return subprocess.Popen(argv, env=env, preexec_fn=lambda: pin(1))


def report(vegeta: Path, results: Path) -> dict[str, Any]:
    """n, p50, p99, max (seconds), statuses and errors of one attack's results."""
    done = subprocess.run(
        [str(vegeta), "report", "-type", "json", str(results)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(done.stdout)
    lat = r["latencies"]
    return {
        "n": r["requests"],
        "p50": lat["50th"] / 1e9,
        "p99": lat["99th"] / 1e9,
        "max": lat["max"] / 1e9,
        "statuses": {int(k): v for k, v in sorted(r["status_codes"].items())},
        "errors": r.get("errors") or [],
        "per_second": r["throughput"],
    }


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the finished load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CoreSampler:
    """Samples how busy the gateway's and the load generators' CPUs are, per 100 ms (a
    thread of the bench, which runs on the load CPU). A saturated load CPU delays the
    load generator's own clock: latencies measured then are the client's, not the
    gateway's."""

    WINDOW = 0.1

    def __init__(self) -> None:
        self.windows: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _ticks() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    ticks = [int(v) for v in values]
                    out[int(name[3:])] = (sum(ticks), ticks[3] + ticks[4])  # all, idle+iowait
        return out

    def _run(self) -> None:
        last = self._ticks()
        while not self._stop.wait(self.WINDOW):
            now = self._ticks()
            busy = []
            for cpu in (CPUS[0], CPUS[-1]):
                total = now[cpu][0] - last[cpu][0]
                busy.append(1 - (now[cpu][1] - last[cpu][1]) / total if total else 0.0)
            self.windows.append((busy[0], busy[1]))
            last = now

    def __enter__(self) -> CoreSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def saturated(self) -> dict[str, float]:
        """The share of windows in which each CPU was at least 95% busy."""
        n = len(self.windows) or 1
        return {
            "gateway CPU": sum(g >= 0.95 for g, _ in self.windows) / n,
            "load CPU": sum(c >= 0.95 for _, c in self.windows) / n,
        }


def gateway_policy(work: Path) -> Path:
    policy = work / "policy.yaml"
    rule = {"verb": "get", "resource": "pods", "namespace": NS}
    identity = {"methods": ["kubernetesToken"], "authorization": {"rule": rule}, "onboarding": []}
    policy.write_text(yaml.safe_dump({"spec": {"identity": identity}}))
    return policy


async def one_run(
    cluster: LocalCluster, vegeta: Path, tokens: list[str], args: argparse.Namespace, run: int
) -> dict[str, Any]:
    work = cluster.workdir / "bench-flood"
    work.mkdir(exist_ok=True)
    results = Path(args.keep_results) if args.keep_results else work
    tls = cluster.serving_cert("bench-flood-gateway")
    port = free_port()
    argv = [
        KFTENANCY, "run", "gateway", "--mode", "ext-authz", "--host", "127.0.0.1",
        "--port", str(port), "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file),
        "--policy", str(gateway_policy(work)),
        "--kubeconfig", str(cluster.kubeconfig_for(GATEWAY_USER)), "--log-level", "WARNING",
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
    check_url = base + "/check/x"
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    admin_ctx = cluster._ssl_context()
    legit = [(tok, f"198.51.100.{i}") for i, tok in enumerate(tokens)]
    legit_targets = write_targets(work / "legit.jsonl", check_url, legit)
    flood_seconds = args.tokens / args.rate
    addresses = max(1, args.tokens // 10)
    floods = {
        "flood-1": [FLOOD_ADDRESS] * args.tokens,
        "flood-many": [f"10.0.{a // 250}.{a % 250}" for a in range(addresses)] * 10,
    }
    order = ["flood-1", "flood-many"] if args.order == "one-first" else ["flood-many", "flood-1"]
    control_plane = [p.pid for p in cluster.processes.values()]
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(base + "/readyz", ssl=ctx) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            for tok, client in legit:  # warm: one TokenReview + SAR per user
                headers = {"authorization": f"Bearer {tok}", "x-forwarded-for": client}
                async with http.get(check_url, headers=headers, ssl=ctx) as r:
                    assert r.status == 200, (r.status, await r.text())

            async def reviews() -> tuple[float, float]:
                gw = await metric(
                    http, base + "/metrics", ctx, "kftenancy_gateway_api_calls_total", "tokenreview"
                )
                api = await metric(
                    http,
                    cluster.server + "/metrics",
                    admin_ctx,
                    "apiserver_request_total",
                    'resource="tokenreviews"',
                )
                return gw, api

            for name in ["quiet", *order]:
                seconds = args.quiet_seconds if name == "quiet" else flood_seconds
                if name != "quiet":
                    flood = [(secrets.token_urlsafe(32), a) for a in floods[name]]
                    flood_targets = write_targets(work / f"{name}.jsonl", check_url, flood)
                before = await reviews()
                # The API server's /metrics answer (megabytes) and the targets' writing
                # ran on the load CPU: let it settle before the phase's clock starts.
                await asyncio.sleep(2)

                def cpu_now() -> list[float]:
                    control = sum(process_cpu(pid) for pid in control_plane)
                    return [process_cpu(proc.pid), children_cpu(), control]

                cpu_before = cpu_now()
                with CoreSampler() as sampler:
                    wall = time.perf_counter()
                    attacks = [
                        attack(
                            vegeta,
                            legit_targets,
                            results / f"run{run}-{name}-legit.bin",
                            cluster.ca_file,
                            seconds=seconds,
                            connections=args.legit_connections,
                            rate=args.legit_rate,
                        )
                    ]
                    if name != "quiet":
                        attacks.append(
                            attack(
                                vegeta,
                                flood_targets,
                                results / f"run{run}-{name}-flood.bin",
                                cluster.ca_file,
                                seconds=seconds,
                                connections=FLOOD_CONNECTIONS,
                                rate=args.rate,
                            )
                        )
                    codes = [await asyncio.to_thread(a.wait) for a in attacks]
                    wall = time.perf_counter() - wall
                if any(codes):
                    raise SystemExit(f"vegeta attack failed in {name}: exit codes {codes}")
                cpu_after = cpu_now()
                share = [(a - b) / wall for a, b in zip(cpu_after, cpu_before, strict=True)]
                await asyncio.sleep(1)  # late answers are counted before the next phase
                after = await reviews()
                phase = report(vegeta, results / f"run{run}-{name}-legit.bin")
                if set(phase["statuses"]) != {200} or phase["errors"]:
                    raise SystemExit(
                        f"legitimate checks not all allowed in {name}: statuses "
                        f"{phase['statuses']}, errors {phase['errors'][:5]}"
                    )
                phase["saturated"] = sampler.saturated()
                phase["cpu"] = dict(
                    zip(("gateway", "clients", "control plane"), share, strict=True)
                )
                if name != "quiet":
                    sent = report(vegeta, results / f"run{run}-{name}-flood.bin")
                    phase["flood"] = sent
                    phase["seconds"] = seconds
                    phase["gateway_reviews"] = after[0] - before[0]
                    phase["api_reviews"] = after[1] - before[1]
                out[name] = phase
    finally:
        proc.terminate()
        proc.wait(15)
    out["load"] = load()
    return out


def cpu_text(phase: dict[str, Any]) -> str:
    used = ", ".join(f"{k} {v:.0%}" for k, v in phase["cpu"].items())
    full = ", ".join(f"{k} {v:.0%}" for k, v in phase["saturated"].items())
    return f"CPU {used}; saturated (>=95% busy) 100-ms windows: {full}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0, help="flood tokens per second")
    parser.add_argument("--legit-connections", type=int, default=4)
    parser.add_argument(
        "--quiet-seconds", type=float, help="default: as long as a flood (tokens / rate)"
    )
    parser.add_argument(
        "--legit-rate",
        type=float,
        default=0.0,
        help="legitimate checks per second, open loop over the connections (default: a "
        "closed loop, each connection sending its next check when the last is answered)",
    )
    parser.add_argument("--order", choices=["one-first", "many-first"], default="one-first")
    parser.add_argument(
        "--keep-results",
        metavar="DIR",
        help="keep vegeta's results (run<N>-<phase>-legit|flood.bin) in DIR, for a timeline: "
        "vegeta encode --to csv, vegeta plot",
    )
    parser.add_argument(
        "--control-plane-nice",
        type=int,
        default=0,
        metavar="N",
        help="run etcd and kube-apiserver at this nice value (to tell their share of the load "
        "core from the load generators')",
    )
    parser.add_argument("--no-limits", action="store_true", help="limits off (for comparison)")
    parser.add_argument(
        "--global-limit", help="RATE/BURST for all TokenReviews (default: the gateway's)"
    )
    args = parser.parse_args()
    if args.keep_results:
        Path(args.keep_results).mkdir(parents=True, exist_ok=True)
    if args.quiet_seconds is None:
        args.quiet_seconds = args.tokens / args.rate
    pin(1)
    vegeta = tool("vegeta")
    lim = FloodLimits()
    if args.global_limit:
        lim = FloodLimits(token_review_global=Rate.parse(args.global_limit))
    if args.no_limits:  # (the bounds printed are then those the defaults would give)
        print("no limits: the 'bound' figures below are what the default limits would allow")
    limits = (
        "OFF"
        if args.no_limits
        else f"per client {lim.token_review_per_client}, global {lim.token_review_global}, "
        f"in flight {lim.token_review_inflight}"
    )
    legit = f"{args.legit_rate:g} checks/s open loop over" if args.legit_rate else "closed loop on"
    print(
        f"limits: {limits}; flood {args.tokens} random tokens at {args.rate:g}/s over "
        f"{FLOOD_CONNECTIONS} connections; legitimate load: {legit} {args.legit_connections} "
        f"connections; load generator vegeta {vegeta.parent.name}; {load()}",
        flush=True,
    )
    bounds = {
        "flood-1": lim.token_review_per_client,
        "flood-many": lim.token_review_global,
    }
    with LocalCluster() as cluster:
        tokens = asyncio.run(prepare(cluster))
        if args.control_plane_nice:
            renice((p.pid for p in cluster.processes.values()), args.control_plane_nice)
        runs = []
        for i in range(args.runs):
            r = asyncio.run(one_run(cluster, vegeta, tokens, args, i + 1))
            runs.append(r)
            q = r["quiet"]
            lines = [
                f"run {i + 1} ({r['load']}):",
                f"  quiet: legit p50/p99/max {ms(q['p50'])}/{ms(q['p99'])}/{ms(q['max'])} "
                f"(n={q['n']}, {q['per_second']:.0f}/s); {cpu_text(q)}",
            ]
            for name in ("flood-1", "flood-many"):
                f = r[name]
                bound = bounds[name].burst + bounds[name].per_second * f["seconds"]
                who = "1 address" if name == "flood-1" else f"{max(1, args.tokens // 10)} addresses"
                lines.append(
                    f"  {name} ({who}): {f['gateway_reviews']:.0f} TokenReviews (API server "
                    f"counted {f['api_reviews']:.0f}; bound {bound:.0f} in {f['seconds']:.1f} s); "
                    f"flood statuses {f['flood']['statuses']}, flood p99 {ms(f['flood']['p99'])}; "
                    f"legit p50/p99/max {ms(f['p50'])}/{ms(f['p99'])}/{ms(f['max'])} "
                    f"(n={f['n']}; p99 {f['p99'] / q['p99']:.2f}x quiet); {cpu_text(f)}"
                )
            print("\n".join(lines), flush=True)

        def med(phase: str, key: str) -> float:
            return float(statistics.median(r[phase][key] for r in runs))

        qp99 = med("quiet", "p99")
        print(
            f"median of {len(runs)}: quiet p99 {ms(qp99)}; "
            f"flood 1 address: {med('flood-1', 'gateway_reviews'):.0f} TokenReviews, legit p99 "
            f"{ms(med('flood-1', 'p99'))} ({med('flood-1', 'p99') / qp99:.2f}x quiet); "
            f"flood many addresses: {med('flood-many', 'gateway_reviews'):.0f} TokenReviews, "
            f"legit p99 {ms(med('flood-many', 'p99'))} ({med('flood-many', 'p99') / qp99:.2f}x "
            f"quiet); goal <= 2x; {load()}"
        )


if __name__ == "__main__":
    main()
