"""Admission webhook latency: server-side at a fixed request rate, and the end-to-end
cost of a pod create with the webhook registered versus without it.

    .venv/bin/python bench/webhook.py [--rate 200] [--seconds 10] [--pods 50] [--rounds 3]
                                      [--tenants 1000]

Starts a local control plane (etcd + kube-apiserver), runs `kftenancy run webhook` as
its own process over TLS on loopback, and:

1. end to end: creates `--pods` pods one after another in a tenant namespace (the
   pod's ServiceAccount has a role ARN, so the toleration and the web identity are
   injected) and in a non-tenant namespace, without any webhook and with the rendered
   configurations registered (url + caBundle), alternating for `--rounds` rounds;
   prints p50/p99 of each and the difference;
2. server side: sends AdmissionReviews (a third each: tenant pod mutation with web
   identity, non-tenant pod validation, namespace mutation) open-loop at `--rate`
   requests/s for `--seconds` over keep-alive HTTPS, and prints the server-side p50/p99
   read from the webhook's own /metrics histogram (time from body received to answer
   ready) next to the client-observed round trip. Budget: server-side p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.core_v1 import Pod
from prometheus_client.parser import text_string_to_metric_families

from kftenancy import constants as c
from kftenancy.lab.binaries import ensure_binaries
from kftenancy.lab.cluster import ADMIN_USER, LocalCluster
from kftenancy.policy import load_policy
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations

POLICY = {"dataLake": {"enabled": True, "audience": "sts.bench", "region": "eu-west-1"}}
TENANT, OTHER = "bench-tenant", "bench-other"
BUDGET_SECONDS = 0.005


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style quantile from cumulative (upper bound, count) buckets."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            span = count - below
            return lower + (upper - lower) * ((rank - below) / span if span else 1.0)
        lower, below = upper, count
    return lower


async def scrape(
    http: aiohttp.ClientSession, url: str, context: ssl.SSLContext
) -> dict[float, float]:
    """Cumulative bucket counts of the latency histogram, summed over endpoints."""
    async with http.get(url + "/metrics", ssl=context) as resp:
        text = await resp.text()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "kftenancy_webhook_cached_objects":
            sizes = ", ".join(f"{s.labels['kind']} {s.value:.0f}" for s in family.samples)
            print(f"webhook caches: {sizes}")
        if family.name != "kftenancy_webhook_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                out[bound] = out.get(bound, 0.0) + sample.value
    return out


def review(kind: str, resource: str, obj: dict[str, Any], namespace: str = "") -> bytes:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "namespace": namespace,
            "name": obj["metadata"].get("name", ""),
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
        },
    }
    return json.dumps(body).encode()


def pod(ns: str, name: str, account: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceAccountName": account,
            "containers": [
                {"name": "main", "image": "python:3.12", "resources": {"requests": {"cpu": "100m"}}}
            ],
            **spec,
        },
    }


async def create_pairs(client: AsyncClient, n: int, tag: str) -> tuple[list[float], list[float]]:
    """n tenant pods (role account) and n non-tenant pods, interleaved one by one."""
    tenant: list[float] = []
    other: list[float] = []
    for i in range(n):
        tenant += await create_pods(client, TENANT, "default-editor", 1, f"{tag}-{i}")
        other += await create_pods(client, OTHER, "default", 1, f"{tag}-{i}")
    return tenant, other


async def create_pods(client: AsyncClient, ns: str, account: str, n: int, tag: str) -> list[float]:
    took = []
    for i in range(n):
        obj = codecs.from_dict(pod(ns, f"{tag}-{i}", account))
        began = time.perf_counter()
        await client.create(obj)
        took.append(time.perf_counter() - began)
    return took


async def add_tenant(admin: AsyncClient, name: str) -> None:
    ns = {"name": name, "labels": {c.LABEL_TENANT: name}}
    await admin.create(codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": ns}))
    for account in ("default", "default-editor", "default-viewer"):
        meta: dict[str, Any] = {"name": account, "namespace": name}
        if account == "default-editor":
            meta["annotations"] = {c.ANN_ROLE_ARN: f"arn:aws:iam::0:role/{name}"}
        await admin.create(
            codecs.from_dict({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
        )


async def until_called(admin: AsyncClient, registered: bool) -> None:
    """Wait until the API server does (or no longer does) call the webhook."""
    while True:
        probe = await admin.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}"},
                }
            ),
            dry_run=True,
        )
        if (c.ANN_TOLERATIONS_WHITELIST in (probe.metadata.annotations or {})) == registered:
            return
        await asyncio.sleep(0.2)


async def apiserver_webhook_latency(cluster: LocalCluster) -> None:
    """What the API server itself measured per webhook call
    (apiserver_admission_webhook_admission_duration_seconds), free of client noise."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    context.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
    async with (
        aiohttp.ClientSession() as http,
        http.get(cluster.server + "/metrics", ssl=context) as resp,
    ):
        text = await resp.text()
    per_hook: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_admission_webhook_admission_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                hook = per_hook.setdefault(sample.labels["name"], {})
                bound = float(sample.labels["le"])
                hook[bound] = hook.get(bound, 0.0) + sample.value
    print("\nper webhook call, as kube-apiserver measured it (all calls so far):")
    for name, buckets in sorted(per_hook.items()):
        ordered = sorted(buckets.items())
        print(
            f"  {name:38} {ordered[-1][1]:6.0f} calls, p50 {ms(histogram_quantile(ordered, 0.5))},"
            f" p99 {ms(histogram_quantile(ordered, 0.99))}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def load(url: str, context: ssl.SSLContext, rate: float, seconds: float) -> list[float]:
    bodies = [
        ("/mutate", review("Pod", "pods", pod(TENANT, "nb", "default-editor"), TENANT)),
        (
            "/validate",
            review(
                "Pod",
                "pods",
                pod(OTHER, "job", tolerations=[{"key": "team", "operator": "Exists"}]),
                OTHER,
            ),
        ),
        ("/mutate", review("Namespace", "namespaces", {"metadata": {"name": "team-x"}})),
    ]
    rtts: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=64, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(path: str, body: bytes) -> None:
            nonlocal errors
            began = time.perf_counter()
            async with http.post(
                url + path, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            rtts.append(time.perf_counter() - began)

        total = int(rate * seconds)
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            path, body = bodies[i % len(bodies)]
            tasks.append(asyncio.create_task(one(path, body)))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - start)
    print(
        f"load: {total} requests in {seconds:.0f} s (achieved {achieved:.0f} req/s), {errors} errors"
    )
    return rtts


def core_cost() -> None:
    """The pure decision alone (parse, rule, patch, encode), in this process, no load."""
    from kftenancy.admission import AdmissionContext, Phase
    from kftenancy.admission import review as decide

    policy = load_policy(POLICY)
    ctx = AdmissionContext(
        controller_users=frozenset({ADMIN_USER}),
        namespace_labels={TENANT: {c.LABEL_TENANT: TENANT}, OTHER: {}},
        service_accounts={(TENANT, "default-editor"): {c.ANN_ROLE_ARN: "arn:aws:iam::0:role/x"}},
    )
    cases = [
        (
            "tenant pod mutation",
            Phase.MUTATE,
            review("Pod", "pods", pod(TENANT, "nb", "default-editor"), TENANT),
        ),
        (
            "non-tenant pod validation",
            Phase.VALIDATE,
            review("Pod", "pods", pod(OTHER, "j"), OTHER),
        ),
        (
            "namespace mutation",
            Phase.MUTATE,
            review("Namespace", "namespaces", {"metadata": {"name": "t"}}),
        ),
    ]
    print("\ncore decision (json.loads + rule + patch + json.dumps, in-process):")
    for label, phase, raw in cases:
        took = []
        for _ in range(2000):
            began = time.perf_counter()
            json.dumps(decide(policy, json.loads(raw), phase, ctx).response)
            took.append(time.perf_counter() - began)
        print(f"  {label:28} p50 {ms(quantile(took, 0.5))}, p99 {ms(quantile(took, 0.99))}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sequential(url: str, context: ssl.SSLContext, n: int) -> list[float]:
    body = review("Pod", "pods", pod(TENANT, "nb", "default-editor"), TENANT)
    took = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, ssl=context)) as http:
        for _ in range(n):
            began = time.perf_counter()
            async with http.post(url + "/mutate", data=body) as resp:
                await resp.read()
            took.append(time.perf_counter() - began)
    return took


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


async def run(cluster: LocalCluster, args: argparse.Namespace) -> None:
    admin = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    # Set up tenant objects as the controller would (the admin plays kftenancy here).
    await admin.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": TENANT, "labels": {c.LABEL_TENANT: TENANT}},
            }
        )
    )
    await admin.create(
        codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OTHER}})
    )
    role = {c.ANN_ROLE_ARN: "arn:aws:iam::000000000000:role/bench", c.ANN_AUDIENCE: "sts.bench"}
    for ns in (TENANT, OTHER):
        for name in ("default", "default-editor"):
            meta = {"name": name, "namespace": ns, "annotations": role if name != "default" else {}}
            await admin.create(
                codecs.from_dict({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
            )

    # Other tenants, so the webhook's caches have a realistic size.
    for start in range(0, args.tenants, 25):
        await asyncio.gather(
            *(add_tenant(admin, f"t{i:05d}") for i in range(start, min(args.tenants, start + 25)))
        )
    await create_pods(admin, OTHER, "default", 20, "warm")  # warm the API server up first

    cert = cluster.serving_cert("kftenancy-webhook-bench")
    policy_file = cluster.workdir / "bench-policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KFTENANCY_WEBHOOK_TLS_CERT_FILE": str(cert.cert_file),
        "KFTENANCY_WEBHOOK_TLS_KEY_FILE": str(cert.key_file),
        "KFTENANCY_WEBHOOK_HOST": "127.0.0.1",
        "KFTENANCY_WEBHOOK_PORT": str(port),
        "KFTENANCY_KUBECONFIG": str(cluster.admin_kubeconfig),
        "KFTENANCY_POLICY_FILE": str(policy_file),
        "KFTENANCY_CONTROLLER_USERS": ADMIN_USER,
        "KFTENANCY_LOG_LEVEL": "WARNING",
    }
    log_path = cluster.workdir / "webhook-bench.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "kftenancy"),
            "run",
            "webhook",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    context = ssl.create_default_context(cadata=cert.ca_pem.decode())
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with http.get(url + "/readyz", ssl=context) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise SystemExit(f"webhook did not become ready; see {log_path}")
                await asyncio.sleep(0.2)
            endpoint = WebhookEndpoint(url=url, ca_bundle=cert.ca_pem)
            configs = webhook_configurations(load_policy(POLICY), endpoint, [ADMIN_USER])
            baseline_tenant: list[float] = []
            baseline_other: list[float] = []
            hooked_tenant: list[float] = []
            hooked_other: list[float] = []
            # Alternate rounds without and with the webhook, so drift in the machine's
            # load hits both sides alike.
            for r in range(args.rounds):
                tenant, other = await create_pairs(admin, args.pods, f"b{r}")
                baseline_tenant += tenant
                baseline_other += other
                for obj in configs:
                    await admin.create(codecs.from_dict(obj))
                await until_called(admin, True)
                await create_pairs(admin, 5, f"w{r}")  # the API server's first calls
                tenant, other = await create_pairs(admin, args.pods, f"h{r}")
                hooked_tenant += tenant
                hooked_other += other
                if r < args.rounds - 1:
                    await admin.delete(MutatingWebhookConfiguration, "kftenancy")
                    await admin.delete(ValidatingWebhookConfiguration, "kftenancy")
                    await until_called(admin, False)
            sample = await admin.get(Pod, "h0-0-0", namespace=TENANT)
            assert any(v.name == c.WEB_IDENTITY_VOLUME for v in sample.spec.volumes or []), (
                "not injected"
            )

            print(
                f"\nend to end, {args.rounds} x {args.pods} sequential pod creates per case, "
                "interleaved, alternating rounds (kube-apiserver + etcd, loopback):"
            )
            print(f"{'':32} {'p50':>10} {'p99':>10} {'mean':>10}")
            rows = [
                ("tenant pod, no webhook", baseline_tenant),
                ("tenant pod, webhook", hooked_tenant),
                ("non-tenant pod, no webhook", baseline_other),
                ("non-tenant pod, webhook", hooked_other),
            ]
            for label, values in rows:
                print(
                    f"{label:32} {ms(quantile(values, 0.5)):>10} {ms(quantile(values, 0.99)):>10} {ms(statistics.mean(values)):>10}"
                )
            for label, base, hook in (
                ("tenant", baseline_tenant, hooked_tenant),
                ("non-tenant", baseline_other, hooked_other),
            ):
                print(
                    f"overhead, {label}: p50 +{ms(quantile(hook, 0.5) - quantile(base, 0.5))}, "
                    f"mean +{ms(statistics.mean(hook) - statistics.mean(base))}"
                )

            await load(url, context, args.rate, 1.0)  # warm-up: connections, caches
            one_by_one = await sequential(url, context, 200)
            print(
                f"one request at a time (what one API server call sees): "
                f"p50 {ms(quantile(one_by_one, 0.5))}, p99 {ms(quantile(one_by_one, 0.99))}"
            )
            await apiserver_webhook_latency(cluster)
            before = await scrape(http, url, context)
            cpu_before = cpu_seconds(proc.pid)
            print()
            rtts = await load(url, context, args.rate, args.seconds)
            cpu = cpu_seconds(proc.pid) - cpu_before
            after = await scrape(http, url, context)
            buckets = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
            p50, p99 = histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.99)
            print(
                f"server-side (webhook /metrics histogram): p50 {ms(p50)}, p99 {ms(p99)} "
                f"over {buckets[-1][1]:.0f} requests"
            )
            print(
                f"client round trip (HTTPS keep-alive):     p50 {ms(quantile(rtts, 0.5))}, "
                f"p99 {ms(quantile(rtts, 0.99))}"
            )
            print(
                f"webhook process CPU: {cpu:.2f} s = {ms(cpu / max(1.0, buckets[-1][1]))} per request"
            )
            print(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            verdict = "within" if p99 <= BUDGET_SECONDS else "OVER"
            print(
                f"budget: server-side p99 <= {ms(BUDGET_SECONDS)} at {args.rate:.0f} req/s: {verdict}"
            )
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the load")
    parser.add_argument("--pods", type=int, default=50, help="pod creates per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument(
        "--tenants", type=int, default=1000, help="extra tenants (namespace + 3 accounts)"
    )
    args = parser.parse_args()
    core_cost()
    ensure_binaries()
    cluster = LocalCluster()
    cluster.start()
    try:
        asyncio.run(run(cluster, args))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
