"""Upgrade and uninstall with the real Helm on a real API server.

The previous chart version is this chart packaged as 0.2.0 with the previous release's
values (one controller replica, an older image tag); `helm upgrade` goes to the working
tree's chart. Between them the documented steps run: CRDs applied first (Helm never
upgrades `crds/`), then `helm upgrade`. The controller runs with its chart
ServiceAccount's token before the upgrade (tenants onboarded and Ready) and restarts
after it, as its pods would: its first full reconcile finds every tenant in sync and
writes nothing, tenants stay Ready, and their objects keep their resourceVersions. The
chart's own CA survives the upgrade (the webhooks' caBundle is unchanged). `helm
uninstall` removes the chart's objects and never a tenant namespace or Profile.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from helm_support import CHART, eventually, helm, running_controller, service_account_kubeconfig

from kftenancy import constants as c
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.controllers.tenant import KNOWN_KINDS, PROFILE_API_VERSION
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.policy import load_policy
from kftenancy.render import profile_for_user

NS = "kftenancy"
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def lab() -> Iterator[LocalCluster]:
    lab = LocalCluster(controller_manager=True)
    try:
        lab.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane could not start:\n{err}", pytrace=False)
    try:
        # third-party kinds only (no OpenShift APIs: an upstream cluster); our CRDs come
        # from the chart, as they would.
        lab.install_crds(
            [
                d
                for d in bundled_crds()
                if d["spec"]["group"] not in ("user.openshift.io", c.API_GROUP, c.KUBEFLOW_GROUP)
            ]
        )
        yield lab
    finally:
        lab.stop()


def previous_chart(tmp: Path) -> Path:
    old = tmp / "kftenancy-0.2.0"
    shutil.copytree(CHART, old)
    meta = yaml.safe_load((old / "Chart.yaml").read_text())
    meta.update(version="0.2.0", appVersion="0.0.9")
    (old / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return old


async def _token_kubeconfig(lab: LocalCluster, admin: Kube, path: Path) -> Path:
    return await service_account_kubeconfig(lab, admin, c.COMPONENT_CONTROLLER, NS, path)


def running(kubeconfig: Path) -> contextlib.AbstractAsyncContextManager[Controller]:
    return running_controller(
        ControllerSettings(
            kubeconfig=str(kubeconfig),
            metrics_port=0,
            leader_election=True,
            lease_namespace=NS,
            apply_platform=False,
            event_namespace=NS,
        )
    )


async def _all_ready(kube: Kube, names: list[str]) -> bool:
    for name in names:
        p = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
        conditions = ((p or {}).get("status") or {}).get("conditions") or []
        if not any(x["type"] == "Ready" and x["status"] == "True" for x in conditions):
            return False
    return True


async def _versions(kube: Kube, names: list[str]) -> dict[tuple[str, str, str], str]:
    out = {}
    for name in names:
        for obj in await kube.list_owned(KNOWN_KINDS, tenant=name):
            meta = obj["metadata"]
            out[(obj["kind"], meta.get("namespace", ""), meta["name"])] = meta["resourceVersion"]
        p = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
        assert p is not None
        out[("Profile", "", name)] = p["metadata"]["resourceVersion"]
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin(lab: LocalCluster) -> AsyncIterator[Kube]:
    kube = Kube.from_kubeconfig(str(lab.admin_kubeconfig))
    yield kube
    await kube.close()


async def test_helm_upgrade_keeps_tenants_ready_without_writes_then_uninstall_keeps_them(
    lab: LocalCluster, admin: Kube, tmp_path: Path
) -> None:
    home = tmp_path / "helm"
    kc = lab.admin_kubeconfig
    await admin.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    )
    mode = ["--set", "certificates.mode=chart"]
    helm(
        "install",
        "kftenancy",
        str(previous_chart(tmp_path)),
        "-n",
        NS,
        "--create-namespace",
        "--set",
        "controller.replicas=1",
        *mode,
        home=home,
        kubeconfig=kc,
    )
    ca_before = await admin.get("v1", "Secret", "kftenancy-ca", NS)
    assert ca_before is not None
    policy_obj = await admin.get(f"{c.API_GROUP}/{c.API_VERSION}", c.POLICY_KIND, "default")
    policy = load_policy(policy_obj)

    names = []
    async with running(await _token_kubeconfig(lab, admin, tmp_path / "ctl-1")):
        for i in range(3):
            profile = profile_for_user(policy, f"user{i}-{uuid.uuid4().hex[:4]}@example.com")
            names.append(profile["metadata"]["name"])
            await admin.create(profile)
        await eventually(lambda: _all_ready(admin, names), 90, "3 tenants Ready")
    before = await _versions(admin, names)
    assert len(before) > 3 * 5

    # The documented upgrade: CRDs first (Helm never upgrades crds/), then helm upgrade.
    for path in sorted((CHART / "crds").glob("*.yaml")):
        await admin.apply(yaml.safe_load(path.read_text()))
    upgraded = helm("upgrade", "kftenancy", str(CHART), "-n", NS, *mode, home=home, kubeconfig=kc)
    assert "has been upgraded" in upgraded.stdout
    deployment = await admin.get("apps/v1", "Deployment", c.COMPONENT_CONTROLLER, NS)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    ca_after = await admin.get("v1", "Secret", "kftenancy-ca", NS)
    assert ca_after is not None and ca_after["data"] == ca_before["data"]  # CA kept

    # The controller's pods roll: a new process, a full reconcile of every tenant.
    async with running(await _token_kubeconfig(lab, admin, tmp_path / "ctl-2")) as ctl:
        await eventually(lambda: _all_ready(admin, names), 60, "tenants Ready after upgrade")
        await eventually(
            lambda: _reconciled(ctl, names), 60, "every tenant reconciled by the new controller"
        )
        assert ctl.kube.writes.total == 0, ctl.kube.writes.snapshot()
    assert await _versions(admin, names) == before  # not one tenant object rewritten

    helm("uninstall", "kftenancy", "-n", NS, home=home, kubeconfig=kc)
    assert await admin.get("apps/v1", "Deployment", c.COMPONENT_CONTROLLER, NS) is None
    for name in names:
        assert await admin.get("v1", "Namespace", name) is not None
        assert await admin.get(PROFILE_API_VERSION, c.PROFILE_KIND, name) is not None


async def _reconciled(ctl: Controller, names: list[str]) -> bool:
    return ctl.reconciled >= len(names) and len(ctl.queue) == 0
