"""The admission webhook on the real local control plane.

The webhook runs in-process over TLS (a serving certificate from the cluster's CA); the
rendered Mutating-/ValidatingWebhookConfigurations point the real kube-apiserver at it
with `url: https://127.0.0.1:<port>` plus `caBundle`. The policy comes from a
TenancyPolicy object in the cluster, which the webhook follows. A second, smaller
cluster runs with PodTolerationRestriction off, to show our own rule holds there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.models.authentication_v1 import (
    BoundObjectReference,
    TokenRequest,
    TokenRequestSpec,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Node, Pod, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding
from lightkube.types import PatchType

from kftenancy import constants as c
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations
from kftenancy.servers.webhook import WebhookServer, WebhookSettings

# The default controller identity (`render.webhooks.default_controller_user`): the
# webhook and its configuration are used without overriding it.
CONTROLLER = "system:serviceaccount:kftenancy:kftenancy-controller"
MALLORY = "mallory"
PREEXISTING = f"before-webhook-{uuid.uuid4().hex[:6]}"
AUDIENCE = "sts.kftenancy.test"
SEED_DEFAULT = '[{"operator":"Equal","effect":"NoSchedule","key":"workload","value":"ai-ml"}]'
GPU_TOLERATION = {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}
POLICY_SPEC: dict[str, Any] = {
    "platform": {"flavor": "kubernetes"},
    "dataLake": {
        "enabled": True,
        "audience": AUDIENCE,
        "region": "eu-west-1",
        "roleArnTemplate": "arn:aws:iam::000000000000:role/tenant-{namespace}",
        "tokenExpirationSeconds": 3600,
    },
}
TenancyPolicy = create_global_resource(
    group=c.API_GROUP, version=c.API_VERSION, kind=c.POLICY_KIND, plural=c.POLICY_PLURAL
)

# A minimal stand-in, installed only when the session has not installed kftenancy's CRD.
_FALLBACK_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{c.POLICY_PLURAL}.{c.API_GROUP}"},
    "spec": {
        "group": c.API_GROUP,
        "scope": "Cluster",
        "names": {"kind": c.POLICY_KIND, "plural": c.POLICY_PLURAL, "singular": c.POLICY_SINGULAR},
        "versions": [
            {
                "name": c.API_VERSION,
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _client(kubeconfig: Path) -> AsyncClient:
    return AsyncClient(config=KubeConfig.from_file(kubeconfig), trust_env=False)


def _ns(name: str, labels: dict[str, str] | None = None, **annotations: str) -> Any:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})


def _pod(ns: str, name: str, **spec: Any) -> Any:
    body = {"containers": [{"name": "main", "image": "python:3.12"}], **spec}
    return codecs.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": body,
        }
    )


def _policy(name: str, spec: dict[str, Any]) -> Any:
    api_version = f"{c.API_GROUP}/{c.API_VERSION}"
    return codecs.from_dict(
        {"apiVersion": api_version, "kind": c.POLICY_KIND, "metadata": {"name": name}, "spec": spec}
    )


def _as_dict(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = obj.to_dict()
    return data


class Registered:
    """A running webhook server and its configurations in one cluster."""

    def __init__(self, server: WebhookServer, cluster: LocalCluster, names: tuple[str, str]):
        self.server = server
        self.cluster = cluster
        self.names = names

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"


async def _register(
    cluster: LocalCluster, admin: AsyncClient, settings: WebhookSettings, ca_pem: bytes
) -> Registered:
    server = WebhookServer(settings, _client(cluster.admin_kubeconfig))
    await server.start()
    await server.wait_ready(60)
    suffix = _uid()
    names = (f"kftenancy-it-{suffix}", f"kftenancy-it-{suffix}")
    endpoint = WebhookEndpoint(url=f"https://127.0.0.1:{server.port}", ca_bundle=ca_pem)
    for obj, name in zip(webhook_configurations(server.policy, endpoint), names, strict=True):
        obj["metadata"]["name"] = name
        await admin.create(codecs.from_dict(obj))
    # The API server's webhook informer takes a moment: wait until a dry-run namespace
    # comes back mutated.
    deadline = time.monotonic() + 30
    while True:
        probe = await admin.create(_ns(f"probe-{_uid()}"), dry_run=True)
        if c.ANN_TOLERATIONS_WHITELIST in (probe.metadata.annotations or {}):
            return Registered(server, cluster, names)
        if time.monotonic() > deadline:
            raise AssertionError("the API server never called the registered webhook")
        await asyncio.sleep(0.2)


async def _unregister(admin: AsyncClient, reg: Registered) -> None:
    await admin.delete(MutatingWebhookConfiguration, reg.names[0])
    await admin.delete(ValidatingWebhookConfiguration, reg.names[1])
    await reg.server.stop()


# ---------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def policy_name(cluster: LocalCluster, admin: AsyncClient) -> AsyncIterator[str]:
    crd = f"{c.POLICY_PLURAL}.{c.API_GROUP}"
    try:
        await admin.get(CustomResourceDefinition, crd)
    except ApiError as err:
        if err.status.code != 404:
            raise
        await asyncio.to_thread(cluster.install_crds, [_FALLBACK_CRD])
    name = f"webhook-it-{_uid()}"
    await admin.create(_policy(name, POLICY_SPEC))
    yield name
    await admin.delete(TenancyPolicy, name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def privileged_users(admin: AsyncClient) -> AsyncIterator[None]:
    """CONTROLLER and MALLORY are cluster admins by RBAC: only admission can stop them."""
    name = f"kftenancy-it-admins-{_uid()}"
    await admin.create(
        codecs.from_dict(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}
                    for u in (CONTROLLER, MALLORY)
                ],
            }
        )
    )
    yield
    await admin.delete(ClusterRoleBinding, name)


@pytest.fixture(scope="module")
def serving(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return cluster.serving_cert(f"kftenancy-webhook-{_uid()}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def webhook(
    cluster: LocalCluster,
    admin: AsyncClient,
    policy_name: str,
    privileged_users: None,
    serving: Any,
) -> AsyncIterator[Registered]:
    settings = WebhookSettings(
        cert_file=serving.cert_file,
        key_file=serving.key_file,
        host="127.0.0.1",
        port=0,
        policy_name=policy_name,
    )
    # A namespace that predates the webhook: it has no whitelist annotation.
    await admin.create(_ns(PREEXISTING))
    reg = await _register(cluster, admin, settings, serving.ca_pem)
    assert reg.server.policy.data_lake.audience == AUDIENCE  # read from the cluster
    yield reg
    await _unregister(admin, reg)
    await admin.delete(Namespace, PREEXISTING)


@pytest_asyncio.fixture(loop_scope="session")
async def controller(webhook: Registered, user_client: Any) -> AsyncClient:
    client: AsyncClient = user_client(CONTROLLER)
    return client


@pytest_asyncio.fixture(loop_scope="session")
async def mallory(webhook: Registered, user_client: Any) -> AsyncClient:
    client: AsyncClient = user_client(MALLORY)
    return client


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(controller: AsyncClient, admin: AsyncClient) -> AsyncIterator[str]:
    name = f"tenant-{_uid()}"
    await controller.create(_ns(name, {c.LABEL_TENANT: name}))
    yield name
    await admin.delete(Namespace, name)


@pytest.fixture(scope="module")
def ptr_off_cluster() -> Iterator[LocalCluster]:
    lab = LocalCluster(disable_admission_plugins=["PodTolerationRestriction"])
    try:
        lab.start()
    except ControlPlaneError as err:
        pytest.fail(f"the second control plane could not start:\n{err}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ptr_off(ptr_off_cluster: LocalCluster) -> AsyncIterator[tuple[Registered, AsyncClient]]:
    assert "PodTolerationRestriction" not in ptr_off_cluster.enabled_plugins
    admin = _client(ptr_off_cluster.admin_kubeconfig)
    cert = ptr_off_cluster.serving_cert("kftenancy-webhook")
    policy_file = ptr_off_cluster.workdir / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"spec": POLICY_SPEC}))
    settings = WebhookSettings(
        cert_file=cert.cert_file,
        key_file=cert.key_file,
        host="127.0.0.1",
        port=0,
        policy_file=policy_file,
    )
    reg = await _register(ptr_off_cluster, admin, settings, cert.ca_pem)
    yield reg, admin
    await _unregister(admin, reg)
    await admin.close()


# ---------------------------------------------------------------- namespaces


async def test_tenant_namespace_has_the_toleration_in_the_create_response(
    controller: AsyncClient, admin: AsyncClient
) -> None:
    name = f"tenant-{_uid()}"
    created = await controller.create(_ns(name, {c.LABEL_TENANT: name}))
    try:
        annotations = created.metadata.annotations or {}
        assert json.loads(annotations[c.ANN_DEFAULT_TOLERATIONS]) == [GPU_TOLERATION]
        assert c.ANN_TOLERATIONS_WHITELIST not in annotations
    finally:
        await admin.delete(Namespace, name)


async def test_stripping_the_tenant_toleration_is_corrected(
    tenant: str, mallory: AsyncClient
) -> None:
    patch = {"metadata": {"annotations": {c.ANN_DEFAULT_TOLERATIONS: None}}}
    after = await mallory.patch(Namespace, tenant, patch, patch_type=PatchType.MERGE)
    assert json.loads((after.metadata.annotations or {})[c.ANN_DEFAULT_TOLERATIONS]) == [
        GPU_TOLERATION
    ]
    patch = {"metadata": {"annotations": {c.ANN_DEFAULT_TOLERATIONS: "[]"}}}
    after = await mallory.patch(Namespace, tenant, patch, patch_type=PatchType.MERGE)
    assert json.loads((after.metadata.annotations or {})[c.ANN_DEFAULT_TOLERATIONS]) == [
        GPU_TOLERATION
    ]


async def test_only_kftenancy_may_manage_the_tenant_label(
    tenant: str, mallory: AsyncClient, admin: AsyncClient
) -> None:
    with pytest.raises(ApiError) as err:
        await mallory.create(_ns(f"sneaky-{_uid()}", {c.LABEL_TENANT: "sneaky"}))
    assert err.value.status.code == 403
    assert "namespaces.validate.kftenancy.dev" in str(err.value.status.message)
    assert "only kftenancy may manage it" in str(err.value.status.message)
    patch = {"metadata": {"labels": {c.LABEL_TENANT: None}}}
    for client in (mallory, admin):  # system:masters is not kftenancy either
        with pytest.raises(ApiError) as err:
            await client.patch(Namespace, tenant, patch, patch_type=PatchType.MERGE)
        assert "remove it" in str(err.value.status.message)
    # Other label changes never reach the Fail webhook (matchConditions) and pass.
    labelled = await mallory.patch(
        Namespace, tenant, {"metadata": {"labels": {"team": "ml"}}}, patch_type=PatchType.MERGE
    )
    assert (labelled.metadata.labels or {})[c.LABEL_TENANT] == tenant


async def test_other_namespace_gets_the_whitelist(
    webhook: Registered, namespace: str, admin: AsyncClient
) -> None:
    ns = await admin.get(Namespace, namespace)
    whitelist = json.loads((ns.metadata.annotations or {})[c.ANN_TOLERATIONS_WHITELIST])
    assert {t["key"] for t in whitelist} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/memory-pressure",
    }


# ---------------------------------------------------------------- pods


async def test_non_tenant_gpu_pod_is_rejected_with_ptr_on(
    webhook: Registered, namespace: str, admin: AsyncClient
) -> None:
    for toleration in ({"operator": "Exists"}, GPU_TOLERATION):
        with pytest.raises(ApiError) as err:
            await admin.create(_pod(namespace, f"p-{_uid()}", tolerations=[toleration]))
        # PodTolerationRestriction validates inside its own mutating step, before any
        # webhook: the whitelist our webhook put on the namespace rejects the pod (the
        # plugin answers with an HTTP 500 and its own words; with the plugin off, our
        # validating webhook answers 403 with our reason, see the next test).
        assert "conflict with its namespace whitelist" in str(err.value.status.message)


async def test_gpu_pod_in_a_namespace_older_than_the_webhook_is_rejected_by_us_with_ptr_on(
    webhook: Registered, admin: AsyncClient
) -> None:
    ns = await admin.get(Namespace, PREEXISTING)
    assert c.ANN_TOLERATIONS_WHITELIST not in (ns.metadata.annotations or {})
    with pytest.raises(ApiError) as err:
        await admin.create(_pod(PREEXISTING, "gpu", tolerations=[{"operator": "Exists"}]))
    message = str(err.value.status.message)
    assert err.value.status.code == 403, message
    assert 'admission webhook "pods.validate.kftenancy.dev" denied the request' in message
    assert "tolerates the GPU taint workload=ai-ml:NoSchedule" in message


async def test_non_tenant_gpu_pod_is_rejected_by_us_with_ptr_off(
    ptr_off: tuple[Registered, AsyncClient],
) -> None:
    _, admin = ptr_off
    name = f"team-{_uid()}"
    await admin.create(_ns(name))
    for toleration in ({"operator": "Exists"}, {"key": "workload", "operator": "Exists"}):
        with pytest.raises(ApiError) as err:
            await admin.create(_pod(name, f"p-{_uid()}", tolerations=[toleration]))
        message = str(err.value.status.message)
        assert err.value.status.code == 403
        assert 'admission webhook "pods.validate.kftenancy.dev" denied the request' in message
        assert "tolerates the GPU taint workload=ai-ml:NoSchedule" in message
    harmless = {"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    assert await admin.create(_pod(name, f"p-{_uid()}", tolerations=[harmless]))
    await admin.delete(Namespace, name)


async def test_tenant_pod_gets_the_toleration_from_us_with_ptr_off(
    ptr_off: tuple[Registered, AsyncClient],
) -> None:
    reg, admin = ptr_off
    controller = _client(reg.cluster.kubeconfig_for(CONTROLLER))
    name = f"tenant-{_uid()}"
    await admin.create(
        codecs.from_dict(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"ctl-{name}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER}
                ],
            }
        )
    )
    try:
        await controller.create(_ns(name, {c.LABEL_TENANT: name}))
        created = await admin.create(_pod(name, "nb"))
        tolerations = [t.to_dict() for t in created.spec.tolerations or []]
        assert GPU_TOLERATION in tolerations
    finally:
        await controller.close()
        await admin.delete(ClusterRoleBinding, f"ctl-{name}")


async def test_tenant_pod_lands_on_a_fake_gpu_node(
    tenant: str, admin: AsyncClient, cluster: LocalCluster
) -> None:
    node = f"gpu-{_uid()}"
    await asyncio.to_thread(cluster.add_gpu_node, node, 1)
    try:
        created = await admin.create(
            _pod(
                tenant,
                "trainer",
                nodeSelector={"kubernetes.io/hostname": node},
                containers=[
                    {
                        "name": "main",
                        "image": "python:3.12",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ],
            )
        )
        gpu = [t for t in created.spec.tolerations or [] if t.key == "workload"]
        assert [t.to_dict() for t in gpu] == [GPU_TOLERATION]  # once, not twice (PTR + us)
        deadline = time.monotonic() + 60
        while True:
            pod = await admin.get(Pod, "trainer", namespace=tenant)
            if pod.spec.nodeName == node and pod.status and pod.status.phase == "Running":
                break
            assert time.monotonic() < deadline, f"pod not running on {node}: {pod.status}"
            await asyncio.sleep(0.3)
    finally:
        await admin.delete(Node, node)


async def test_seed_tolerations_work_unchanged_with_ptr_on(
    controller: AsyncClient, admin: AsyncClient, namespace: str
) -> None:
    name = f"seed-{_uid()}"
    created = await controller.create(
        _ns(name, {c.LABEL_TENANT: name}, **{c.ANN_DEFAULT_TOLERATIONS: SEED_DEFAULT})
    )
    try:
        assert (created.metadata.annotations or {})[c.ANN_DEFAULT_TOLERATIONS] == SEED_DEFAULT
        burstable = [{"name": "main", "image": "x", "resources": {"requests": {"cpu": "100m"}}}]
        pod = await admin.create(_pod(name, "nb", containers=burstable))
        keys = [t.key for t in pod.spec.tolerations or []]
        assert keys.count("workload") == 1
        assert "node.kubernetes.io/memory-pressure" in keys  # PTR is on and merged
        # A non-tenant namespace's whitelist admits every automatic toleration.
        plain = await admin.create(_pod(namespace, "plain", containers=burstable))
        plain_keys = {t.key for t in plain.spec.tolerations or []}
        assert {
            "node.kubernetes.io/memory-pressure",
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        } <= plain_keys
        assert "workload" not in plain_keys
    finally:
        await admin.delete(Namespace, name)


# ---------------------------------------------------------------- web identity


async def test_role_account_pod_gets_web_identity_and_the_token_verifies(
    tenant: str, controller: AsyncClient, admin: AsyncClient, cluster: LocalCluster
) -> None:
    sa = await controller.create(
        codecs.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default-editor", "namespace": tenant},
            }
        )
    )
    role = f"arn:aws:iam::000000000000:role/tenant-{tenant}"
    assert (sa.metadata.annotations or {})[c.ANN_ROLE_ARN] == role
    pod = _as_dict(
        await admin.create(
            _pod(
                tenant,
                "notebook",
                serviceAccountName="default-editor",
                securityContext={"runAsNonRoot": True, "runAsUser": 1000},
                initContainers=[{"name": "init", "image": "busybox"}],
            )
        )
    )
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == c.WEB_IDENTITY_VOLUME)
    token_source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert token_source == {"audience": AUDIENCE, "expirationSeconds": 3600, "path": "token"}
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AWS_ROLE_ARN"] == role
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{c.WEB_IDENTITY_TOKEN_DIR}/token"
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
        assert any(m["mountPath"] == c.WEB_IDENTITY_TOKEN_DIR for m in container["volumeMounts"])
    assert pod["spec"]["securityContext"]["fsGroup"] == 65534

    # No kubelet runs this pod, so ask for the token it would get: same audience, expiry,
    # bound to the pod.
    request = ServiceAccountToken(
        metadata=ObjectMeta(name="default-editor", namespace=tenant),
        spec=TokenRequestSpec(
            audiences=[AUDIENCE],
            expirationSeconds=token_source["expirationSeconds"],
            boundObjectRef=BoundObjectReference(
                kind="Pod", apiVersion="v1", name="notebook", uid=pod["metadata"]["uid"]
            ),
        ),
    )
    issued = await admin.create(request, "default-editor", namespace=tenant)
    assert isinstance(issued, TokenRequest) and issued.status is not None
    claims = await asyncio.to_thread(_verify, cluster, issued.status.token, AUDIENCE)
    assert claims["sub"] == f"system:serviceaccount:{tenant}:default-editor"
    assert claims["kubernetes.io"]["pod"]["name"] == "notebook"


def _verify(cluster: LocalCluster, token: str, audience: str) -> dict[str, Any]:
    """Verify like STS would: discovery document → JWKS → signature, iss, aud, exp."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    import urllib.request

    with urllib.request.urlopen(
        f"{cluster.issuer}/.well-known/openid-configuration", context=context
    ) as resp:
        discovery = json.load(resp)
    assert discovery["issuer"] == cluster.issuer
    keys = jwt.PyJWKClient(discovery["jwks_uri"], ssl_context=context)
    key = keys.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256", "ES256"], audience=audience, issuer=cluster.issuer
    )
    return claims


# ---------------------------------------------------------------- the shell


async def test_policy_changes_are_followed(
    webhook: Registered, policy_name: str, admin: AsyncClient, controller: AsyncClient
) -> None:
    spec = json.loads(json.dumps(POLICY_SPEC))
    spec["dataLake"]["roleArnTemplate"] = "arn:aws:iam::111111111111:role/{profile}-v2"
    await admin.patch(TenancyPolicy, policy_name, {"spec": spec}, patch_type=PatchType.MERGE)
    try:
        deadline = time.monotonic() + 15
        while (
            webhook.server.policy.data_lake.role_arn_template != spec["dataLake"]["roleArnTemplate"]
        ):
            assert time.monotonic() < deadline, "the webhook did not pick up the policy change"
            await asyncio.sleep(0.1)
        name = f"tenant-{_uid()}"
        await controller.create(_ns(name, {c.LABEL_TENANT: name}))
        sa = await controller.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default-editor", "namespace": name},
                }
            )
        )
        assert (sa.metadata.annotations or {})[
            c.ANN_ROLE_ARN
        ] == f"arn:aws:iam::111111111111:role/{name}-v2"
        await admin.delete(Namespace, name)
        # An edit the model refuses (unknown placeholder) leaves the last good policy.
        bad = {"spec": {"dataLake": {"roleArnTemplate": "arn:aws:iam::1:role/{user}"}}}
        await admin.patch(TenancyPolicy, policy_name, bad, patch_type=PatchType.MERGE)
        deadline = time.monotonic() + 15
        while webhook.server.policy_error is None:
            assert time.monotonic() < deadline, "the webhook never saw the invalid policy"
            await asyncio.sleep(0.1)
        assert "roleArnTemplate" in webhook.server.policy_error
        assert webhook.server.policy.data_lake.role_arn_template.endswith("{profile}-v2")
    finally:
        await admin.patch(
            TenancyPolicy, policy_name, {"spec": POLICY_SPEC}, patch_type=PatchType.MERGE
        )
        deadline = time.monotonic() + 15
        while webhook.server.policy != load_policy({"spec": POLICY_SPEC}):
            assert time.monotonic() < deadline, "the webhook did not pick up the restored policy"
            await asyncio.sleep(0.1)


async def test_health_readiness_and_metrics(
    webhook: Registered, mallory: AsyncClient, serving: Any
) -> None:
    with pytest.raises(ApiError):
        await mallory.create(_ns(f"sneaky-{_uid()}", {c.LABEL_TENANT: "x"}))
    context = ssl.create_default_context(cadata=serving.ca_pem.decode())
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(webhook.url + path, ssl=context) as resp:
                assert resp.status == 200, path
        async with http.get(webhook.url + "/metrics", ssl=context) as resp:
            text = await resp.text()
        async with http.post(webhook.url + "/validate", data=b"{", ssl=context) as resp:
            assert resp.status == 200
            assert (await resp.json())["response"]["allowed"] is False
    assert 'kftenancy_webhook_denials_total{reason="tenant_label"}' in text
    assert "kftenancy_webhook_request_duration_seconds_bucket" in text
    assert 'kftenancy_webhook_cached_objects{kind="namespaces"}' in text
    assert "kftenancy_webhook_policy_valid 1.0" in text
    assert (
        'kftenancy_webhook_requests_total{allowed="true",endpoint="mutate",kind="Namespace"' in text
    )


def _peer_serial(port: int, ca_pem: bytes) -> int:
    from cryptography import x509

    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_rotated_certificate_is_served_without_restart(
    webhook: Registered, cluster: LocalCluster, serving: Any, admin: AsyncClient
) -> None:
    from cryptography import x509

    before = await asyncio.to_thread(_peer_serial, webhook.server.port, serving.ca_pem)
    fresh = cluster.serving_cert(f"kftenancy-webhook-rotated-{_uid()}")
    serving.cert_file.write_bytes(fresh.cert_file.read_bytes())
    serving.key_file.write_bytes(fresh.key_file.read_bytes())
    assert webhook.server.reload_certificate_now()
    after = await asyncio.to_thread(_peer_serial, webhook.server.port, serving.ca_pem)
    assert after != before
    assert after == x509.load_pem_x509_certificate(fresh.cert_file.read_bytes()).serial_number
    probe = await admin.create(_ns(f"probe-{_uid()}"), dry_run=True)  # API server still calls us
    assert c.ANN_TOLERATIONS_WHITELIST in (probe.metadata.annotations or {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_cli_serves_from_environment_and_stops_on_sigterm(
    cluster: LocalCluster, serving: Any, policy_name: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "KFTENANCY_WEBHOOK_TLS_CERT_FILE": str(serving.cert_file),
        "KFTENANCY_WEBHOOK_TLS_KEY_FILE": str(serving.key_file),
        "KFTENANCY_WEBHOOK_HOST": "127.0.0.1",
        "KFTENANCY_WEBHOOK_PORT": str(port),
        "KFTENANCY_KUBECONFIG": str(cluster.admin_kubeconfig),
        "KFTENANCY_POLICY_NAME": policy_name,
    }
    log_path = tmp_path / "webhook.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "kftenancy"),
            "run",
            "webhook",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        context = ssl.create_default_context(cadata=serving.ca_pem.decode())
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"https://127.0.0.1:{port}/readyz", ssl=context) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.returncode is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        text = log_path.read_text()
        assert "settings:" in text and f"TenancyPolicy/{policy_name}" in text
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_without_the_policy_crd_the_seed_defaults_apply(
    ptr_off_cluster: LocalCluster,
) -> None:
    cert = ptr_off_cluster.serving_cert("kftenancy-webhook-defaults")
    settings = WebhookSettings(
        cert_file=cert.cert_file, key_file=cert.key_file, host="127.0.0.1", port=0
    )
    server = WebhookServer(settings, _client(ptr_off_cluster.admin_kubeconfig))
    await server.start()
    try:
        await server.wait_ready(30)
        assert server.policy == TenancyPolicySpec()
    finally:
        await server.stop()


async def test_webhook_down_blocks_only_what_could_break_isolation(
    ptr_off: tuple[Registered, AsyncClient],
) -> None:
    """The documented failure modes (docs/admission.md), with the webhook stopped and its
    configurations still registered; runs last on this cluster and restarts the server."""
    reg, admin = ptr_off
    cluster, port = reg.cluster, reg.server.port
    binding = f"ctl-outage-{_uid()}"
    await admin.create(
        codecs.from_dict(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": binding},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER}
                ],
            }
        )
    )
    controller = _client(cluster.kubeconfig_for(CONTROLLER))
    await reg.server.stop()
    try:
        # Ignore rules: namespaces and ordinary pods are still admitted (unannotated).
        name = f"outage-{_uid()}"
        created = await admin.create(_ns(name))
        assert c.ANN_TOLERATIONS_WHITELIST not in (created.metadata.annotations or {})
        assert await admin.create(_pod(name, "plain"))
        team = {"key": "team", "operator": "Exists"}  # never reaches the Fail webhook
        assert await admin.create(_pod(name, "team", tolerations=[team]))
        # Fail rules: what could break isolation is refused until the webhook is back.
        with pytest.raises(ApiError) as err:
            await admin.create(_pod(name, "gpu", tolerations=[{"operator": "Exists"}]))
        assert 'failed calling webhook "pods.validate.kftenancy.dev"' in str(err.value)
        patch = {"metadata": {"labels": {c.LABEL_TENANT: name}}}
        with pytest.raises(ApiError) as err:
            await admin.patch(Namespace, name, patch, patch_type=PatchType.MERGE)
        assert 'failed calling webhook "namespaces.validate.kftenancy.dev"' in str(err.value)
        # ... except for kftenancy itself, which the configuration lets through.
        labelled = await controller.patch(Namespace, name, patch, patch_type=PatchType.MERGE)
        assert (labelled.metadata.labels or {})[c.LABEL_TENANT] == name
    finally:
        await controller.close()
        await admin.delete(ClusterRoleBinding, binding)
        settings = dataclasses.replace(reg.server.settings, port=port)
        reg.server = WebhookServer(settings, _client(cluster.admin_kubeconfig))
        await reg.server.start()
