"""The Helm chart with the real Helm and the real API server: lint, template, schemas,
server-side dry-run of every rendered object."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from helm_support import CHART, helm, template

from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from manifest_schemas import validate_manifest

MODES = [
    ("certificates.mode=cert-manager", "serviceMonitor.enabled=true"),
    ("certificates.mode=chart", "serviceMonitor.enabled=false"),
]


@pytest.mark.parametrize("sets", MODES)
def test_helm_lint_strict_passes(sets: tuple[str, ...], tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART), "-n", "kftenancy", "--kube-version", "1.36.3"]
    for s in sets:
        args += ["--set", s]
    done = helm(*args, home=tmp_path)
    assert "0 chart(s) failed" in done.stdout


def test_template_refuses_a_policy_the_chart_was_not_generated_from(tmp_path: Path) -> None:
    # (helm lint downgrades a template's `fail` to INFO by design; install/template fail.)
    done = helm(
        "template",
        str(CHART),
        "--kube-version",
        "1.36.3",
        "-n",
        "kftenancy",
        "--set",
        "policy.gpu.enabled=false",
        home=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "kftenancy chart --policy" in done.stdout + done.stderr


def test_lint_refuses_a_value_the_model_refuses(tmp_path: Path) -> None:
    done = helm(
        "lint",
        str(CHART),
        "-n",
        "kftenancy",
        "--set",
        "policy.gpu.taint.effect=Sometimes",
        home=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "/policy/gpu/taint/effect" in done.stdout + done.stderr


@pytest_asyncio.fixture(loop_scope="session")
async def kube(cluster: LocalCluster) -> Any:
    k = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    await k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kftenancy"}})
    await k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
    yield k
    await k.close()


@pytest.mark.parametrize("sets", MODES)
@pytest.mark.asyncio(loop_scope="session")
async def test_every_rendered_object_is_valid_and_accepted_by_the_api_server(
    sets: tuple[str, ...], kube: Kube, tmp_path: Path
) -> None:
    objs = template(tmp_path, *sets)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ClusterRole"} <= kinds
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} <= kinds
    for obj in objs:
        validate_manifest(obj)
        await kube.apply(obj, dry_run=True)
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) == 3
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        assert d["spec"]["replicas"] >= 2
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "podAntiAffinity" in pod["affinity"]
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["livenessProbe"] and container["readinessProbe"]
        assert pod["serviceAccountName"] == d["metadata"]["name"]
