"""Fuzzing Profiles: specs through the real API server and the controller's parsing and
rendering, and user ids through the gateway's just-in-time onboarding.

Profile specs (mutations of valid Profiles): the real kube-apiserver (server-side dry
run against the Profile CRD) accepts them or answers a 4xx with a message; an accepted
one is parsed by `parse_profile` (the controller's path) into a Profile or a
ProfileError naming the field; a parsed one renders (`tenant_objects`) or fails with the
errors the controller turns into `RenderFailed`; and the rendered Namespace (labels and
annotations derived from the owner) is accepted by the API server (dry run).

User ids (arbitrary text, sent as the login proxy's header through the gateway in
ext-authz mode, onboarding on): every answer is 200 or a 4xx with a reason, never a 5xx;
every 200 carries the user, and that user's Profile exists afterwards (onboarding never
failed silently).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from fuzz_support import budget, fuzz_rounds, mutations
from hypothesis import strategies as st
from lightkube import ApiError, AsyncClient, Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import LoadResourceError
from lightkube.generic_resource import create_global_resource
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.errors import KftenancyError
from kftenancy.gateway.limits import FloodLimits, Rate
from kftenancy.gateway.signer import KeyRing, SigningKey
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.naming import profile_name
from kftenancy.onboarding import ensure_profile
from kftenancy.policy import load_policy
from kftenancy.profile import ProfileError, parse_profile
from kftenancy.render.profile import profile_for_user
from kftenancy.render.tenant import tenant_objects
from kftenancy.servers.gateway import Gateway, GatewayServer, KubeReviewer, server_ssl_context

ProfileResource = create_global_resource(c.KUBEFLOW_GROUP, "v1", c.PROFILE_KIND, c.PROFILE_PLURAL)
POLICY = load_policy(
    {
        "platform": {"flavor": "kubernetes"},
        "identity": {
            "methods": ["trustedProxy"],
            "onboarding": ["gateway"],
            "authorization": {"rule": {"verb": "get", "resource": "pods", "namespace": "kubeflow"}},
        },
    }
)
PROXY_SECRET = "fuzz-proxy-secret"
GATEWAY_USER = "kftenancy-gateway-fuzz"
GROUP = "fuzz-onboarding"


def _seeds() -> list[dict[str, Any]]:
    plain = profile_for_user(POLICY, "alice@example.com")
    full = profile_for_user(POLICY, "CN=Bob,OU=ML,DC=corp")
    full["spec"] |= {
        "contributors": [
            {"kind": "User", "name": "carol@example.com", "role": "edit"},
            {"kind": "Group", "name": "ml-team", "role": "view"},
        ],
        "resourceQuotaSpec": {"hard": {"cpu": "8", "requests.nvidia.com/gpu": 2}},
        "plugins": [{"kind": "WorkloadIdentity", "spec": {"gcpServiceAccount": "x"}}],
    }
    group_owned = profile_for_user(POLICY, "team-a")
    group_owned["spec"]["owner"] = {"kind": "Group", "name": "team-a"}
    return [plain, full, group_owned]


SEEDS = _seeds()
KEYS = [
    "owner",
    "kind",
    "name",
    "role",
    "contributors",
    "resourceQuotaSpec",
    "hard",
    "scopes",
    "plugins",
    "spec",
    "labels",
    "annotations",
    c.ANN_USER_ID,
    c.ANN_CONTRIBUTORS,
]


async def test_fuzzed_profile_specs_are_refused_with_a_reason_or_render(
    cluster: LocalCluster,
) -> None:
    client = Client(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    stats = {"api-refused": 0, "invalid-spec": 0, "render-failed": 0, "rendered": 0}

    def check(doc: Any) -> None:
        try:
            stored = client.create(codecs.from_dict(doc), dry_run=True)
        except (
            ApiError,
            LoadResourceError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
        ) as err:
            if isinstance(err, ApiError):
                code = err.status.code or 0
                assert 400 <= code < 500 and err.status.message, err.status
            stats["api-refused"] += 1  # (or not even a Kubernetes object: the client refused)
            return
        obj = stored.to_dict()
        try:
            profile = parse_profile(obj)
        except ProfileError as err:
            stats["invalid-spec"] += 1
            assert str(err).startswith("profile"), err
            return
        try:
            objects = tenant_objects(POLICY, profile)
        except (KftenancyError, ValueError, ValidationError) as err:
            stats["render-failed"] += 1
            assert str(err), err
            return
        stats["rendered"] += 1
        namespace = objects[0]
        assert namespace["kind"] == "Namespace"
        try:
            client.create(codecs.from_dict(namespace), dry_run=True)
        except ApiError as err:
            if err.status.code != 409:  # (exists: a seed's namespace may be real)
                raise AssertionError(
                    f"the rendered Namespace is refused: {err.status.message}"
                ) from None

    try:
        n = await asyncio.to_thread(
            fuzz_rounds, "profiles", mutations(SEEDS, KEYS), check, budget(20)
        )
    finally:
        client.close()
    print(f"fuzz profiles outcomes: {stats}")
    assert n > 0 and stats["rendered"] and stats["api-refused"], stats


# ------------------------------------------------------------------ onboarding


async def _apply(admin: AsyncClient, obj: dict[str, Any]) -> None:
    await admin.apply(codecs.from_dict(obj), field_manager="kftenancy-test", force=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    cluster: LocalCluster, admin: AsyncClient
) -> AsyncIterator[tuple[Gateway, int, ssl.SSLContext]]:
    suffix = uuid.uuid4().hex[:6]
    rbac = "rbac.authorization.k8s.io"
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"fuzz-gateway-{suffix}"},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": GATEWAY_USER}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"fuzz-onboarding-{suffix}"},
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
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"fuzz-onboarding-{suffix}"},
            "roleRef": {
                "apiGroup": rbac,
                "kind": "ClusterRole",
                "name": f"fuzz-onboarding-{suffix}",
            },
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": GATEWAY_USER}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": {"name": f"fuzz-pod-reader-{suffix}", "namespace": "kubeflow"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"fuzz-pod-reader-{suffix}", "namespace": "kubeflow"},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": f"fuzz-pod-reader-{suffix}"},
            "subjects": [{"apiGroup": rbac, "kind": "Group", "name": GROUP}],
        },
    ):
        await _apply(admin, obj)
    gw_client = AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_for(GATEWAY_USER)), trust_env=False
    )
    reviewer = KubeReviewer(gw_client)
    kube = Kube(gw_client)

    async def onboard(user_id: str) -> object:
        return await ensure_profile(kube, POLICY, user_id, source="gateway")

    gw = Gateway(
        POLICY,
        keyring=KeyRing(SigningKey.generate()),
        reviewer=reviewer,
        onboard=onboard,
        proxy_secret=PROXY_SECRET,
        limits=FloodLimits(onboarding_global=Rate(10_000, 10_000)),
    )
    tls = cluster.serving_cert("gateway-fuzz")
    runner = GatewayServer(gw, "ext-authz").runner()
    await runner.setup()
    from aiohttp import web

    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_ssl_context(tls.cert_file, tls.key_file)
    )
    await site.start()
    try:
        yield (
            gw,
            int(runner.addresses[0][1]),
            ssl.create_default_context(cafile=str(cluster.ca_file)),
        )
    finally:
        await runner.cleanup()
        await reviewer.close()
        await gw_client.close()


user_ids = st.one_of(
    st.text(min_size=0, max_size=80),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=600),
    st.sampled_from(
        [
            "system:admin",
            "Alice.Smith@Example.com",
            "CN=Bob,OU=ML,DC=corp",
            " x ",
            "a" * 512,
            "a" * 513,
            "admin",
            "kube-system",
            "default",
            "-",
            "é" * 70,
        ]
    ),
)


async def test_fuzzed_user_ids_are_onboarded_or_refused_with_a_reason(
    gateway: tuple[Gateway, int, ssl.SSLContext], admin: AsyncClient
) -> None:
    gw, port, ca = gateway
    seen_users: set[str] = set()
    stats: dict[int, int] = {}
    conn: list[http.client.HTTPSConnection] = []

    def check(user: str) -> None:
        if not conn:
            conn.append(http.client.HTTPSConnection("127.0.0.1", port, context=ca, timeout=30))
        c0 = conn[0]
        raw = user.encode("utf-8", "surrogatepass")
        if b"\r" in raw or b"\n" in raw or b"\x00" in raw:
            return  # not expressible as an HTTP header value
        c0.putrequest("GET", "/check/")
        c0.putheader("x-kftenancy-proxy-secret", PROXY_SECRET)
        c0.putheader("x-forwarded-user", raw)
        c0.putheader("x-forwarded-groups", GROUP)
        c0.endheaders()
        r = c0.getresponse()
        body = r.read().decode("utf-8", "replace")
        stats[r.status] = stats.get(r.status, 0) + 1
        if r.status == 400 and "Bad Request" in body and ":" not in body.split("\n")[0]:
            c0.close()
            conn.clear()  # aiohttp refused the header itself (its 400) and closed
            return
        assert r.status in (200, 302, 400, 401, 403), (r.status, body)
        if r.status != 200:
            reason, _, detail = body.partition(": ")
            assert reason and detail.strip(), body
            return
        served = r.getheader("kubeflow-userid")
        assert served, "allowed without a user"
        seen_users.add(served)

    n = await asyncio.to_thread(fuzz_rounds, "onboarding", user_ids, check, budget(20))
    print(f"fuzz onboarding statuses: {stats}, {len(seen_users)} users onboarded")
    assert n > 0 and stats.get(200)
    errors = sum(
        s.value
        for m in gw.metrics.onboarded.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "error"
    )
    assert errors == 0, "onboarding failed for an allowed user (see the log)"
    assert gw.onboarder is not None
    onboarded = list(gw.onboarder.known._data)  # the users whose onboarding succeeded
    assert len(onboarded) >= len(seen_users) > 0
    names = {profile_name(POLICY, u) for u in onboarded}
    existing = {p.metadata.name async for p in admin.list(ProfileResource)}
    assert names <= existing
    for name in names:
        await admin.delete(ProfileResource, name)
