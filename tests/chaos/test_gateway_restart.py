"""Chaos: the gateway (`kftenancy run gateway --mode proxy`, a real process) is killed and
restarted while clients keep sending requests.

Real parts: its own local control plane (SubjectAccessReview for every user, TokenReview
for the service-account tokens), the gateway process with a signing-key directory (so
its JWKS survives restarts, as with a mounted Secret), an echo upstream that records
exactly the headers it received. Clients are users signed in through the login proxy
(trusted-proxy headers) and service accounts with bearer tokens, and every client forges
`kubeflow-userid`, `kubeflow-groups` and the identity header on every request. A seeded
schedule (printed; replay with `KFTENANCY_CHAOS_SEED`) picks when the gateway is killed
(SIGKILL or SIGTERM) and for how long it stays down.

What must hold: every request the upstream received carried the `kubeflow-userid` of the
client that sent it and an identity JWT that verifies against the gateway's JWKS with
that user as `sub`; no request reached the upstream without them or with a forged value;
every 200 a client got is the upstream's answer to its own request. Failed requests while
the gateway is down are fine; wrong identities never are.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.authentication_v1 import TokenRequest, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from kftenancy.gateway.jwt_verify import TokenRejected
from kftenancy.gateway.signer import SigningKey, verify_identity_token
from kftenancy.lab.cluster import LocalCluster
from kftenancy.servers.gateway import server_ssl_context

KFTENANCY = str(Path(sys.executable).parent / "kftenancy")
GATEWAY_USER = "kftenancy-gateway-chaos"
PROXY_SECRET = "chaos-proxy-secret"
NS = "chaos-gw"
GROUP = "chaos-users"
ISSUER = "https://kftenancy-gateway.chaos"
FORGED = {
    "kubeflow-userid": "admin@example.com",
    "kubeflow-groups": "cluster-admins",
    "x-kftenancy-identity": "forged.jwt.value",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Echo:
    seen: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    async def handle(self, req: web.Request) -> web.Response:
        headers: dict[str, list[str]] = {}
        for k, v in req.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        rid = req.headers.get("x-request-id", "")
        self.seen[rid or f"missing-{uuid.uuid4().hex}"] = headers
        return web.json_response({"request": rid})


@dataclass
class Client:
    name: str  # the user the gateway must pass on
    headers: dict[str, str]


async def _apply(admin: AsyncClient, obj: dict[str, Any]) -> None:
    await admin.apply(codecs.from_dict(obj), field_manager="chaos", force=True)


def _crb(name: str, role: str, user: str) -> dict[str, Any]:
    rbac = "rbac.authorization.k8s.io"
    return {
        "apiVersion": f"{rbac}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": rbac, "kind": "User", "name": user}],
    }


@dataclass
class Setup:
    cluster: LocalCluster
    clients: list[Client]
    echo: Echo
    port: int
    argv: list[str]
    jwks: dict[str, Any]
    ca: Any
    log: Path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def setup(
    lab: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    cluster = lab
    work = tmp_path_factory.mktemp("gateway-chaos")
    admin = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    rbac = "rbac.authorization.k8s.io"
    sas = [f"pipeline-{i}" for i in range(3)]
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        _crb("chaos-gateway-auth-delegator", "system:auth-delegator", GATEWAY_USER),
        *(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": NS},
            }
            for sa in sas
        ),
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
            "subjects": [
                {"apiGroup": rbac, "kind": "Group", "name": GROUP},
                *({"kind": "ServiceAccount", "name": sa, "namespace": NS} for sa in sas),
            ],
        },
    ):
        await _apply(admin, obj)
    clients = [
        Client(
            f"user-{i}@example.com",
            {
                "x-kftenancy-proxy-secret": PROXY_SECRET,
                "x-forwarded-user": f"user-{i}@example.com",
                "x-forwarded-groups": GROUP,
            },
        )
        for i in range(5)
    ]
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
        clients.append(
            Client(
                f"system:serviceaccount:{NS}:{sa}",
                {"authorization": f"Bearer {issued.status.token}"},
            )
        )
    await admin.close()

    tls = cluster.serving_cert("gateway-chaos")
    echo = Echo()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_ssl_context(tls.cert_file, tls.key_file)
    )
    await site.start()
    echo_url = f"https://127.0.0.1:{runner.addresses[0][1]}"

    keys = work / "keys"
    keys.mkdir()
    key = SigningKey.generate()
    (keys / "current.pem").write_bytes(key.to_pem())
    (work / "secret").write_text(PROXY_SECRET)
    policy = work / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "spec": {
                    "identity": {
                        "methods": ["trustedProxy", "kubernetesToken"],
                        "authorization": {
                            "rule": {"verb": "get", "resource": "pods", "namespace": NS}
                        },
                        "onboarding": [],
                        "identityToken": {"issuer": ISSUER},
                    }
                }
            }
        )
    )
    port = _free_port()
    argv = [
        KFTENANCY,
        "run",
        "gateway",
        "--mode",
        "proxy",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-cert",
        str(tls.cert_file),
        "--tls-key",
        str(tls.key_file),
        "--policy",
        str(policy),
        "--kubeconfig",
        str(cluster.kubeconfig_for(GATEWAY_USER)),
        "--upstream",
        echo_url,
        "--upstream-ca",
        str(cluster.ca_file),
        "--signing-key-dir",
        str(keys),
        "--proxy-secret-file",
        str(work / "secret"),
        "--log-level",
        "WARNING",
    ]
    try:
        yield Setup(
            cluster,
            clients,
            echo,
            port,
            argv,
            {"keys": [key.public_jwk()]},
            cluster._ssl_context(),
            work / "gateway.log",
        )
    finally:
        await runner.cleanup()


class Gateway:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.setup.log.open("ab")
        self.proc = subprocess.Popen(self.setup.argv, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    async def ready(self, http: aiohttp.ClientSession, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                async with http.get(
                    f"https://127.0.0.1:{self.setup.port}/readyz", ssl=self.setup.ca
                ) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"gateway not ready; see {self.setup.log}"
            await asyncio.sleep(0.1)


async def test_no_request_is_served_with_a_wrong_identity_across_restarts(
    setup: Setup, chaos_rng: random.Random
) -> None:
    rng = chaos_rng
    schedule = [
        (rng.uniform(0.5, 2.0), rng.choice([signal.SIGKILL, signal.SIGTERM]), rng.uniform(0.1, 1.0))
        for _ in range(4)
    ]
    print(
        "chaos gateway restart: "
        + "; ".join(
            f"after {a:.2f} s {signal.Signals(s).name}, down {d:.2f} s" for a, s, d in schedule
        )
    )
    gw = Gateway(setup)
    gw.start()
    sent: dict[str, Client] = {}
    answered: dict[str, int] = {}
    errors = 0
    stop = asyncio.Event()
    url = f"https://127.0.0.1:{setup.port}/notebook/lab"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as http:
        await gw.ready(http)

        async def client_loop(client: Client) -> None:
            nonlocal errors
            while not stop.is_set():
                rid = uuid.uuid4().hex
                sent[rid] = client
                try:
                    async with http.get(
                        url, headers={**client.headers, **FORGED, "x-request-id": rid}, ssl=setup.ca
                    ) as r:
                        body = await r.read()
                        answered[rid] = r.status
                        if r.status == 200:
                            assert json.loads(body)["request"] == rid, "an answer to someone else"
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    await asyncio.sleep(0.01)

        loops = [asyncio.create_task(client_loop(cl)) for cl in setup.clients for _ in range(2)]
        served_between: list[int] = []
        try:
            for after, sig, down in schedule:
                await asyncio.sleep(after)
                served_between.append(len(setup.echo.seen))
                await asyncio.to_thread(gw.stop, sig)
                await asyncio.sleep(down)
                gw.start()
                await gw.ready(http)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
            if gw.proc is not None:
                gw.stop(signal.SIGTERM)
        for task in loops:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    seen = setup.echo.seen
    print(
        f"chaos gateway restart: {len(sent)} requests sent, {len(seen)} served, "
        f"{sum(s == 200 for s in answered.values())} answered 200, {errors} connection errors "
        f"(gateway down), statuses {sorted(set(answered.values()))}"
    )
    assert len(seen) > 50 and all(b > a for a, b in itertools.pairwise(served_between))
    for rid, headers in seen.items():
        client = sent.get(rid)
        assert client is not None, f"the upstream got a request no client sent: {rid}"
        assert headers.get("kubeflow-userid") == [client.name], (client.name, headers)
        tokens = headers.get("x-kftenancy-identity", [])
        assert len(tokens) == 1, (client.name, tokens)
        try:
            claims = verify_identity_token(
                tokens[0], setup.jwks, audience="kubeflow", issuer=ISSUER
            )
        except TokenRejected as err:
            raise AssertionError(
                f"{client.name}: the identity JWT does not verify: {err}"
            ) from None
        assert claims["sub"] == client.name
        groups = headers.get("kubeflow-groups", [""])
        assert "cluster-admins" not in groups[0]
    # a 200 is only ever the upstream's answer (checked per request above)
    assert {s for s in answered.values()} <= {200, 502, 503}
