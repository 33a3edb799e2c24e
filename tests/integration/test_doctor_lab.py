"""`kftenancy doctor` against a real cluster: healthy, then deliberately broken.

A cluster of its own (the doctor looks at cluster-wide state — nodes, Profiles, the
`default` TenancyPolicy — that other test modules change). Healthy means: the CRDs, the
platform objects, OSSM's control plane with our extension provider, the real webhook
server registered over TLS, a tainted and labelled GPU node, a tenant made Ready by the
real controller, the issuer published. Then each broken state is made, `kftenancy doctor
--output json` runs as a subprocess, must exit 1 and name the problem with a fix, and
the state is repaired before the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from kftenancy import constants as c
from kftenancy.certs import CertificateAuthority
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.crds import profile_crd
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render import platform_objects, profile_for_user
from kftenancy.render.gateway import gateway_objects
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations
from kftenancy.servers.webhook import WebhookServer, WebhookSettings

POLICY_API = f"{c.API_GROUP}/{c.API_VERSION}"
ADMISSION = "admissionregistration.k8s.io/v1"
KFTENANCY = Path(sys.executable).parent / "kftenancy"


def spec(issuer: str) -> dict[str, Any]:
    return {
        "platform": {"kubeflowInstalled": False},
        "gpu": {"pools": [{"name": "t4", "accelerator": "nvidia-t4"}]},
        "dataLake": {"enabled": True, "issuerHostPath": issuer.removeprefix("https://")},
    }


@pytest.fixture(scope="module")
def lab() -> Iterator[LocalCluster]:
    lab = LocalCluster(controller_manager=True, kwok=True)
    try:
        lab.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane could not start:\n{err}", pytrace=False)
    try:
        lab.install_crds(bundled_crds())
        yield lab
    finally:
        lab.stop()


async def _eventually(check: Any, within: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = await check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within}s: {what} (last: {got})")
        await asyncio.sleep(0.2)


class Healthy:
    def __init__(self, lab: LocalCluster, kube: Kube, policy: TenancyPolicySpec) -> None:
        self.lab, self.kube, self.policy = lab, kube, policy
        self.configs: list[dict[str, Any]] = []


async def _ready(kube: Kube, name: str) -> bool:
    p = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    conditions = ((p or {}).get("status") or {}).get("conditions") or []
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def healthy(lab: LocalCluster) -> AsyncIterator[Healthy]:
    kube = Kube.from_kubeconfig(str(lab.admin_kubeconfig))
    raw = spec(lab.issuer)
    policy = load_policy(raw)
    await kube.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    )
    await kube.apply(
        {
            "apiVersion": POLICY_API,
            "kind": c.POLICY_KIND,
            "metadata": {"name": "default"},
            "spec": raw,
        }
    )
    for obj in platform_objects(policy):
        if obj["apiVersion"] != ADMISSION:  # registered below, pointing at a local server
            await kube.apply(obj)
    for obj in gateway_objects(policy):
        await kube.apply(obj)
    # A tenant made Ready by the real controller.
    ctl = Controller(
        ControllerSettings(
            kubeconfig=str(lab.admin_kubeconfig),
            metrics_port=0,
            leader_election=False,
            apply_platform=False,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:
        alice = profile_for_user(policy, "alice@example.com")
        await kube.create(alice)  # as a user would (the controller applies its own fields)
        name = alice["metadata"]["name"]
        try:
            await _eventually(lambda: _ready(kube, name), 60, "tenant alice Ready")
        except AssertionError:
            raise AssertionError(
                await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
            ) from None
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await ctl.kube.close()
    # The real webhook server over TLS, registered with the API server.
    serving = lab.serving_cert("doctor-webhook")
    server = WebhookServer(
        WebhookSettings(
            cert_file=serving.cert_file, key_file=serving.key_file, host="127.0.0.1", port=0
        ),
        kube.client,
    )
    await server.start()
    await server.wait_ready(60)
    state = Healthy(lab, kube, policy)
    endpoint = WebhookEndpoint(url=f"https://127.0.0.1:{server.port}", ca_bundle=serving.ca_pem)
    state.configs = webhook_configurations(policy, endpoint)
    for obj in state.configs:
        await kube.apply(obj)
    lab.add_gpu_node("gpu-t4", labels={"workload": "ai-ml", "cluster-api/accelerator": "nvidia-t4"})
    try:
        yield state
    finally:
        for obj in state.configs:
            await kube.delete(ADMISSION, obj["kind"], obj["metadata"]["name"])
        await server.stop()
        await kube.close()


async def doctor(lab: LocalCluster, *args: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "KUBECONFIG": str(lab.admin_kubeconfig)}
    env.pop("KFTENANCY_KUBECONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        str(KFTENANCY),
        "doctor",
        "--output",
        "json",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    try:
        return proc.returncode, json.loads(out)
    except ValueError:
        raise AssertionError(
            f"doctor printed no JSON (exit {proc.returncode}): {err.decode()}"
        ) from None


def errors(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    found = [f for f in report["findings"] if f["check"] == check and f["severity"] == "error"]
    for f in found:
        assert f["fix"], f  # every problem comes with its fix
    return found


pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_healthy_cluster_passes_every_check(healthy: Healthy) -> None:
    code, report = await doctor(healthy.lab)
    assert code == 0, report
    assert report["ok"] is True
    by_check = {f["check"] for f in report["findings"]}
    assert by_check == {
        "policy",
        "crds",
        "rbac",
        "webhooks",
        "mesh",
        "pod-toleration-restriction",
        "gpu-nodes",
        "gpu-capacity",
        "issuer-discovery",
        "tenants",
    }
    assert all(f["severity"] == "ok" for f in report["findings"]), report
    ptr = next(f for f in report["findings"] if f["check"] == "pod-toleration-restriction")
    assert "is on" in ptr["message"]


async def test_a_crd_that_no_longer_serves_a_version(healthy: Healthy) -> None:
    old = profile_crd()
    old["spec"]["versions"] = [v for v in old["spec"]["versions"] if v["name"] == "v1"]
    await healthy.kube.apply(old)
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        [found] = errors(report, "crds")
        assert "v1beta1" in found["message"] and "deploy/crds" in found["fix"]
    finally:
        await healthy.kube.apply(profile_crd())


async def test_a_cluster_role_behind_the_policy(healthy: Healthy) -> None:
    rbac = "rbac.authorization.k8s.io/v1"
    role = await healthy.kube.get(rbac, "ClusterRole", c.COMPONENT_CONTROLLER)
    assert role is not None
    # As if retentionDays had been set without regenerating the chart: no namespace delete.
    narrowed = [r for r in role["rules"] if r.get("resources") != ["namespaces"]]
    await healthy.kube.patch_merge(rbac, "ClusterRole", c.COMPONENT_CONTROLLER, {"rules": narrowed})
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        [found] = errors(report, "rbac")
        assert found["object"] == f"ClusterRole/{c.COMPONENT_CONTROLLER}"
        assert "namespaces" in found["message"] and "kftenancy chart" in found["fix"]
    finally:
        await healthy.kube.patch_merge(
            rbac, "ClusterRole", c.COMPONENT_CONTROLLER, {"rules": role["rules"]}
        )


async def test_unregistered_validating_webhook(healthy: Healthy) -> None:
    validating = healthy.configs[1]
    await healthy.kube.delete(ADMISSION, validating["kind"], validating["metadata"]["name"])
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        [found] = errors(report, "webhooks")
        assert "ValidatingWebhookConfiguration" in found["message"]
        assert "not registered" in found["message"]
    finally:
        await healthy.kube.apply(validating)


async def test_expired_ca_bundle(healthy: Healthy) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    expired = CertificateAuthority.create("expired-ca", past)
    mutating = json.loads(json.dumps(healthy.configs[0]))
    import base64

    for hook in mutating["webhooks"]:
        hook["clientConfig"]["caBundle"] = base64.b64encode(expired.cert_pem).decode()
    await healthy.kube.apply(mutating)
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        found = errors(report, "webhooks")
        messages = " ".join(f["message"] for f in found)
        assert "caBundle CA expired" in messages
        assert "not signed by the caBundle CA" in messages
    finally:
        await healthy.kube.apply(healthy.configs[0])


async def test_mesh_without_our_authorization_provider(healthy: Healthy) -> None:
    ref = healthy.policy.mesh.control_plane_ref
    smcp = await healthy.kube.get(
        "maistra.io/v2", "ServiceMeshControlPlane", ref.name, ref.namespace
    )
    assert smcp is not None
    await healthy.kube.apply(
        {
            "apiVersion": "maistra.io/v2",
            "kind": "ServiceMeshControlPlane",
            "metadata": {"name": ref.name, "namespace": ref.namespace},
            "spec": {"meshConfig": {"extensionProviders": []}},
        }
    )
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        [found] = errors(report, "mesh")
        assert "no extension provider 'kftenancy-gateway'" in found["message"]
    finally:
        for obj in gateway_objects(healthy.policy):
            await healthy.kube.apply(obj)


async def test_placeholder_priority_below_the_autoscaler_cutoff(healthy: Healthy) -> None:
    # A cluster autoscaler with a stricter cutoff than the placeholder class (-1).
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cluster-autoscaler", "namespace": "kube-system"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "cluster-autoscaler"}},
            "template": {
                "metadata": {"labels": {"app": "cluster-autoscaler"}},
                "spec": {
                    "containers": [
                        {
                            "name": "cluster-autoscaler",
                            "image": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.34.0",
                            "args": ["--expendable-pods-priority-cutoff=0"],
                        }
                    ]
                },
            },
        },
    }
    await healthy.kube.apply(deployment)
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        [found] = errors(report, "gpu-capacity")
        assert "below the autoscaler's expendable-pods cutoff 0" in found["message"]
        assert "--expendable-pods-priority-cutoff" in found["fix"]
    finally:
        await healthy.kube.delete("apps/v1", "Deployment", "cluster-autoscaler", "kube-system")


async def test_gpu_node_without_the_taint_or_pool_labels(healthy: Healthy) -> None:
    healthy.lab.add_gpu_node("gpu-bare", taints=[])
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        found = errors(report, "gpu-nodes")
        assert {f["object"] for f in found} == {"Node/gpu-bare"}
        assert any(
            "kubectl taint node gpu-bare workload=ai-ml:NoSchedule" in f["fix"] for f in found
        )
        assert any("matches no gpu.pools entry" in f["message"] for f in found)
    finally:
        await healthy.kube.delete("v1", "Node", "gpu-bare")


async def test_tenant_not_ready(healthy: Healthy) -> None:
    bob = profile_for_user(healthy.policy, "bob@example.com")
    await healthy.kube.create(bob)  # no controller runs now: nothing makes it Ready
    try:
        code, report = await doctor(healthy.lab)
        assert code == 1
        [found] = errors(report, "tenants")
        assert found["object"] == f"Profile/{bob['metadata']['name']}"
        assert "controller" in found["message"]
    finally:
        await healthy.kube.delete(PROFILE_API_VERSION, c.PROFILE_KIND, bob["metadata"]["name"])


async def test_policy_with_the_wrong_issuer(healthy: Healthy, tmp_path: Path) -> None:
    wrong = spec("https://oidc.example.com")
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump(wrong))
    code, report = await doctor(healthy.lab, "--policy", str(file))
    assert code == 1
    [found] = errors(report, "issuer-discovery")
    assert healthy.lab.issuer in found["message"] and "oidc.example.com" in found["message"]


async def test_invalid_policy_names_the_field(healthy: Healthy, tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump({"gpu": {"taint": {"effect": "Sometimes"}}}))
    code, report = await doctor(healthy.lab, "--policy", str(file))
    assert code == 1
    [found] = errors(report, "policy")
    assert "gpu.taint.effect" in found["message"]
