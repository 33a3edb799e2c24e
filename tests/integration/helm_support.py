"""Running the real Helm (built by hack/build-tools.sh) against the chart, and running a
chart component with its ServiceAccount's token (test helpers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.tools import tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kftenancy"
KUBE_VERSION = "1.36.3"


def helm(
    *args: str, home: Path, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run helm with its config/cache/data under `home` (never the user's)."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=env, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def template(home: Path, *sets: str, chart: Path = CHART) -> list[dict[str, Any]]:
    """`helm template` of the chart into the kftenancy namespace, as objects."""
    args = ["template", "kftenancy", str(chart), "-n", "kftenancy", "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    out = helm(*args, home=home).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def chart_for_policy(tmp: Path, spec: dict[str, Any]) -> Path:
    """A copy of the chart regenerated for the policy `spec` (what `kftenancy chart
    --policy P --dir COPY` writes), for values that depend on the policy."""
    from kftenancy.render.chart import chart_files

    out = tmp / "chart"
    shutil.copytree(CHART, out)
    for rel, text in chart_files(spec).items():
        (out / rel).write_text(text)
    return out


async def service_account_kubeconfig(
    lab: LocalCluster, admin: Kube, name: str, namespace: str, path: Path
) -> Path:
    """A kubeconfig with a TokenRequest token of ServiceAccount `namespace/name` (an hour):
    what the chart's pod would run with."""
    req = ServiceAccountToken(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
    )
    issued = await admin.client.create(req, name=name, namespace=namespace)
    assert issued.status is not None
    return token_kubeconfig(lab, str(issued.status.token), path)


def token_kubeconfig(lab: LocalCluster, token: str, path: Path) -> Path:
    """A kubeconfig for the lab's API server with a bearer token."""
    config = yaml.safe_load(lab.admin_kubeconfig.read_text())
    cluster = config["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


@contextlib.asynccontextmanager
async def running_controller(settings: ControllerSettings) -> AsyncIterator[Controller]:
    """The real controller in this process (as its pod would run it), ready, then stopped."""
    ctl = Controller(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))

    async def started() -> bool:
        if task.done():
            task.result()
            raise AssertionError("controller stopped")
        return ctl.ready.is_set()

    try:
        await eventually(started, 60, "controller ready")
        yield ctl
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await ctl.kube.close()


async def eventually(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """`check()`'s first truthy answer within `within` seconds, else AssertionError."""
    deadline = asyncio.get_running_loop().time() + within
    got: Any = None
    while asyncio.get_running_loop().time() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"not true within {within}s: {what} (last: {got})")
