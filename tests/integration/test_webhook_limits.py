"""The admission webhook's limits on the real local control plane: bounded body size and
concurrency, and a fast deny (with our reason) for the validating rules under overload.

The webhook runs in-process over TLS and is registered with the real kube-apiserver
(rendered configurations, `url` + `caBundle`). Overload is made real: raw TLS
connections send a request head and part of a body and then stall, so the server holds
that many requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.core_v1 import Namespace

from kftenancy import constants as c
from kftenancy.lab.cluster import LocalCluster
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations
from kftenancy.servers.webhook import MAX_BODY, WebhookServer, WebhookSettings

GPU_TOLERATION = {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}
MAX_INFLIGHT = 2


def _pod(ns: str, name: str, **spec: Any) -> Any:
    return codecs.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "main", "image": "python:3.12"}], **spec},
        }
    )


class Hold:
    """Requests stalled inside the server: head sent, body half sent."""

    def __init__(self, port: int, ca: ssl.SSLContext) -> None:
        self.port = port
        self.ca = ca
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def add(self) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.ca, server_hostname="127.0.0.1"
        )
        writer.write(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        self.streams.append((reader, writer))

    async def release(self) -> list[bytes]:
        """Finish the stalled requests (with junk): each gets its AdmissionReview answer."""
        out = []
        for reader, writer in self.streams:
            writer.write(b" " * 999)
            await writer.drain()
            out.append(await asyncio.wait_for(reader.read(4096), 30))
            writer.close()
        self.streams.clear()
        return out


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def webhook(
    cluster: LocalCluster, admin: AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[WebhookServer, ssl.SSLContext]]:
    cert = cluster.serving_cert(f"kftenancy-webhook-limits-{uuid.uuid4().hex[:6]}")
    policy_file = tmp_path_factory.mktemp("webhook-limits") / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"spec": {"platform": {"flavor": "kubernetes"}}}))
    settings = WebhookSettings(
        cert_file=cert.cert_file,
        key_file=cert.key_file,
        host="127.0.0.1",
        port=0,
        policy_file=policy_file,
        max_inflight=MAX_INFLIGHT,
    )
    client = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    server = WebhookServer(settings, client)
    await server.start()
    await server.wait_ready(60)
    name = f"kftenancy-limits-{uuid.uuid4().hex[:6]}"
    endpoint = WebhookEndpoint(url=f"https://127.0.0.1:{server.port}", ca_bundle=cert.ca_pem)
    for obj in webhook_configurations(server.policy, endpoint):
        obj["metadata"]["name"] = name
        await admin.create(codecs.from_dict(obj))
    ca = ssl.create_default_context(cafile=str(cluster.ca_file))
    try:
        # wait until the API server calls the webhook (a dry-run namespace comes back mutated)
        deadline = time.monotonic() + 30
        while True:
            probe = codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}"},
                }
            )
            made = await admin.create(probe, dry_run=True)
            if c.ANN_TOLERATIONS_WHITELIST in (made.metadata.annotations or {}):
                break
            assert time.monotonic() < deadline, "the API server never called the webhook"
            await asyncio.sleep(0.2)
        yield server, ca
    finally:
        await admin.delete(MutatingWebhookConfiguration, name)
        await admin.delete(ValidatingWebhookConfiguration, name)
        await server.stop()
        await client.close()


async def test_overloaded_webhook_denies_gpu_pods_at_once_and_admits_plain_ones(
    webhook: tuple[WebhookServer, ssl.SSLContext], admin: AsyncClient
) -> None:
    server, ca = webhook
    namespace = f"overload-{uuid.uuid4().hex[:6]}"
    hold = Hold(server.port, ca)
    for _ in range(MAX_INFLIGHT):
        await hold.add()
    for _ in range(100):
        if server.inflight >= MAX_INFLIGHT:
            break
        await asyncio.sleep(0.05)
    assert server.inflight == MAX_INFLIGHT
    try:
        # mutations are admitted unchanged: this namespace gets no whitelist annotation
        # (so PodTolerationRestriction has nothing to enforce; our validating rule must)
        ns = codecs.from_dict(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        made = await admin.create(ns)
        assert c.ANN_TOLERATIONS_WHITELIST not in (made.metadata.annotations or {})
        with pytest.raises(ApiError) as err:
            await admin.create(_pod(namespace, "gpu", tolerations=[GPU_TOLERATION]))
        assert err.value.status.code == 403
        assert "kftenancy webhook overloaded" in str(err.value) and "denied to stay safe" in str(
            err.value
        )
        # a pod that cannot break isolation is admitted (mutation skipped, with a warning)
        plain = await admin.create(_pod(namespace, "plain"))
        assert plain.metadata is not None and plain.metadata.name == "plain"
    finally:
        answers = await hold.release()
    # the held requests still got a well-formed answer (junk body: denied as malformed)
    for raw in answers:
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(body)["response"]["allowed"] is False
    # back under the limit: the ordinary rule answers, with its own reason
    with pytest.raises(ApiError) as err:
        await admin.create(_pod(namespace, "gpu-again", tolerations=[GPU_TOLERATION]))
    assert err.value.status.code == 403 and "overloaded" not in str(err.value)
    metrics = await _metrics(server, ca)
    assert 'kftenancy_webhook_overloaded_total{endpoint="validate"}' in metrics
    await admin.delete(Namespace, namespace)


async def _metrics(server: WebhookServer, ca: ssl.SSLContext) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://127.0.0.1:{server.port}/metrics", ssl=ca) as r,
    ):
        return await r.text()


async def test_oversized_review_is_413_with_the_limit(
    webhook: tuple[WebhookServer, ssl.SSLContext],
) -> None:
    server, ca = webhook
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"https://127.0.0.1:{server.port}/validate",
            data=b"x" * (MAX_BODY + 1),
            headers={"content-type": "application/json"},
            ssl=ca,
        ) as r,
    ):
        assert r.status == 413
        assert f"exceeds {MAX_BODY} bytes" in await r.text()
