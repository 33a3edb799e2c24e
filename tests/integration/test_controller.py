"""The tenant controller against the real local control plane (no mocks).

The controller runs in-process (`Controller.run` in a task, kopf inside) with its own
TenancyPolicy object, so these tests do not depend on anything else in the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from lightkube import ApiError
from lightkube.resources.core_v1 import ConfigMap

from kftenancy import constants as c
from kftenancy.controllers.leader import LeaderElector
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.controllers.writelog import read_write_log
from kftenancy.kube import Kube, WriteCounter
from kftenancy.lab.cluster import LocalCluster
from kftenancy.onboarding import OnboardingError, ensure_profile, offboard
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.profile import parse_profile
from kftenancy.reconcile import drift, key_of
from kftenancy.render import profile_for_user, tenant_objects

T = TypeVar("T")
POLICY_API = f"{c.API_GROUP}/{c.API_VERSION}"


def uid() -> str:
    return uuid.uuid4().hex[:6]


async def eventually(
    check: Callable[[], Awaitable[T | None]], within: float = 30.0, what: str = ""
) -> T:
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while True:
        try:
            got = await check()
            if got:
                return got
            last = got
        except AssertionError as err:
            last = err
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within}s: {what} (last: {last})")
        await asyncio.sleep(0.1)


def configmap(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def policy_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "platform": {"kubeflowInstalled": False},
        "offboarding": {"retentionDays": 30},
        "identity": {"onboarding": ["gateway", "openshiftUsers"]},
    }
    spec.update(extra)
    return spec


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kube(cluster: LocalCluster) -> AsyncIterator[Kube]:
    k = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    yield k
    await k.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def policy_name(kube: Kube) -> AsyncIterator[str]:
    name = f"ctl-{uid()}"
    await kube.apply(
        {
            "apiVersion": POLICY_API,
            "kind": c.POLICY_KIND,
            "metadata": {"name": name},
            "spec": policy_spec(),
        }
    )
    yield name
    await kube.delete(POLICY_API, c.POLICY_KIND, name)


async def current_policy(kube: Kube, name: str) -> TenancyPolicySpec:
    obj = await kube.get(POLICY_API, c.POLICY_KIND, name)
    assert obj is not None
    return load_policy(obj)


@contextlib.asynccontextmanager
async def running(
    cluster: LocalCluster, policy_name: str, **settings: Any
) -> AsyncIterator[Controller]:
    ctl = Controller(
        ControllerSettings(
            kubeconfig=str(cluster.admin_kubeconfig),
            policy_name=policy_name,
            metrics_port=settings.pop("metrics_port", 0),
            leader_election=False,
            apply_platform=False,  # see the `controller` fixture
            resync_seconds=settings.pop("resync_seconds", 3600),
            **settings,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:
        await eventually(lambda: _ready(ctl, task), within=60, what="controller ready")
        yield ctl
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await ctl.kube.close()


async def _ready(ctl: Controller, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # raise what stopped it
        raise AssertionError("controller stopped")
    return ctl.ready.is_set()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def controller(
    cluster: LocalCluster, policy_name: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Controller]:
    # The write log names each write's object, so a test can single out its own tenants'
    # writes: the session's other modules may leave Profiles behind that this controller
    # then reconciles too (see tenant_writes).
    log = tmp_path_factory.mktemp("controller") / "writes.jsonl"
    async with running(cluster, policy_name, write_log=str(log)) as ctl:
        # Platform objects (the kubeflow-admin/edit/view ClusterRoles the access tests
        # need, RBAC, CRDs) once, without the webhook configurations: they point at an
        # in-cluster Service the lab does not have and would break every later write.
        # The mesh's namespace exists wherever Istio is installed (gateway policies go there).
        if await ctl.kube.get("v1", "Namespace", "istio-system") is None:
            await ctl.kube.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
            )
        try:
            assert await ctl.apply_platform() > 0
            assert await ctl.apply_platform() == 0  # in sync: nothing to write
        finally:
            for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                await ctl.kube.delete("admissionregistration.k8s.io/v1", kind, "kftenancy")
        yield ctl


async def profile(kube: Kube, name: str) -> dict[str, Any] | None:
    return await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)


async def ready_condition(kube: Kube, name: str) -> dict[str, Any] | None:
    p = await profile(kube, name)
    for cond in ((p or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return dict(cond)
    return None


async def wait_ready(kube: Kube, name: str, within: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        cond = await ready_condition(kube, name)
        return cond if cond and cond["status"] == "True" else None

    return await eventually(check, within, f"Profile {name} Ready")


async def wait_reason(kube: Kube, name: str, reason: str, within: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        cond = await ready_condition(kube, name)
        return cond if cond and cond["reason"] == reason else None

    return await eventually(check, within, f"Profile {name} reason {reason}")


async def desired_for(kube: Kube, policy_name: str, name: str) -> list[dict[str, Any]]:
    p = await profile(kube, name)
    assert p is not None
    return tenant_objects(await current_policy(kube, policy_name), parse_profile(p))


async def in_sync(kube: Kube, desired: list[dict[str, Any]]) -> bool:
    for obj in desired:
        meta = obj["metadata"]
        live = await kube.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        if live is None or drift(obj, live):
            return False
    return True


async def onboard(kube: Kube, policy_name: str, user: str) -> str:
    result = await ensure_profile(kube, await current_policy(kube, policy_name), user, source="cli")
    return result.name


async def settle(ctl: Controller, quiet: float = 1.0, within: float = 60) -> None:
    """Wait until the controller has made no writes for `quiet` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    last, since = ctl.kube.writes.total, asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - since < quiet:
        await asyncio.sleep(0.1)
        if ctl.kube.writes.total != last:
            last, since = ctl.kube.writes.total, asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() < deadline, "controller never settled"


def tenant_writes(ctl: Controller, names: list[str], since: int = 0) -> list[dict[str, Any]]:
    """The controller's writes (from line `since` of its write log) for these tenants: their
    namespace and everything in it, their Profile (and its status), Events about it."""
    assert ctl.write_log is not None, "the controller runs without a write log"
    lines = read_write_log(ctl.settings.write_log or "")[since:]
    mine = set(names)
    return [
        e
        for e in lines
        if e["what"] != "reconcile" and (e.get("namespace") in mine or e.get("name") in mine)
    ]


async def settle_tenants(ctl: Controller, names: list[str], quiet: float = 1.0) -> int:
    """Wait until the controller has made no writes for these tenants for `quiet` seconds
    (writes for other tenants may go on); the write log's length then."""
    deadline = asyncio.get_running_loop().time() + 60
    last, since = -1, asyncio.get_running_loop().time()
    while True:
        n = len(tenant_writes(ctl, names))
        if n != last:
            last, since = n, asyncio.get_running_loop().time()
        elif asyncio.get_running_loop().time() - since >= quiet:
            return len(read_write_log(ctl.settings.write_log or ""))
        assert asyncio.get_running_loop().time() < deadline, f"writes for {names} never stopped"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- tests


async def test_new_profile_becomes_a_ready_workspace_matching_the_renderer(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    name = await onboard(kube, policy_name, f"Alice.{uid()}@Example.com")
    cond = await wait_ready(kube, name)
    desired = await desired_for(kube, policy_name, name)
    assert len(desired) > 10 and cond["message"] == f"workspace complete: {len(desired)} objects"
    assert await in_sync(kube, desired)
    owned = await controller.reconciler.observe(name, desired)
    assert {key_of(o) for o in owned} == {key_of(o) for o in desired}
    p = await profile(kube, name)
    assert p is not None and c.FINALIZER in p["metadata"]["finalizers"]
    events = await kube.list("v1", "Event", namespace="default")
    assert any(e["involvedObject"]["name"] == name and e["reason"] == "Ready" for e in events)


async def test_second_onboarding_is_a_no_op_and_never_a_takeover(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    user = f"bob-{uid()}"
    pol = await current_policy(kube, policy_name)
    first = await ensure_profile(kube, pol, user, source="gateway")
    again = await ensure_profile(kube, pol, user, source="gateway")
    assert first.created and not again.created and first.name == again.name
    # a Profile of that name owned by someone else is refused
    other = f"carl-{uid()}"
    await kube.create(
        {
            "apiVersion": PROFILE_API_VERSION,
            "kind": c.PROFILE_KIND,
            "metadata": {"name": other},
            "spec": {"owner": {"kind": "User", "name": "mallory"}},
        }
    )
    with pytest.raises(OnboardingError, match="belongs to 'mallory'"):
        await ensure_profile(kube, pol, other, source="gateway")
    p = await profile(kube, other)
    assert p is not None and p["spec"]["owner"]["name"] == "mallory"


async def test_deleted_and_edited_objects_are_repaired_and_unrelated_ones_left_alone(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    name = await onboard(kube, policy_name, f"dora-{uid()}")
    await wait_ready(kube, name)
    mine = await kube.create(configmap("mine", name, {"k": "v"}))
    await kube.delete("rbac.authorization.k8s.io/v1", "RoleBinding", "default-editor", name)
    await kube.patch_merge(
        "v1", "ResourceQuota", "kf-resource-quota", {"spec": {"hard": {"cpu": "1"}}}, namespace=name
    )
    await kube.patch_merge(
        "v1", "Namespace", name, {"metadata": {"annotations": {"owner": "mallory"}}}
    )
    desired = await desired_for(kube, policy_name, name)
    await eventually(lambda: in_sync(kube, desired), what="drift repaired")
    cm = await kube.get("v1", "ConfigMap", "mine", name)
    assert cm is not None and cm["data"] == {"k": "v"}
    assert cm["metadata"]["resourceVersion"] == mine["metadata"]["resourceVersion"]  # untouched


async def test_an_unchanged_resync_makes_zero_writes(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    # Only this test's tenants: Profiles other modules left behind may not converge, and
    # what the controller writes for them is not what this test is about.
    names = [await onboard(kube, policy_name, f"erin-{uid()}-{i}") for i in range(3)]
    for n in names:
        await wait_ready(kube, n)
    mark = await settle_tenants(controller, names)
    reconciled = controller.reconciled
    await controller.resync()

    async def resynced() -> bool:
        started = {
            e["name"]
            for e in read_write_log(controller.settings.write_log or "")[mark:]
            if e["what"] == "reconcile"
        }
        return (
            set(names) <= started
            and controller.reconciled >= reconciled + len(controller.profiles)
            and not len(controller.queue)
        )

    await eventually(resynced, what="resync processed")
    await settle_tenants(controller, names, quiet=0.5)
    assert tenant_writes(controller, names, since=mark) == []


async def _true(value: bool) -> bool:
    return value


async def test_a_policy_change_reaches_every_tenant(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    names = [await onboard(kube, policy_name, f"finn-{uid()}-{i}") for i in range(3)]
    for n in names:
        await wait_ready(kube, n)
    quota = {"cpu": "3", "memory": "6Gi", "requests.nvidia.com/gpu": "2"}
    await kube.apply(
        {
            "apiVersion": POLICY_API,
            "kind": c.POLICY_KIND,
            "metadata": {"name": policy_name},
            "spec": policy_spec(resources={"quota": quota}),
        }
    )

    async def everywhere() -> bool:
        for n in names:  # this test's tenants (other modules may have left Profiles behind)
            q = await kube.get("v1", "ResourceQuota", "kf-resource-quota", n)
            if q is None or q["spec"]["hard"].get("requests.nvidia.com/gpu") != "2":
                return False
        return True

    await eventually(everywhere, what=f"new quota in every tenant of {names}")
    for n in names:
        assert await in_sync(kube, await desired_for(kube, policy_name, n))


async def test_a_foreign_namespace_is_refused_then_adopted_after_opt_in(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    name = f"legacy-{uid()}"
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"team": "x"}},
        }
    )
    await kube.create(configmap("data", name, {"k": "v"}))
    await kube.create(
        {
            "apiVersion": PROFILE_API_VERSION,
            "kind": c.PROFILE_KIND,
            "metadata": {"name": name},
            "spec": {"owner": {"kind": "User", "name": f"{name}@example.com"}},
        }
    )
    cond = await wait_reason(kube, name, "NamespaceNotOwned")
    assert cond["status"] == "False" and f"{c.ANN_ADOPT}={name}" in cond["message"]
    owned = await kube.list_owned([("rbac.authorization.k8s.io/v1", "RoleBinding")], tenant=name)
    assert owned == []
    ns = await kube.get("v1", "Namespace", name)
    assert ns is not None and c.LABEL_MANAGED_BY not in ns["metadata"].get("labels", {})

    await kube.patch_merge(
        "v1", "Namespace", name, {"metadata": {"annotations": {c.ANN_ADOPT: name}}}
    )
    await wait_ready(kube, name)
    ns = await kube.get("v1", "Namespace", name)
    assert ns is not None and ns["metadata"]["labels"][c.LABEL_TENANT] == name
    assert ns["metadata"]["labels"]["team"] == "x"
    cm = await kube.get("v1", "ConfigMap", "data", name)
    assert cm is not None and cm["data"] == {"k": "v"}


async def test_an_invalid_profile_gets_a_condition_and_an_event_not_a_crash(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    name = f"bad-{uid()}"
    await kube.create(
        {
            "apiVersion": PROFILE_API_VERSION,
            "kind": c.PROFILE_KIND,
            "metadata": {"name": name, "annotations": {c.ANN_CONTRIBUTORS: "not json"}},
            "spec": {"owner": {"kind": "User", "name": "x@example.com"}},
        }
    )
    cond = await wait_reason(kube, name, "InvalidSpec")
    assert c.ANN_CONTRIBUTORS in cond["message"] and "not valid JSON" in cond["message"]
    events = await kube.list("v1", "Event", namespace="default")
    assert any(e["involvedObject"]["name"] == name and e["type"] == "Warning" for e in events)
    # fixing it makes it Ready
    await kube.patch_merge(
        PROFILE_API_VERSION,
        c.PROFILE_KIND,
        name,
        {"metadata": {"annotations": {c.ANN_CONTRIBUTORS: "[]"}}},
    )
    await wait_ready(kube, name)


async def test_a_profile_applied_under_our_field_manager_keeps_its_spec_when_finalized(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    # `kftenancy render --user ID | kubectl apply --server-side --field-manager=kftenancy`
    # leaves the Profile's spec owned by our manager's Apply. An apply states a manager's
    # whole intent for an object, so adding the finalizer must not be an Apply by that
    # same manager with only the finalizer in it: that would delete owner and contributors.
    doc = profile_for_user(await current_policy(kube, policy_name), f"rita-{uid()}@example.com")
    doc["spec"]["contributors"] = [{"kind": "User", "name": "bob@example.com", "role": "edit"}]
    applied = await kube.apply(doc)
    name = applied["metadata"]["name"]

    async def finalized() -> dict[str, Any] | None:
        p = await profile(kube, name)
        return p if p and c.FINALIZER in (p["metadata"].get("finalizers") or []) else None

    try:
        p = await eventually(finalized, what=f"finalizer on Profile {name}")
        assert p.get("spec") == applied["spec"]
        await wait_ready(kube, name)
    finally:
        await kube.delete(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    await eventually(lambda: _gone(kube, name), what="Profile deleted after its finalizer ran")


async def test_offboarding_revokes_access_keeps_data_and_reonboarding_restores_it(
    kube: Kube, controller: Controller, policy_name: str, user_client: Callable[..., Any]
) -> None:
    user = f"gina-{uid()}@example.com"
    name = await onboard(kube, policy_name, user)
    await wait_ready(kube, name)
    client = user_client(user)
    await kube.create(configmap("results", name, {"acc": "0.93"}))

    async def can_read() -> bool:
        try:
            await client.get(ConfigMap, "results", namespace=name)
        except ApiError as err:
            if err.status.code == 403:
                return False
            raise
        return True

    assert await eventually(can_read, what="owner can read own namespace")
    result = await offboard(kube, await current_policy(kube, policy_name), user)
    assert result.existed
    # Revoked when offboard returns: the bindings are gone ...
    assert (
        await kube.list_owned([("rbac.authorization.k8s.io/v1", "RoleBinding")], tenant=name) == []
    )
    # ... and the API server's RBAC authorizer (an informer cache) follows within moments.
    await eventually(lambda: _not(can_read()), within=3, what="owner lost access")
    ns = await kube.get("v1", "Namespace", name)
    assert ns is not None
    ann = ns["metadata"]["annotations"]
    at = datetime.fromisoformat(ann[c.ANN_OFFBOARDED_AT].replace("Z", "+00:00"))
    after = datetime.fromisoformat(ann[c.ANN_DELETE_AFTER].replace("Z", "+00:00"))
    assert (after - at).days == 30 and abs((datetime.now(UTC) - at).total_seconds()) < 120
    await eventually(lambda: _gone(kube, name), what="Profile deleted after its finalizer ran")
    cm = await kube.get("v1", "ConfigMap", "results", name)
    assert cm is not None and cm["data"] == {"acc": "0.93"}
    bindings = await kube.list_owned([("rbac.authorization.k8s.io/v1", "RoleBinding")], tenant=name)
    assert bindings == []

    assert await onboard(kube, policy_name, user) == name
    await wait_ready(kube, name)
    assert await eventually(can_read, what="access restored")
    ns = await kube.get("v1", "Namespace", name)
    assert ns is not None and c.ANN_OFFBOARDED_AT not in ns["metadata"].get("annotations", {})


async def _gone(kube: Kube, name: str) -> bool:
    return await profile(kube, name) is None


async def test_deleting_a_profile_offboards_through_the_finalizer(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    name = await onboard(kube, policy_name, f"hank-{uid()}")
    await wait_ready(kube, name)
    await kube.delete(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    await eventually(lambda: _gone(kube, name), what="Profile gone")
    ns = await kube.get("v1", "Namespace", name)
    assert ns is not None and c.ANN_OFFBOARDED_AT in ns["metadata"]["annotations"]
    assert (
        await kube.get("security.istio.io/v1", "AuthorizationPolicy", "ns-owner-access-istio", name)
        is None
    )
    assert await kube.get("v1", "ResourceQuota", "kf-resource-quota", name) is not None


async def test_openshift_users_are_onboarded_and_offboarded(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    user = f"ivy-{uid()}"
    await kube.create(
        {
            "apiVersion": "user.openshift.io/v1",
            "kind": "User",
            "metadata": {"name": user},
            "groups": [],
        }
    )
    await wait_ready(kube, user)
    await kube.delete("user.openshift.io/v1", "User", user)
    await eventually(lambda: _gone(kube, user), what="Profile of deleted User gone")
    ns = await kube.get("v1", "Namespace", user)
    assert ns is not None and c.ANN_OFFBOARDED_AT in ns["metadata"]["annotations"]


async def test_metrics_and_health_are_served_over_tls(
    cluster: LocalCluster, policy_name: str, kube: Kube
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with running(cluster, policy_name, metrics_port=port) as ctl:
        name = await onboard(kube, policy_name, f"jill-{uid()}")
        await wait_ready(kube, name)
        await settle(ctl, quiet=0.3)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=ctx) as resp:
                assert resp.status == 200
            async with http.get(f"https://127.0.0.1:{port}/metrics", ssl=ctx) as resp:
                text = await resp.text()
    assert 'kftenancy_reconcile_total{result="Ready"}' in text
    assert "kftenancy_reconcile_duration_seconds_bucket" in text
    assert 'kftenancy_tenants{ready="True",reason="Ready"}' in text
    assert "# TYPE kftenancy_api_writes_total counter" in text


async def set_policy(kube: Kube, controller: Controller, name: str, spec: dict[str, Any]) -> None:
    await kube.apply(
        {"apiVersion": POLICY_API, "kind": c.POLICY_KIND, "metadata": {"name": name}, "spec": spec}
    )
    want = load_policy(spec)
    await eventually(lambda: _true(controller.policy == want), what="controller has the new policy")


async def test_retention_over_deletes_the_offboarded_namespace(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    await set_policy(kube, controller, policy_name, policy_spec(offboarding={"retentionDays": 0}))
    try:
        user = f"lou-{uid()}"
        name = await onboard(kube, policy_name, user)
        await wait_ready(kube, name)
        await offboard(kube, controller.policy, user)
        await eventually(lambda: _gone(kube, name), what="Profile gone")
        await controller.resync()

        async def ns_gone() -> bool:
            ns = await kube.get("v1", "Namespace", name)
            return ns is None or bool(ns["metadata"].get("deletionTimestamp"))

        await eventually(ns_gone, what="namespace deleted after retention")
    finally:
        await set_policy(kube, controller, policy_name, policy_spec())


async def test_only_one_replica_leads(kube: Kube) -> None:
    ns = f"lease-{uid()}"
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    a = LeaderElector(
        Kube(kube.client, writes=WriteCounter()),
        name="ctl",
        namespace=ns,
        identity="a",
        lease_seconds=3,
    )
    b = LeaderElector(
        Kube(kube.client, writes=WriteCounter()),
        name="ctl",
        namespace=ns,
        identity="b",
        lease_seconds=3,
    )
    await asyncio.wait_for(a.acquire(), 10)
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(2)
    assert a.leading and not waiting.done()
    await a.release()
    await asyncio.wait_for(waiting, 10)
    assert b.leading
    await kube.delete("v1", "Namespace", ns)


async def test_an_invalid_policy_change_is_reported_and_the_last_valid_one_kept(
    kube: Kube, controller: Controller, policy_name: str
) -> None:
    name = await onboard(kube, policy_name, f"max-{uid()}")
    await wait_ready(kube, name)
    good = controller.policy
    bad = policy_spec(
        gpu={
            "taint": {"key": "workload", "value": "ai-ml"},
            "allowedTolerations": [{"key": "workload", "operator": "Exists"}],
        }
    )
    await kube.apply(
        {
            "apiVersion": POLICY_API,
            "kind": c.POLICY_KIND,
            "metadata": {"name": policy_name},
            "spec": bad,
        }
    )

    async def reported() -> bool:
        events = await kube.list("v1", "Event", namespace="default")
        return any(
            e["involvedObject"]["name"] == policy_name
            and e["reason"] == "InvalidPolicy"
            and "allowedTolerations" in e["message"]
            for e in events
        )

    try:
        await eventually(reported, what="InvalidPolicy event")
        assert controller.policy == good
        await controller.resync()
        await settle(controller, quiet=0.5)
        cond = await ready_condition(kube, name)
        assert cond is not None and cond["status"] == "True"
    finally:
        await set_policy(kube, controller, policy_name, policy_spec())


async def test_changing_the_owner_moves_access_to_the_new_owner(
    kube: Kube, controller: Controller, policy_name: str, user_client: Callable[..., Any]
) -> None:
    old, new = f"nina-{uid()}@example.com", f"omar-{uid()}@example.com"
    name = await onboard(kube, policy_name, old)
    await wait_ready(kube, name)
    await kube.create(configmap("notes", name, {"k": "v"}))

    async def can_read(user: str) -> bool:
        try:
            await user_client(user).get(ConfigMap, "notes", namespace=name)
        except ApiError as err:
            if err.status.code == 403:
                return False
            raise
        return True

    assert await eventually(lambda: can_read(old), what="old owner has access")
    assert not await can_read(new)
    await kube.patch_merge(
        PROFILE_API_VERSION,
        c.PROFILE_KIND,
        name,
        {"spec": {"owner": {"kind": "User", "name": new}}},
    )
    assert await eventually(lambda: can_read(new), what="new owner has access")
    assert await eventually(lambda: _not(can_read(old)), what="old owner lost access")
    assert await in_sync(kube, await desired_for(kube, policy_name, name))
    binding = await kube.get("rbac.authorization.k8s.io/v1", "RoleBinding", "namespaceAdmin", name)
    assert binding is not None and [s["name"] for s in binding["subjects"]] == [new]

    # spec.owner is the truth from now on: the old owner cannot claim the Profile back ...
    policy = await current_policy(kube, policy_name)
    with pytest.raises(OnboardingError, match=f"belongs to '{new}'"):
        await ensure_profile(kube, policy, old, source="cli")
    # ... and offboarding the new owner finds it, though its name came from the old id.
    result = await offboard(kube, policy, new)
    assert (result.name, result.existed) == (name, True)
    assert await eventually(lambda: _not(can_read(new)), within=3, what="new owner revoked")
    notes = await kube.get("v1", "ConfigMap", "notes", name)
    assert notes is not None and notes["data"] == {"k": "v"}


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def cli(*args: str) -> tuple[int, str, str]:
    import sys
    from pathlib import Path

    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kftenancy"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_status_plan_and_bad_input_on_the_command_line(
    cluster: LocalCluster, kube: Kube, controller: Controller, policy_name: str, tmp_path: Any
) -> None:
    import json

    name = await onboard(kube, policy_name, f"pia-{uid()}")
    await wait_ready(kube, name)
    kc = str(cluster.admin_kubeconfig)
    code, out, _ = await cli("status", "--kubeconfig", kc, "-o", "json")
    assert code == 0
    row = next(r for r in json.loads(out) if r["name"] == name)
    assert (
        row["ready"] == "True"
        and row["owner"].startswith("pia-")
        and row["quota"]["gpu"].endswith("/10")
    )

    # plan with a policy that differs from the cluster's: shows the change, writes nothing
    policy_file = tmp_path / "policy.yaml"
    quota = {
        "cpu": "5",
        "memory": "16Gi",
        "requests.nvidia.com/gpu": "10",
        "persistentvolumeclaims": "10",
        "requests.storage": "200Gi",
    }
    policy_file.write_text(json.dumps(policy_spec(resources={"quota": quota})))
    code, out, _ = await cli("plan", "--kubeconfig", kc, "--policy", str(policy_file), "-o", "json")
    assert code == 0
    assert json.loads(out)[name]["update"] == [
        f"ResourceQuota {name}/kf-resource-quota (spec.hard.cpu)"
    ]
    live = await kube.get("v1", "ResourceQuota", "kf-resource-quota", name)
    assert live is not None and live["spec"]["hard"]["cpu"] == "8"

    policy_file.write_text("resources:\n  quota: {cpu: lots}\n")
    code, _, err = await cli("plan", "--kubeconfig", kc, "--policy", str(policy_file))
    assert code == 2 and "resources.quota" in err and "lots" in err and "Traceback" not in err
