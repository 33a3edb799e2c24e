"""GPU capacity on the real control plane with a real Kueue (v0.17.0, built from the Go
module proxy and started by the lab): fair per-tenant GPU queues (guarantee, borrowing,
reclaim), the default queue, the GPU taint outside tenants, offboarding, bad settings,
and warm headroom placeholders preempted by a real GPU pod and recreated.

One cluster for the module (etcd, kube-apiserver, controller-manager, scheduler, kwok,
kueue) and one in-process controller (tenant reconciles + the capacity loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from lightkube import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.types import CascadeType

from kftenancy import constants as c
from kftenancy.cli.controller import tenant_rows
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.lab.stages import KEEP_RUNNING_ANNOTATION
from kftenancy.policy import load_policy
from kftenancy.render import whitelist_annotation

T = TypeVar("T")
POLICY_API = f"{c.API_GROUP}/{c.API_VERSION}"
GPU = "nvidia.com/gpu"
TAINT = {"key": "workload", "value": "ai-ml", "effect": "NoSchedule"}
# Two tenants guaranteed 2 GPUs each of a 4-GPU pool (2 nodes x 2), a third with none.
SPEC: dict[str, Any] = {
    "platform": {"flavor": "kubernetes", "kubeflowInstalled": False},
    "mesh": {"flavor": "none"},
    "identity": {"onboarding": ["gateway"]},
    "resources": {"quota": {"cpu": "8", "memory": "16Gi", f"requests.{GPU}": "4"}},
    "gpu": {
        "pools": [
            {
                "name": "t4",
                "nodeSelector": {"workload": "ai-ml", "pool": "t4"},
                "maxNodes": 2,
                "node": {"gpus": 2},
                "headroom": {"percent": 0, "minimumGpus": 0},
            },
            {
                "name": "warm",
                "nodeSelector": {"workload": "ai-ml", "pool": "warm"},
                "maxNodes": 2,
                "node": {"gpus": 1},
                "headroom": {"percent": 0, "minimumGpus": 1},
            },
        ],
        "queues": {"enabled": True, "tenants": {"ta": {"t4": 2}, "tb": {"t4": 2}}},
    },
}


async def eventually(
    check: Callable[[], Awaitable[T | None]], within: float = 60.0, what: str = ""
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
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def lab() -> Iterator[LocalCluster]:
    cluster = LocalCluster(controller_manager=True, scheduler=True, kwok=True, kueue=True)
    try:
        cluster.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane with Kueue could not start:\n{err}", pytrace=False)
    failed = False
    try:
        cluster.install_crds(bundled_crds())
        for i in (1, 2):
            cluster.add_gpu_node(f"t4-{i}", gpus=2, labels={"workload": "ai-ml", "pool": "t4"})
        cluster.add_gpu_node("warm-1", gpus=1, labels={"workload": "ai-ml", "pool": "warm"})
        yield cluster
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            print(cluster.log_report())
        cluster.stop(keep_workdir=failed)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kube(lab: LocalCluster) -> AsyncIterator[Kube]:
    k = Kube.from_kubeconfig(str(lab.admin_kubeconfig))
    yield k
    await k.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def controller(lab: LocalCluster, kube: Kube) -> AsyncIterator[Controller]:
    policy = {"apiVersion": POLICY_API, "kind": c.POLICY_KIND, "metadata": {"name": "gpu"}}
    await kube.apply({**policy, "spec": SPEC})
    ctl = Controller(
        ControllerSettings(
            kubeconfig=str(lab.admin_kubeconfig),
            policy_name="gpu",
            metrics_port=0,
            leader_election=False,
            apply_platform=False,
            capacity_seconds=1.0,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:
        await eventually(lambda: _ready(ctl, task), what="controller ready")
        # Platform objects (PriorityClass, ResourceFlavors, CRDs, RBAC) without the
        # webhook configurations: they point at a Service the lab does not have.
        try:
            await ctl.apply_platform()
        finally:
            for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                await ctl.kube.delete("admissionregistration.k8s.io/v1", kind, "kftenancy")
        for tenant in ("ta", "tb", "tc"):
            # create (POST), as onboarding does
            await kube.create(
                {
                    "apiVersion": PROFILE_API_VERSION,
                    "kind": c.PROFILE_KIND,
                    "metadata": {"name": tenant},
                    "spec": {"owner": {"kind": "User", "name": f"{tenant}@example.com"}},
                }
            )
        for tenant in ("ta", "tb", "tc"):
            await eventually(
                lambda t=tenant: _tenant_ready(kube, t), within=120, what=f"{tenant} Ready"
            )
        yield ctl
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await ctl.kube.close()


async def _ready(ctl: Controller, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
        raise AssertionError("controller stopped")
    return ctl.ready.is_set()


async def _tenant_ready(kube: Kube, tenant: str) -> bool:
    p = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, tenant)
    conds = ((p or {}).get("status") or {}).get("conditions") or []
    if not any(x["type"] == "Ready" and x["status"] == "True" for x in conds):
        raise AssertionError(f"Profile {tenant} conditions: {conds}")
    return await kube.get(c.KUEUE_API, "LocalQueue", "default", tenant) is not None


def job(
    name: str, namespace: str, gpus: int, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A one-pod Job asking for `gpus` GPUs whose pod kwok keeps Running."""
    request = {"cpu": "100m", "memory": "64Mi", GPU: str(gpus)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "template": {
                "metadata": {"annotations": {KEEP_RUNNING_ANNOTATION: "true"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": request, "limits": {GPU: str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


async def delete_job(kube: Kube, name: str, namespace: str) -> None:
    """Delete a Job and its pods (the API's default for Jobs orphans them)."""
    await kube.client.delete(Job, name, namespace=namespace, cascade=CascadeType.BACKGROUND)


async def workload_of(kube: Kube, namespace: str, job_name: str) -> dict[str, Any] | None:
    for w in await kube.list(c.KUEUE_API, "Workload", namespace=namespace):
        if any(r.get("name") == job_name for r in w["metadata"].get("ownerReferences") or []):
            return w
    return None


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cd in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cd.get("type") == kind:
            return dict(cd)
    return None


async def admitted(kube: Kube, namespace: str, job_name: str) -> bool:
    cd = condition(await workload_of(kube, namespace, job_name), "Admitted")
    return bool(cd and cd["status"] == "True")


async def pending_reason(kube: Kube, namespace: str, job_name: str) -> str | None:
    w = await workload_of(kube, namespace, job_name)
    cd = condition(w, "QuotaReserved")
    if w is not None and cd is not None and cd["status"] == "False":
        return f"{cd['reason']}: {cd['message']}"
    return None


async def running_pods(kube: Kube, namespace: str, job_name: str) -> list[dict[str, Any]]:
    pods = await kube.list("v1", "Pod", namespace=namespace, labels={"job-name": job_name})
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


async def borrowed(kube: Kube, tenant: str) -> int:
    cq = await kube.get(c.KUEUE_API, "ClusterQueue", tenant)
    for flavor in ((cq or {}).get("status") or {}).get("flavorsReservation") or []:
        for res in flavor.get("resources") or []:
            if flavor["name"] == "t4" and res["name"] == GPU:
                return int(res.get("borrowed", "0"))
    return 0


async def test_guarantees_queue_borrow_and_reclaim(controller: Controller, kube: Kube) -> None:
    # No queue name on any of these jobs: the tenant's LocalQueue `default` catches them.
    await kube.create(job("a1", "ta", 2))
    await kube.create(job("b1", "tb", 2))
    await eventually(lambda: admitted(kube, "ta", "a1"), what="ta's job admitted")
    await eventually(lambda: admitted(kube, "tb", "b1"), what="tb's job admitted")
    a1 = await kube.get("batch/v1", "Job", "a1", "ta")
    assert a1 is not None and a1["metadata"]["labels"][c.LABEL_QUEUE_NAME] == "default"
    pods = await eventually(lambda: running_pods(kube, "ta", "a1"), what="ta's pod Running")
    # Kueue gave the pod the flavor's node labels and GPU toleration.
    assert pods[0]["spec"]["nodeSelector"]["pool"] == "t4"
    assert pods[0]["spec"]["nodeName"].startswith("t4-")

    # The pool is full (2 + 2 of 4): the third tenant's job queues in Kueue.
    await kube.create(job("c1", "tc", 1))
    reason = await eventually(lambda: pending_reason(kube, "tc", "c1"), what="tc's job pending")
    assert "insufficient" in reason.lower() or "couldn't assign" in reason.lower(), reason
    c1 = await kube.get("batch/v1", "Job", "c1", "tc")
    assert c1 is not None and c1["spec"]["suspend"] is True
    view = await eventually(
        lambda: _status_configmap(kube, "tc", lambda d: d.get("pending") == "1"),
        what="tc's GPU status ConfigMap shows the pending job",
    )
    assert '"position": 1' in view["queue"]

    # `kftenancy status` shows the same per tenant (Kueue updates queue status shortly
    # after admissions).
    async def status_rows() -> dict[str, Any] | None:
        rows = {r["name"]: r["gpu"] for r in await tenant_rows(kube, datetime.now(UTC))}
        return rows if rows["ta"]["in_use"] == 2 and rows["tc"]["pending"] == 1 else None

    rows = await eventually(status_rows, what="kftenancy status GPU columns")
    assert rows["tc"]["guarantee"] == 0
    assert rows["ta"] == {
        "guarantee": 2, "in_use": 2, "borrowed": 0, "pending": 0, "pending_workloads": []
    }  # fmt: skip

    # ta goes idle: tc borrows ta's unused guarantee.
    await delete_job(kube, "a1", "ta")
    await eventually(lambda: admitted(kube, "tc", "c1"), what="tc's job admitted by borrowing")
    assert await eventually(lambda: borrowed(kube, "tc"), what="tc borrows 1 GPU") == 1
    await eventually(lambda: running_pods(kube, "tc", "c1"), what="tc's pod Running")

    # ta comes back: Kueue preempts tc's borrowed job so that ta gets its guarantee.
    await kube.create(job("a2", "ta", 2))
    await eventually(lambda: admitted(kube, "ta", "a2"), what="ta's guarantee reclaimed")
    evicted = await eventually(
        lambda: _evicted(kube, "tc", "c1"), what="tc's borrowing job preempted"
    )
    assert evicted["reason"] in ("Preempted", "InCohortReclamation"), evicted
    await eventually(lambda: running_pods(kube, "ta", "a2"), what="ta's pod Running again")
    for name, ns in (("a2", "ta"), ("b1", "tb"), ("c1", "tc")):
        await delete_job(kube, name, ns)


async def _evicted(kube: Kube, namespace: str, job_name: str) -> dict[str, Any] | None:
    w = await workload_of(kube, namespace, job_name)
    for kind in ("Evicted", "Preempted"):
        cd = condition(w, kind)
        if cd and cd["status"] == "True":
            return cd
    return None


async def _status_configmap(
    kube: Kube, ns: str, ok: Callable[[dict[str, str]], bool]
) -> dict[str, str] | None:
    cm = await kube.get("v1", "ConfigMap", c.GPU_STATUS_CONFIGMAP, ns)
    data = dict((cm or {}).get("data") or {})
    return data if cm and ok(data) else None


async def test_non_tenant_namespace_cannot_use_gpus_through_kueue(
    controller: Controller, kube: Kube
) -> None:
    ns = f"other-{uuid.uuid4().hex[:6]}"
    # What the kftenancy webhook sets on every non-tenant namespace.
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "annotations": {
                    c.ANN_TOLERATIONS_WHITELIST: whitelist_annotation(controller.policy)
                },
            },
        }
    )
    await eventually(lambda: kube.get("v1", "ServiceAccount", "default", ns), what="default SA")
    # A queue of its own pointing at a tenant's ClusterQueue admits nothing.
    await kube.create(
        {
            "apiVersion": c.KUEUE_API,
            "kind": "LocalQueue",
            "metadata": {"name": "sneak", "namespace": ns},
            "spec": {"clusterQueue": "ta"},
        }
    )
    await kube.create(job("x1", ns, 1, labels={c.LABEL_QUEUE_NAME: "sneak"}))
    reason = await eventually(lambda: pending_reason(kube, ns, "x1"), what="x1 inadmissible")
    assert "namespace" in reason.lower(), reason
    # And a pod tolerating the GPU taint directly is refused by PodTolerationRestriction.
    pod = job("p", ns, 1)["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-pod", "namespace": ns},
        "spec": {**pod["spec"], "tolerations": [{**TAINT, "operator": "Equal"}]},
    }
    with pytest.raises(ApiError) as err:
        await kube.create(pod)
    assert "tolerations" in str(err.value.status.message)
    await kube.delete("v1", "Namespace", ns)


async def test_placeholders_keep_headroom_yield_to_real_pods_and_reach_zero(
    controller: Controller, kube: Kube
) -> None:
    policy_ns = controller.policy.platform.namespace
    selector = {c.LABEL_GPU_POOL: "warm"}

    async def placeholders(phase: str | None = None) -> list[dict[str, Any]]:
        pods = await kube.list("v1", "Pod", namespace=policy_ns, labels=selector)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return [p for p in live if phase is None or (p.get("status") or {}).get("phase") == phase]

    # minimumGpus 1 on a 2-GPU pool with nothing running: one placeholder, on warm-1.
    [warm] = await eventually(lambda: placeholders("Running"), what="a placeholder Running")
    assert warm["spec"]["nodeName"] == "warm-1"
    assert warm["spec"]["priority"] == -1
    # A real GPU pod (priority 0) preempts it at once...
    real = job("real", "ta", 1)["spec"]["template"]
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "notebook", "namespace": "ta"},
            "spec": {**real["spec"], "nodeSelector": {"pool": "warm"}},
        }
    )

    async def bound() -> str | None:
        pod = await kube.get("v1", "Pod", "notebook", "ta")
        return str(((pod or {}).get("spec") or {}).get("nodeName") or "") or None

    assert await eventually(bound, what="the real pod bound") == "warm-1"

    # ... and the placeholder is recreated (pending: it is what asks for the next node).
    async def recreated() -> list[dict[str, Any]]:
        return [p for p in await placeholders() if p["metadata"]["uid"] != warm["metadata"]["uid"]]

    [again] = await eventually(recreated, what="the placeholder recreated")
    assert not again["spec"].get("nodeName")
    # Headroom 0 in the policy: no placeholders at all.
    spec = load_policy({"spec": SPEC}).model_dump(by_alias=True, mode="json", exclude_defaults=True)
    spec["gpu"]["pools"][1]["headroom"] = {"percent": 0, "minimumGpus": 0}
    await kube.apply(
        {"apiVersion": POLICY_API, "kind": c.POLICY_KIND, "metadata": {"name": "gpu"}, "spec": spec}
    )

    async def none_left() -> bool:
        return not await placeholders()

    await eventually(none_left, what="zero placeholders")
    dep = await kube.get("apps/v1", "Deployment", "kftenancy-gpu-headroom-warm", policy_ns)
    assert dep is not None and dep["spec"]["replicas"] == 0
    await kube.delete("v1", "Pod", "notebook", "ta")


async def test_bad_capacity_settings_are_refused_naming_the_field(
    controller: Controller, kube: Kube
) -> None:
    bad = {"apiVersion": POLICY_API, "kind": c.POLICY_KIND, "metadata": {"name": "bad-gpu"}}
    spec = {"gpu": {"pools": [{"name": "t4"}], "queues": {"guaranteeGpus": {"t4": -1}}}}
    with pytest.raises(ApiError) as err:
        await kube.apply({**bad, "spec": spec})
    assert err.value.status.code == 422
    assert "spec.gpu.queues.guaranteeGpus.t4" in str(err.value.status.message)
    # Cross-field rules are the model's: the controller keeps its valid policy and says why.
    before = controller.policy
    for spec, field in (
        ({"gpu": {"pools": [{"name": "t4", "maxNodes": 1}], "queues": {"tenants": {"ta": {"t4": 2}}}}},
         "above the size of pool t4"),
        ({"gpu": {"pools": [{"name": "t4"}], "queues": {"tenants": {"ta": {"v100": 1}}}}},
         "unknown flavor 'v100'"),
    ):  # fmt: skip
        doc = {**bad, "metadata": {"name": "gpu"}, "spec": spec}
        assert await controller.policy_changed(doc) is False
        assert controller.policy == before
        events = await kube.list("events.k8s.io/v1", "Event", namespace="default")
        events += await kube.list("v1", "Event", namespace="default")
        assert any(field in str(e.get("note") or e.get("message")) for e in events), field


async def test_queue_drift_is_repaired(controller: Controller, kube: Kube) -> None:
    await kube.patch_merge(c.KUEUE_API, "ClusterQueue", "tb", {"spec": {"cohortName": "rogue"}})

    async def repaired() -> bool:
        cq = await kube.get(c.KUEUE_API, "ClusterQueue", "tb")
        return cq is not None and cq["spec"]["cohortName"] == "kftenancy-gpu"

    await eventually(repaired, what="tb's ClusterQueue back in the shared cohort")


async def test_offboarding_removes_queues_and_keeps_workloads(
    controller: Controller, kube: Kube
) -> None:
    await kube.create(job("keep", "tc", 1))
    await eventually(lambda: workload_of(kube, "tc", "keep"), what="tc's workload")
    await kube.delete(PROFILE_API_VERSION, c.PROFILE_KIND, "tc")

    async def queues_gone() -> bool:
        # Deleted; Kueue's finalizer keeps a queue while a workload still holds quota
        # there (running work is never killed by offboarding), admitting nothing new.
        cq = await kube.get(c.KUEUE_API, "ClusterQueue", "tc")
        lq = await kube.get(c.KUEUE_API, "LocalQueue", "default", "tc")
        return all(q is None or q["metadata"].get("deletionTimestamp") for q in (cq, lq))

    await eventually(queues_gone, what="tc's ClusterQueue and LocalQueue deleted")
    assert await kube.get("v1", "Namespace", "tc") is not None
    assert await kube.get("batch/v1", "Job", "keep", "tc") is not None
    # Other tenants keep theirs.
    assert await kube.get(c.KUEUE_API, "ClusterQueue", "ta") is not None
