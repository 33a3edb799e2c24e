"""Fuzzing AdmissionReview bodies into the real webhook server over TLS.

The webhook runs in-process (its caches follow the real local control plane, where a
tenant and a non-tenant namespace exist) and is driven over HTTPS by a plain
`http.client` connection from a worker thread, so the server's loop keeps serving.
Properties of every answer: HTTP 200 with a well-formed AdmissionReview v1 (uid echoed,
`allowed` a bool), a denial has code 403 and a message, no rule ever failed ("could not
evaluate" / "webhook error"), and a patch applies cleanly to the object it was made for
(an unusable patch would fail the API server's request). The server is healthy after.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import pytest
import pytest_asyncio
import yaml
from fuzz_support import budget, fuzz_rounds, json_values, mutations
from hypothesis import strategies as st
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Namespace

from kftenancy import constants as c
from kftenancy.lab.cluster import LocalCluster
from kftenancy.servers.webhook import WebhookServer, WebhookSettings

SUFFIX = uuid.uuid4().hex[:6]
TENANT = f"fuzz-tenant-{SUFFIX}"
OTHER = f"fuzz-other-{SUFFIX}"
GPU = {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}
POLICY = {
    "platform": {"flavor": "kubernetes"},
    "dataLake": {
        "enabled": True,
        "audience": "sts.amazonaws.com",
        "region": "eu-west-1",
        "roleArnTemplate": "arn:aws:iam::000000000000:role/tenant-{namespace}",
    },
}


def _review(
    obj: dict[str, Any],
    *,
    resource: str,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    user: str = "alice@example.com",
) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": obj.get("kind", "Pod")},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def _pod(ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nb-0", "namespace": ns, "annotations": {"x": "y"}},
        "spec": {
            "serviceAccountName": "default-editor",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
            "containers": [
                {"name": "main", "image": "python:3.12", "env": [{"name": "A", "value": "1"}]}
            ],
            "initContainers": [{"name": "init", "image": "busybox"}],
            **spec,
        },
    }


def _ns(name: str, labels: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": dict(annotations)},
    }


def _sa(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns},
    }


SEEDS: list[dict[str, Any]] = [
    _review(_pod(TENANT), resource="pods"),
    _review(_pod(OTHER, tolerations=[GPU]), resource="pods"),
    _review(
        _pod(OTHER, tolerations=[{"operator": "Exists"}]),
        resource="pods",
        operation="UPDATE",
        old=_pod(OTHER),
    ),
    _review(
        _pod(TENANT, tolerations=[GPU, {"key": "team", "operator": "Exists"}]), resource="pods"
    ),
    _review(_ns(f"new-{SUFFIX}", {c.LABEL_TENANT: "new"}), resource="namespaces"),
    _review(
        _ns(TENANT, {c.LABEL_TENANT: TENANT}, **{c.ANN_DEFAULT_TOLERATIONS: "[]"}),
        resource="namespaces",
        operation="UPDATE",
        old=_ns(TENANT, {c.LABEL_TENANT: TENANT}),
    ),
    _review(
        _ns(OTHER, {}, **{c.ANN_TOLERATIONS_WHITELIST: "[{}]"}),
        resource="namespaces",
        operation="UPDATE",
        old=_ns(OTHER, {}),
    ),
    _review(_sa(TENANT, "default-editor"), resource="serviceaccounts"),
    _review(
        _sa(TENANT, "default-editor"),
        resource="serviceaccounts",
        operation="UPDATE",
        old=_sa(TENANT, "default-editor"),
    ),
]
KEYS = [
    "tolerations",
    "key",
    "operator",
    "effect",
    "value",
    "labels",
    "annotations",
    "serviceAccountName",
    "containers",
    "env",
    "volumeMounts",
    "volumes",
    "subResource",
    "securityContext",
    "fsGroup",
    "uid",
    "namespace",
    "dryRun",
    "kind",
    "resource",
]

ENDPOINTS = st.sampled_from(["mutate", "validate"])
mutated_reviews = st.tuples(ENDPOINTS, mutations(SEEDS, KEYS).map(json.dumps))
arbitrary = st.one_of(json_values.map(json.dumps), st.binary(max_size=64).map(repr))
# mostly near-valid reviews (they reach the rules); one in ten arbitrary JSON or bytes
bodies = st.integers(0, 9).flatmap(
    lambda i: mutated_reviews if i else st.tuples(ENDPOINTS, arbitrary)
)


class Client:
    """One keep-alive HTTPS connection, reopened if the server closed it."""

    def __init__(self, port: int, ca: ssl.SSLContext) -> None:
        self.port, self.ca = port, ca
        self.conn: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: str) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.ca, timeout=30
                )
            try:
                self.conn.request(
                    "POST",
                    path,
                    body=body.encode("utf-8", "surrogatepass"),
                    headers={"content-type": "application/json"},
                )
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def check_answer(sent: str, status: int, raw: bytes) -> None:
    assert status == 200, (status, raw[:300])
    answer = json.loads(raw)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert isinstance(response["allowed"], bool)
    try:
        request = json.loads(sent)
    except ValueError:
        request = None
    req = request.get("request") if isinstance(request, dict) else None
    uid = req.get("uid") if isinstance(req, dict) else None
    assert response["uid"] == (uid if isinstance(uid, str) else ""), response
    text = json.dumps(response)
    assert "could not evaluate" not in text and "webhook error" not in text, response
    if not response["allowed"]:
        assert response["status"]["code"] == 403
        assert isinstance(response["status"]["message"], str) and response["status"]["message"]
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        assert isinstance(req, dict) and isinstance(req.get("object"), dict)
        jsonpatch.apply_patch(req["object"], ops)  # raises if the patch does not apply


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(
    cluster: LocalCluster, admin: AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[WebhookServer, ssl.SSLContext]]:
    for name, labels in ((TENANT, {c.LABEL_TENANT: TENANT}), (OTHER, {})):
        await admin.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels},
                }
            )
        )
    cert = cluster.serving_cert(f"kftenancy-webhook-fuzz-{SUFFIX}")
    policy_file = tmp_path_factory.mktemp("fuzz-admission") / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"spec": POLICY}))
    client = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    server = WebhookServer(
        WebhookSettings(
            cert_file=cert.cert_file,
            key_file=cert.key_file,
            host="127.0.0.1",
            port=0,
            policy_file=policy_file,
        ),
        client,
    )
    await server.start()
    await server.wait_ready(60)
    try:
        yield server, ssl.create_default_context(cafile=str(cluster.ca_file))
    finally:
        await server.stop()
        await client.close()
        for name in (TENANT, OTHER):
            await admin.delete(Namespace, name)


async def test_fuzzed_admission_reviews_get_a_well_formed_answer(
    served: tuple[WebhookServer, ssl.SSLContext],
) -> None:
    server, ca = served
    client = Client(server.port, ca)

    seen: dict[str, int] = {}

    def check(example: tuple[str, str]) -> None:
        endpoint, body = example
        status, raw = client.post("/" + endpoint, body)
        check_answer(body, status, raw)
        response = json.loads(raw)["response"]
        message = response.get("status", {}).get("message", "")
        kind = (
            "patched"
            if "patch" in response
            else "allowed"
            if response["allowed"]
            else "malformed"
            if message.startswith("malformed AdmissionReview")
            else "denied"
        )
        seen[kind] = seen.get(kind, 0) + 1

    n = await asyncio.to_thread(fuzz_rounds, "admission", bodies, check, budget(20))
    print(f"fuzz admission outcomes: {seen}")
    # the mutations reach the rules, not only the parser
    assert n > 0 and seen.get("patched", 0) and seen.get("denied", 0), seen
    status, _ = await asyncio.to_thread(client.post, "/validate", "{}")
    assert status == 200  # still serving
