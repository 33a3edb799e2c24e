"""Chaos: the admission webhook is SIGKILLed while tenant and non-tenant pods (and new
tenants and namespaces) are created, then comes back.

Real parts: its own local control plane (PodTolerationRestriction on, the default),
`kftenancy run controller` and `kftenancy run webhook` as processes, the rendered webhook
configurations registered with the API server. A seeded schedule (printed; replay with
`KFTENANCY_CHAOS_SEED`) mixes the operations and picks when the webhook dies and for how
long. What must hold (docs/admission.md, "Registration and failure modes"):

- no pod in a non-tenant namespace ever tolerates the GPU taint: every such create is
  refused, by our rule while the webhook is up and by failurePolicy Fail while it is down;
- availability: every pod that cannot break isolation is admitted, up or down;
- the tenant defaults come back: the controller repairs a tenant namespace's
  `defaultTolerations` and the tenants' web-identity annotations that were stripped
  during the outage (no webhook to put them back), tenants onboarded during the outage
  are Ready with their defaults, and once the webhook is back a new pod in every tenant
  namespace gets the GPU toleration.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from lightkube import ApiError, AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_global_resource
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount
from lightkube.types import PatchType

from kftenancy import constants as c
from kftenancy.admission.tolerations import tolerates
from kftenancy.lab.cluster import LocalCluster
from kftenancy.policy import load_policy
from kftenancy.render.profile import profile_for_user
from kftenancy.render.tolerations import default_tolerations_annotation
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations

CONTROLLER = "system:serviceaccount:kftenancy:kftenancy-controller"
POLICY_NAME = "chaos"
SPEC: dict[str, Any] = {
    "platform": {"flavor": "kubernetes"},
    "dataLake": {
        "enabled": True,
        "audience": "sts.amazonaws.com",
        "region": "eu-west-1",
        "roleArnTemplate": "arn:aws:iam::000000000000:role/tenant-{namespace}",
    },
}
POLICY = load_policy(SPEC)
GPU = {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}
ESCAPES = [GPU, {"operator": "Exists"}, {"key": "workload", "operator": "Exists"}]
ROLE_ARN = "eks.amazonaws.com/role-arn"
Profile = create_global_resource(c.KUBEFLOW_GROUP, "v1", c.PROFILE_KIND, c.PROFILE_PLURAL)
TenancyPolicy = create_global_resource(
    group=c.API_GROUP, version=c.API_VERSION, kind=c.POLICY_KIND, plural=c.POLICY_PLURAL
)
KFTENANCY = str(Path(sys.executable).parent / "kftenancy")
LAB_OPTIONS = {"controller_manager": True}  # default ServiceAccounts for the pods


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pod(ns: str, name: str, tolerations: list[dict[str, Any]] | None = None) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "python:3.12"}]}
    if tolerations:
        spec["tolerations"] = tolerations
    return codecs.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )


def _ns(name: str) -> Any:
    return codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def _gpu_tolerated(tolerations: list[Any] | None) -> bool:
    taint = POLICY.gpu.taint
    return any(
        tolerates(t if isinstance(t, dict) else t.to_dict(), taint) for t in tolerations or []
    )


@dataclass
class Lab:
    cluster: LocalCluster
    admin: AsyncClient
    webhook_port: int
    cert: Any
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_webhook(self) -> None:
        log = (self.cluster.workdir / "webhook.log").open("ab")
        self.procs["webhook"] = subprocess.Popen(
            [
                KFTENANCY,
                "run",
                "webhook",
                "--tls-cert-file",
                str(self.cert.cert_file),
                "--tls-key-file",
                str(self.cert.key_file),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.webhook_port),
                "--policy-name",
                POLICY_NAME,
                "--kubeconfig",
                str(self.cluster.admin_kubeconfig),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_webhook(self) -> None:
        proc = self.procs.pop("webhook")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def webhook_ready(self, seconds: float = 60) -> None:
        ca = self.cluster._ssl_context()
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    url = f"https://127.0.0.1:{self.webhook_port}/readyz"
                    async with http.get(url, ssl=ca) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the webhook did not become ready"
                await asyncio.sleep(0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outage(lab: LocalCluster) -> AsyncIterator[Lab]:
    cluster = lab
    admin = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    await admin.apply(
        codecs.from_dict(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "chaos-controller-admin"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER}
                ],
            }
        ),
        field_manager="chaos",
    )
    await admin.create(
        codecs.from_dict(
            {
                "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
                "kind": c.POLICY_KIND,
                "metadata": {"name": POLICY_NAME},
                "spec": SPEC,
            }
        )
    )
    env = {
        **os.environ,
        "KFTENANCY_KUBECONFIG": str(cluster.kubeconfig_for(CONTROLLER)),
        "KFTENANCY_METRICS_PORT": "0",
        "KFTENANCY_LEADER_ELECTION": "false",
        "KFTENANCY_APPLY_PLATFORM": "false",  # the webhook configuration is ours (below)
        "KFTENANCY_RESYNC_SECONDS": "30",
        "KFTENANCY_LOG_LEVEL": "WARNING",
    }
    ctl_log = (cluster.workdir / "controller.log").open("ab")
    controller = subprocess.Popen(  # noqa: ASYNC220 - started once, before the schedule
        [KFTENANCY, "run", "controller", "--policy-name", POLICY_NAME],
        env=env,
        stdout=ctl_log,
        stderr=subprocess.STDOUT,
    )
    the = Lab(cluster, admin, _free_port(), cluster.serving_cert("kftenancy-webhook-chaos"))
    the.procs["controller"] = controller
    the.start_webhook()
    await the.webhook_ready()
    endpoint = WebhookEndpoint(
        url=f"https://127.0.0.1:{the.webhook_port}", ca_bundle=the.cert.ca_pem
    )
    for obj in webhook_configurations(POLICY, endpoint):
        await admin.create(codecs.from_dict(obj))
    deadline = time.monotonic() + 30
    while True:  # the API server's webhook informer takes a moment
        probe = await admin.create(_ns(f"probe-{uuid.uuid4().hex[:6]}"), dry_run=True)
        if c.ANN_TOLERATIONS_WHITELIST in (probe.metadata.annotations or {}):
            break
        assert time.monotonic() < deadline, "the API server never called the webhook"
        await asyncio.sleep(0.2)
    try:
        yield the
    finally:
        for proc in the.procs.values():
            proc.terminate()
        for proc in the.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        await admin.close()


async def _ready(admin: AsyncClient, names: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    waiting = set(names)
    while waiting:
        for name in list(waiting):
            p = (await admin.get(Profile, name)).to_dict()
            conds = (p.get("status") or {}).get("conditions") or []
            if any(x["type"] == "Ready" and x["status"] == "True" for x in conds):
                waiting.discard(name)
        if not waiting:
            return
        assert time.monotonic() < deadline, f"not Ready after {seconds:.0f} s: {sorted(waiting)}"
        await asyncio.sleep(0.5)


async def _onboard(admin: AsyncClient, user: str) -> str:
    manifest = profile_for_user(POLICY, user)
    await admin.create(codecs.from_dict(manifest))
    return str(manifest["metadata"]["name"])


async def _eventually(what: str, check: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        await asyncio.sleep(0.5)


async def test_webhook_killed_while_pods_are_created(outage: Lab, chaos_rng: random.Random) -> None:
    lab, rng = outage, chaos_rng
    admin = lab.admin
    run = uuid.uuid4().hex[:4]
    tenants = [await _onboard(admin, f"chaos-{run}-{i}@example.com") for i in range(4)]
    others = [f"team-{run}-{i}" for i in range(3)]
    for ns in others:
        await admin.create(_ns(ns))
    await _ready(admin, tenants, 120)
    for ns in tenants + others:  # pods need the default ServiceAccount (controller-manager)

        async def has_sa(ns: str = ns) -> bool:
            try:
                await admin.get(ServiceAccount, "default", namespace=ns)
                return True
            except ApiError:
                return False

        await _eventually(f"default ServiceAccount in {ns}", has_sa)

    ops = 90
    kill_at = rng.randrange(10, 30)
    back_at = kill_at + rng.randrange(20, 40)
    print(
        f"chaos webhook outage: {ops} operations, SIGKILL before #{kill_at}, restart before #{back_at}"
    )
    webhook_up = True
    stripped: list[tuple[str, str]] = []  # (what, tenant)
    created_down: list[str] = []
    results: list[tuple[int, str, bool, str]] = []  # (i, op, webhook_up, outcome)
    for i in range(ops):
        if i == kill_at:
            lab.kill_webhook()
            webhook_up = False
        if i == back_at:
            lab.start_webhook()
            await lab.webhook_ready()
            webhook_up = True
        op = rng.choice(
            [
                "tenant-pod",
                "tenant-pod",
                "other-pod",
                "other-pod",
                "escape",
                "escape",
                "escape",
                "new-tenant",
                "new-other",
                "strip-ns",
                "strip-sa",
            ]
        )
        name = f"p{i}"
        outcome = "ok"
        try:
            if op == "tenant-pod":
                await admin.create(_pod(rng.choice(tenants), name))
            elif op == "other-pod":
                await admin.create(_pod(rng.choice(others), name))
            elif op == "escape":
                await admin.create(_pod(rng.choice(others), name, [rng.choice(ESCAPES)]))
                outcome = "ESCAPED"
            elif op == "new-tenant":
                t = await _onboard(admin, f"chaos-{run}-new{i}@example.com")
                tenants_new = t
                if not webhook_up:
                    created_down.append(tenants_new)
                # pods go to it only once it is Ready (see below)
                await _ready(admin, [t], 120)
                tenants.append(t)
            elif op == "new-other":
                ns = f"team-{run}-n{i}"
                await admin.create(_ns(ns))
                others.append(ns)

                async def sa_ready(ns: str = ns) -> bool:
                    try:
                        await admin.get(ServiceAccount, "default", namespace=ns)
                        return True
                    except ApiError:
                        return False

                await _eventually(f"default ServiceAccount in {ns}", sa_ready)
            elif op == "strip-ns":
                t = rng.choice(tenants)
                patch = {"metadata": {"annotations": {c.ANN_DEFAULT_TOLERATIONS: None}}}
                await admin.patch(Namespace, t, patch, patch_type=PatchType.MERGE)
                stripped.append(("ns", t))
            elif op == "strip-sa":
                t = rng.choice(tenants)
                patch = {"metadata": {"annotations": {ROLE_ARN: None}}}
                await admin.patch(
                    ServiceAccount, "default-editor", patch, namespace=t, patch_type=PatchType.MERGE
                )
                stripped.append(("sa", t))
        except ApiError as err:
            message = err.status.message or ""
            if op == "escape":
                outcome = (
                    "refused-down"
                    if 'failed calling webhook "pods.validate' in message
                    else (
                        "refused"
                        if err.status.code in (403, 500)
                        else f"error {err.status.code}: {message}"
                    )
                )
            else:
                outcome = f"error {err.status.code}: {message}"
        results.append((i, op, webhook_up, outcome))

    # 1. no GPU toleration escaped: every escape attempt was refused ...
    escapes = [r for r in results if r[1] == "escape"]
    assert escapes and all(r[3] in ("refused", "refused-down") for r in escapes), escapes
    # ... and no pod in a non-tenant namespace tolerates the taint
    for ns in others:
        async for pod in admin.list(Pod, namespace=ns):
            assert pod.spec is not None
            assert not _gpu_tolerated(pod.spec.tolerations), f"{ns}/{pod.metadata.name}"
    # 2. availability: everything that cannot break isolation was admitted, up or down
    failures = [r for r in results if r[1] != "escape" and r[3] != "ok"]
    assert not failures, failures
    # 3. the tenant defaults come back
    want = default_tolerations_annotation(POLICY)

    async def defaults_restored() -> bool:
        for t in tenants:
            ns = await admin.get(Namespace, t)
            if (ns.metadata.annotations or {}).get(c.ANN_DEFAULT_TOLERATIONS) != want:
                return False
            sa = await admin.get(ServiceAccount, "default-editor", namespace=t)
            if ROLE_ARN not in (sa.metadata.annotations or {}):
                return False
        return True

    await _eventually("every tenant's defaults restored by the controller", defaults_restored, 90)
    for t in tenants:
        pod = await admin.create(_pod(t, f"after-{run}"))
        assert pod.spec is not None and _gpu_tolerated(pod.spec.tolerations), t
    down = [r for r in results if not r[2]]
    print(
        f"chaos webhook outage: {len(down)} operations while down "
        f"({sum(r[1] == 'escape' for r in down)} escape attempts refused, "
        f"{sum(r[3] == 'refused-down' for r in down)} of them by failurePolicy Fail), "
        f"{len(stripped)} defaults stripped and restored, "
        f"{len(created_down)} tenants onboarded while down"
    )
