"""The local control plane behaves like a real cluster where kftenancy depends on it:
RBAC and SubjectAccessReview, server-side apply ownership, TokenRequest JWTs verifiable
through the issuer's discovery documents, PodTolerationRestriction, admission webhooks
over TLS, and scheduling onto fake GPU nodes."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount

from kftenancy.constants import (
    ANN_DEFAULT_TOLERATIONS,
    ANN_TOLERATIONS_WHITELIST,
    FIELD_MANAGER,
)
from kftenancy.lab.cluster import ADMIN_USER, LocalCluster
from kftenancy.lab.processes import free_port
from kftenancy.policy import GPU

UserClient = Callable[..., AsyncClient]

T = TypeVar("T")


def obj(doc: dict[str, Any]) -> Any:
    return codecs.from_dict(doc)


def rolebinding(namespace: str, name: str, role_kind: str, role: str, user: str) -> Any:
    return obj(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )


async def sar_allowed(
    client: AsyncClient, user: str, groups: list[str], verb: str, resource: str, namespace: str
) -> bool:
    review = await client.create(
        obj(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": verb,
                        "resource": resource,
                    },
                },
            }
        )
    )
    return bool(review.status.allowed)


async def until_rbac_allows(call: Callable[[], Awaitable[T]], within: float = 15.0) -> T:
    """Retry `call` while it is refused with 403: the RBAC authorizer reads bindings from an
    informer cache, so a new binding takes effect a few milliseconds after it is created."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await call()
        except ApiError as err:
            if err.status.code != 403 or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def test_ordinary_user_is_denied_what_rbac_does_not_grant_and_sar_agrees(
    admin: AsyncClient, user_client: UserClient, namespace: str
) -> None:
    user, groups = "alice@example.com", ["team-a"]
    alice = user_client(user, groups)
    with pytest.raises(ApiError) as denied:
        await alice.get(ConfigMap, "kube-root-ca.crt", namespace=namespace)
    assert denied.value.status.code == 403

    await admin.create(rolebinding(namespace, "alice-view", "ClusterRole", "view", user))
    # `view` grants reading ConfigMaps but not Secrets, as soon as the binding is seen.
    cm = await until_rbac_allows(
        lambda: alice.get(ConfigMap, "kube-root-ca.crt", namespace=namespace)
    )
    assert cm.data is not None and "ca.crt" in cm.data
    with pytest.raises(ApiError) as still_denied:
        _ = [s async for s in alice.list(Secret, namespace=namespace)]
    assert still_denied.value.status.code == 403

    # A SubjectAccessReview by a delegated authorizer (not system:masters) agrees.
    checker_name = "authz-checker"
    await admin.create(
        obj(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{namespace}-checker"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:auth-delegator",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": checker_name}
                ],
            }
        )
    )
    checker = user_client(checker_name)
    allowed = await until_rbac_allows(
        lambda: sar_allowed(checker, user, groups, "get", "configmaps", namespace)
    )
    assert allowed is True
    assert await sar_allowed(checker, user, groups, "list", "secrets", namespace) is False
    assert await sar_allowed(checker, user, groups, "delete", "pods", namespace) is False
    # ... and the user without the SAR permission cannot ask.
    with pytest.raises(ApiError) as no_sar:
        await sar_allowed(alice, user, groups, "get", "configmaps", namespace)
    assert no_sar.value.status.code == 403


async def test_server_side_apply_conflicts_on_foreign_fields_and_force_takes_ownership(
    admin: AsyncClient, namespace: str
) -> None:
    def cm(value: str) -> Any:
        return obj(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "owned", "namespace": namespace},
                "data": {"key": value},
            }
        )

    created = await admin.apply(cm("ours"), field_manager=FIELD_MANAGER)
    assert created.data == {"key": "ours"}

    with pytest.raises(ApiError) as conflict:
        await admin.apply(cm("theirs"), field_manager="someone-else")
    assert conflict.value.status.code == 409
    assert "conflict" in (conflict.value.status.message or "").lower()

    taken = await admin.apply(cm("theirs"), field_manager="someone-else", force=True)
    assert taken.data == {"key": "theirs"}

    with pytest.raises(ApiError) as our_conflict:
        await admin.apply(cm("ours"), field_manager=FIELD_MANAGER)
    assert our_conflict.value.status.code == 409

    back = await admin.apply(cm("ours again"), field_manager=FIELD_MANAGER, force=True)
    assert back.data == {"key": "ours again"}
    owners = {
        m.manager
        for m in back.metadata.managedFields or []
        if "f:key" in json.dumps(m.fieldsV1 or {})
    }
    assert owners == {FIELD_MANAGER}


async def test_token_request_jwt_verifies_against_the_issuer_jwks(
    admin: AsyncClient, cluster: LocalCluster, namespace: str
) -> None:
    await admin.create(
        obj(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "runner", "namespace": namespace},
            }
        )
    )
    audience = "sts.kftenancy.test"
    token_request = await admin.create(
        ServiceAccount.Token(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(audiences=[audience], expirationSeconds=600),
        ),
        "runner",
        namespace=namespace,
    )
    token = token_request.status.token

    # The discovery documents are public (what an STS does): no client certificate.
    tls = ssl.create_default_context(cafile=str(cluster.ca_file))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.issuer}/.well-known/openid-configuration", ssl=tls) as r:
            assert r.status == 200
            discovery = await r.json(content_type=None)
        assert discovery["issuer"] == cluster.issuer
        assert discovery["jwks_uri"] == f"{cluster.issuer}/openid/v1/jwks"
        async with http.get(discovery["jwks_uri"], ssl=tls) as r:
            assert r.status == 200
            jwks = jwt.PyJWKSet.from_dict(await r.json(content_type=None))

    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer=cluster.issuer
    )
    assert claims["sub"] == f"system:serviceaccount:{namespace}:runner"
    assert claims["exp"] - claims["iat"] == 600
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.key, algorithms=["RS256"], audience="someone-else")
    # The signature is really checked: another key does not verify it.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["RS256"], audience=audience)


def pod(
    name: str,
    namespace: str,
    tolerations: list[dict[str, Any]] | None = None,
    gpus: int = 0,
    node: str | None = None,
) -> Any:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/kftenancy/test:1"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec: dict[str, Any] = {"containers": [container]}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return obj(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


async def test_pod_toleration_restriction_enforces_whitelist_and_merges_defaults(
    admin: AsyncClient, namespace: str
) -> None:
    gpu = GPU()
    gpu_toleration = gpu.taint.toleration().manifest()
    whitelist = [t.manifest() for t in gpu.allowed_tolerations] + [gpu_toleration]
    await admin.patch(
        Namespace,
        namespace,
        {
            "metadata": {
                "annotations": {
                    ANN_TOLERATIONS_WHITELIST: json.dumps(whitelist),
                    ANN_DEFAULT_TOLERATIONS: json.dumps([gpu_toleration]),
                }
            }
        },
    )

    outside = {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}
    with pytest.raises(ApiError) as rejected:
        await admin.create(pod("outside", namespace, [outside]))
    # The plugin returns a plain error, which the API server reports as 500 (not 403).
    assert rejected.value.status.code == 500
    assert "conflict with its namespace whitelist" in (rejected.value.status.message or "")

    accepted = await admin.create(pod("inside", namespace))
    tolerations = [t.to_dict() for t in accepted.spec.tolerations or []]
    assert gpu_toleration in tolerations


async def test_mutating_webhook_over_tls_is_called_by_the_api_server(
    admin: AsyncClient, cluster: LocalCluster, namespace: str
) -> None:
    calls: list[dict[str, Any]] = []

    async def mutate(request: web.Request) -> web.Response:
        review = await request.json()
        calls.append(review["request"])
        patch = [{"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "webhook"}}]
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        )

    cert = cluster.serving_cert("webhook")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.cert_file, cert.key_file)
    app = web.Application()
    app.router.add_post("/mutate", mutate)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    name = f"{namespace}-webhook"

    try:
        await admin.create(
            obj(
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfiguration",
                    "metadata": {"name": name},
                    "webhooks": [
                        {
                            "name": "mutate.kftenancy.test",
                            "clientConfig": {
                                "url": f"https://127.0.0.1:{port}/mutate",
                                "caBundle": base64.b64encode(cert.ca_pem).decode(),
                            },
                            "rules": [
                                {
                                    "apiGroups": [""],
                                    "apiVersions": ["v1"],
                                    "operations": ["CREATE"],
                                    "resources": ["configmaps"],
                                }
                            ],
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": namespace}
                            },
                            "sideEffects": "None",
                            "admissionReviewVersions": ["v1"],
                            "failurePolicy": "Fail",
                            "timeoutSeconds": 5,
                        }
                    ],
                }
            )
        )
        # The API server picks new webhook configurations up asynchronously.
        labels: dict[str, str] = {}
        for attempt in range(100):
            created = await admin.create(
                obj(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": f"probe-{attempt}", "namespace": namespace},
                    }
                )
            )
            labels = created.metadata.labels or {}
            if labels:
                break
            await asyncio.sleep(0.1)
        assert labels == {"mutated-by": "webhook"}
        assert calls and calls[-1]["namespace"] == namespace
        assert calls[-1]["userInfo"]["username"] == ADMIN_USER
    finally:
        await admin.delete(MutatingWebhookConfiguration, name)
        await runner.cleanup()


async def wait_for_pod(
    admin: AsyncClient, name: str, namespace: str, done: Callable[[Any], bool], seconds: float = 60
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        current = await admin.get(Pod, name, namespace=namespace)
        if done(current) or loop.time() > deadline:
            return current
        await asyncio.sleep(0.2)


async def test_gpu_pod_with_toleration_runs_on_fake_gpu_node_and_one_without_stays_pending(
    admin: AsyncClient, cluster: LocalCluster, namespace: str
) -> None:
    node_name = f"gpu-{uuid.uuid4().hex[:8]}"
    node = await asyncio.to_thread(cluster.add_gpu_node, node_name, 2)
    assert node.status.capacity["nvidia.com/gpu"] == "2"
    toleration = GPU().taint.toleration().manifest()
    try:
        await check_gpu_scheduling(admin, namespace, node_name, toleration)
    finally:
        await admin.delete(Node, node_name)


async def check_gpu_scheduling(
    admin: AsyncClient, namespace: str, node_name: str, toleration: dict[str, Any]
) -> None:
    # Both pods may only go to this node; only the taint can keep one of them off it.
    await admin.create(pod("tolerates", namespace, [toleration], gpus=1, node=node_name))
    await admin.create(pod("intolerant", namespace, None, gpus=1, node=node_name))

    running = await wait_for_pod(
        admin, "tolerates", namespace, lambda p: p.status.phase == "Running"
    )
    assert running.spec.nodeName == node_name
    assert running.status.phase == "Running"

    def unschedulable(p: Any) -> bool:
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in p.status.conditions or []
        )

    pending = await wait_for_pod(admin, "intolerant", namespace, unschedulable)
    assert pending.status.phase == "Pending"
    assert unschedulable(pending), pending.status
    assert not pending.spec.nodeName


async def test_bundled_crds_are_served(admin: AsyncClient) -> None:
    from lightkube.generic_resource import (
        async_load_in_cluster_generic_resources,
        get_generic_resource,
    )

    from kftenancy.lab.crds import bundled_crds

    await async_load_in_cluster_generic_resources(admin)
    crds = bundled_crds()
    assert crds, "no CRDs bundled: src/kftenancy/data/crds/thirdparty is empty"
    for crd in crds:
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("storage"))
        resource = get_generic_resource(f"{spec['group']}/{version}", spec["names"]["kind"])
        assert resource is not None, crd["metadata"]["name"]
        if spec["scope"] == "Namespaced":
            items = [i async for i in admin.list(resource, namespace="default")]
        else:
            items = [i async for i in admin.list(resource)]
        assert isinstance(items, list)
