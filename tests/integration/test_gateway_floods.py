"""Floods and abuse at the front door, on the real local control plane.

Real parts: kube-apiserver's TokenReview and SubjectAccessReview (the gateway calls them
as an ordinary user bound to `system:auth-delegator`), real ServiceAccount tokens, real
Profiles created by the controller's `ensure_profile`, the API server's own request
counter (`apiserver_request_total{resource="tokenreviews"}`), the gateway over TLS with
its production HTTP limits (`GatewayServer.runner`). Small limits make the bounds visible
with a few hundred requests; the defaults and why they are what they are are in
docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.authentication_v1 import TokenRequest, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from kftenancy.gateway.limits import FloodLimits, Rate, WorkLimiter
from kftenancy.gateway.signer import KeyRing, SigningKey
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.onboarding import ensure_profile
from kftenancy.policy import load_policy
from kftenancy.servers.gateway import (
    Gateway,
    GatewayServer,
    KubeReviewer,
    ProxyTarget,
    client_ssl_context,
    server_ssl_context,
)

GATEWAY_USER = "kftenancy-gateway-floods"
PROXY_SECRET = "floods-proxy-secret"
LIMITS = FloodLimits(
    token_review_per_client=Rate(1, 5),
    token_review_global=Rate(2, 12),
    token_review_inflight=16,  # above the per-client burst: the client limit shows
    onboarding_global=Rate(0.2, 2),
)
MAX_BODY = 4096


def _crb(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


async def _apply(admin: AsyncClient, obj: dict[str, Any]) -> None:
    await admin.apply(codecs.from_dict(obj), field_manager="kftenancy-test", force=True)


async def _serve(runner: web.AppRunner, ctx: ssl.SSLContext) -> str:
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return f"https://127.0.0.1:{runner.addresses[0][1]}"


@dataclass
class Door:
    gateway: Gateway
    check_url: str  # ext-authz
    proxy_url: str
    ca: ssl.SSLContext
    http: aiohttp.ClientSession
    cluster: LocalCluster
    namespace: str
    legit_token: str
    port: int

    async def check(self, token: str, client: str) -> tuple[int, str, str | None]:
        headers = {"authorization": f"Bearer {token}", "x-forwarded-for": f"6.6.6.6, {client}"}
        async with self.http.get(self.check_url + "/check/x", headers=headers, ssl=self.ca) as r:
            return r.status, await r.text(), r.headers.get("retry-after")

    def throttled(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for metric in self.gateway.metrics.throttled.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[(s.labels["work"], s.labels["scope"])] = s.value
        return out

    def token_reviews_sent(self) -> float:
        for metric in self.gateway.metrics.api_calls.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels["call"] == "tokenreview":
                    return float(s.value)
        return 0.0

    async def apiserver_token_reviews(self) -> float:
        """TokenReviews the API server itself counted (its /metrics, as admin)."""
        ctx = self.cluster._ssl_context()
        async with self.http.get(self.cluster.server + "/metrics", ssl=ctx) as r:
            text = await r.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("apiserver_request_total{") and 'resource="tokenreviews"' in line
        )

    async def fresh(self) -> None:
        """Full buckets again (a new limiter, as after a quiet minute)."""
        gw = self.gateway
        gw.token_reviews = type(gw.token_reviews)(
            LIMITS.token_review_global, LIMITS.token_review_per_client
        )
        if gw.onboarder is not None:
            gw.onboarder.limiter = WorkLimiter(LIMITS.onboarding_global)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def door(cluster: LocalCluster, admin: AsyncClient) -> AsyncIterator[Door]:
    ns = f"floods-{uuid.uuid4().hex[:6]}"
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        _crb(f"{ns}-auth-delegator", "system:auth-delegator", GATEWAY_USER),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{ns}-onboarding"},
            "rules": [
                {
                    "apiGroups": ["kubeflow.org"],
                    "resources": ["profiles"],
                    "verbs": ["get", "create"],
                },
                {
                    "apiGroups": ["apiextensions.k8s.io"],
                    "resources": ["customresourcedefinitions"],
                    "verbs": ["list"],
                },
            ],
        },
        _crb(f"{ns}-onboarding", f"{ns}-onboarding", GATEWAY_USER),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "pipeline", "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "entry", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "pipeline", "namespace": ns},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "floods"},
            ],
        },
    ):
        await _apply(admin, obj)
    issued = await admin.create(
        ServiceAccountToken(
            metadata=ObjectMeta(name="pipeline", namespace=ns),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
        ),
        "pipeline",
        namespace=ns,
    )
    assert isinstance(issued, TokenRequest) and issued.status is not None
    policy = load_policy(
        {
            "identity": {
                "methods": ["trustedProxy", "kubernetesToken"],
                "authorization": {"rule": {"verb": "get", "resource": "pods", "namespace": ns}},
                "onboarding": ["gateway"],
            }
        }
    )
    gw_client = AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_for(GATEWAY_USER)), trust_env=False
    )
    reviewer = KubeReviewer(gw_client)
    kube = Kube(gw_client)

    async def onboard(user_id: str) -> object:
        return await ensure_profile(kube, policy, user_id, source="gateway")

    gateway = Gateway(
        policy,
        keyring=KeyRing(SigningKey.generate()),
        reviewer=reviewer,
        onboard=onboard,
        proxy_secret=PROXY_SECRET,
        limits=LIMITS,
    )
    tls = cluster.serving_cert("gateway-floods")
    server_ctx = server_ssl_context(tls.cert_file, tls.key_file)
    ca = client_ssl_context(cluster.ca_file)

    async def echo(req: web.Request) -> web.Response:
        return web.json_response({"len": len(await req.read())})

    up = web.Application(client_max_size=1 << 20)
    up.router.add_route("*", "/{tail:.*}", echo)
    up_runner = web.AppRunner(up, access_log=None)
    upstream = await _serve(up_runner, server_ctx)
    authz_server = GatewayServer(gateway, "ext-authz")
    authz_runner = authz_server.runner(keepalive_timeout=2.0)
    proxy_runner = GatewayServer(
        gateway, "proxy", upstream=ProxyTarget(upstream, ca), max_body=MAX_BODY
    ).runner()
    check_url = await _serve(authz_runner, server_ctx)
    proxy_url = await _serve(proxy_runner, server_ctx)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
    try:
        yield Door(
            gateway,
            check_url,
            proxy_url,
            ca,
            http,
            cluster,
            ns,
            issued.status.token,
            int(check_url.rsplit(":", 1)[1]),
        )
    finally:
        await http.close()
        for r in (proxy_runner, authz_runner, up_runner):
            await r.cleanup()
        await reviewer.close()
        await gw_client.close()


def _random_token() -> str:
    return secrets.token_urlsafe(32)


async def test_random_token_flood_costs_a_bounded_number_of_token_reviews(door: Door) -> None:
    await door.fresh()
    sent_before = door.token_reviews_sent()
    api_before = await door.apiserver_token_reviews()
    began = time.monotonic()
    results = await asyncio.gather(
        *(door.check(_random_token(), "203.0.113.9") for _ in range(300))
    )
    elapsed = time.monotonic() - began
    statuses = [s for s, _, _ in results]
    reviewed = door.token_reviews_sent() - sent_before
    api_reviewed = await door.apiserver_token_reviews() - api_before
    # every admitted token was reviewed and refused (401); everything else was 429 at once
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) == reviewed
    bound = (
        LIMITS.token_review_per_client.burst + LIMITS.token_review_per_client.per_second * elapsed
    )
    assert 1 <= reviewed <= bound
    assert api_reviewed <= bound  # the API server saw no more than we claim
    throttled = [(t, ra) for s, t, ra in results if s == 429]
    assert throttled and all(
        t.startswith("throttled: ") and ra and int(ra) >= 1 for t, ra in throttled
    )
    assert any("(client limit)" in t for t, _ in throttled)
    assert door.throttled()[("tokenreview", "client")] >= len(throttled)


async def test_a_flooding_client_does_not_lock_out_a_legitimate_token(door: Door) -> None:
    await door.fresh()
    flood = [door.check(_random_token(), "203.0.113.10") for _ in range(100)]
    legit = door.check(door.legit_token, "198.51.100.20")
    *flooded, (status, text, _) = await asyncio.gather(*flood, legit)
    assert status == 200, text
    assert any(s == 429 for s, _, _ in flooded)


async def test_a_flood_from_many_addresses_hits_the_global_limit(door: Door) -> None:
    await door.fresh()
    sent_before = door.token_reviews_sent()
    began = time.monotonic()
    results = await asyncio.gather(
        *(door.check(_random_token(), f"10.9.{i // 200}.{i % 200}") for i in range(400))
    )
    elapsed = time.monotonic() - began
    reviewed = door.token_reviews_sent() - sent_before
    glob = LIMITS.token_review_global
    assert reviewed <= glob.burst + glob.per_second * elapsed
    texts = [t for s, t, _ in results if s == 429]
    assert any("global limit" in t for t in texts)
    assert door.throttled()[("tokenreview", "global")] >= 1


async def test_onboarding_beyond_the_rate_is_429_and_creates_no_profile(
    door: Door, admin: AsyncClient
) -> None:
    from lightkube.generic_resource import create_global_resource

    from kftenancy.naming import profile_name

    profile = create_global_resource("kubeflow.org", "v1", "Profile", "profiles")
    await door.fresh()
    run = uuid.uuid4().hex[:6]
    users = [f"new-{run}-{i}@example.com" for i in range(6)]
    answers = []
    for u in users:
        headers = {
            "x-kftenancy-proxy-secret": PROXY_SECRET,
            "x-forwarded-user": u,
            "x-forwarded-groups": "floods",
        }
        async with door.http.get(door.check_url + "/check/", headers=headers, ssl=door.ca) as r:
            answers.append((r.status, await r.text(), r.headers.get("retry-after")))
    statuses = [s for s, _, _ in answers]
    burst = int(LIMITS.onboarding_global.burst)
    assert statuses[:burst] == [200] * burst
    assert 429 in statuses[burst:]
    refused = next(a for a in answers if a[0] == 429)
    assert refused[1].startswith("onboarding-throttled: ") and int(refused[2] or 0) >= 1
    existing = {p.metadata.name async for p in admin.list(profile)}
    policy = door.gateway.policy
    for u, s in zip(users, statuses, strict=True):
        assert (profile_name(policy, u) in existing) == (s == 200), u


async def test_oversized_headers_are_refused_before_any_check(door: Door) -> None:
    sent_before = door.token_reviews_sent()
    big = "a" * (40 * 1024)
    async with door.http.get(
        door.check_url + "/check/x", headers={"authorization": f"Bearer {big}"}, ssl=door.ca
    ) as r:
        assert r.status == 400
    async with door.http.get(
        door.check_url + "/check/x",
        headers={f"x-h{i}": "v" for i in range(200)},
        ssl=door.ca,
    ) as r:
        assert r.status == 400
    # a token just within the field limit but above MAX_TOKEN_BYTES: a 401, not a review
    status, text, _ = await door.check("a" * (20 * 1024), "192.0.2.1")
    assert status == 401 and text.startswith("malformed-token")
    assert door.token_reviews_sent() == sent_before


async def test_proxy_refuses_bodies_above_the_limit(door: Door) -> None:
    headers = {
        "x-kftenancy-proxy-secret": PROXY_SECRET,
        "x-forwarded-user": "body-user@example.com",
        "x-forwarded-groups": "floods",
    }
    door.gateway.onboarder = None  # this test is about bodies, not onboarding
    async with door.http.post(
        door.proxy_url + "/upload", data=b"x" * 1000, headers=headers, ssl=door.ca
    ) as r:
        assert r.status == 200 and (await r.json())["len"] == 1000
    async with door.http.post(
        door.proxy_url + "/upload", data=b"x" * (MAX_BODY + 1), headers=headers, ssl=door.ca
    ) as r:
        assert r.status == 413 and "body-too-large" in await r.text()

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 1024

    async with door.http.post(
        door.proxy_url + "/upload", data=chunked(), headers=headers, ssl=door.ca
    ) as r:
        assert r.status == 413 and "body-too-large" in await r.text()


async def test_a_slow_client_is_disconnected(door: Door) -> None:
    """A client that never finishes its request head (slowloris) is dropped by aiohttp's
    keep-alive timer (2 s in this fixture; 15 s by default)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", door.port, ssl=door.ca, server_hostname="127.0.0.1"
    )
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)  # EOF: the server closed it
    assert data == b""
    writer.close()
