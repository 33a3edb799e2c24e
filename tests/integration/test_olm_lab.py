"""The OLM bundle with operator-framework's own validator and the real API server.

`operator-verify manifests` (github.com/operator-framework/api v0.9.1, built by
hack/build-tools.sh: the newest version the module proxy serves) exits 0 even when it
finds errors, so the test fails on its `level=error` lines, and first shows that a broken
bundle does produce them (the validator really runs). Then the module's own
operators.coreos.com CRDs are installed into the lab and every bundle manifest,
the ClusterServiceVersion included, passes a server-side dry-run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.tools import tool

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "olm" / "manifests"


def verify(directory: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of operator-verify with every optional validator."""
    done = subprocess.run(
        [
            str(tool("operator-verify")),
            "manifests",
            str(directory),
            "--object_validate",
            "--operatorhub_validate",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (done.stdout + done.stderr).splitlines()
    return [x for x in lines if "level=error" in x], [x for x in lines if "level=warning" in x]


def test_operator_verify_finds_no_error_in_the_bundle() -> None:
    errors, warnings = verify(MANIFESTS)
    assert errors == []
    assert warnings == []


def test_operator_verify_does_report_a_broken_bundle(tmp_path: Path) -> None:
    broken = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, broken)
    csv = broken / "kftenancy.clusterserviceversion.yaml"
    csv.write_text(csv.read_text().replace("kind: TenancyPolicy\n", "kind: TenancyPolicyX\n"))
    errors, _ = verify(broken)
    assert any("TenancyPolicyX" in e and "not found in bundle" in e for e in errors), errors


@pytest_asyncio.fixture(loop_scope="session")
async def kube(cluster: LocalCluster) -> Any:
    olm_crds = tool("operator-verify").parent / "olm-crds"
    docs = [yaml.safe_load(p.read_text()) for p in sorted(olm_crds.glob("*.yaml"))]
    cluster.install_crds([d for d in docs if d])
    k = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    await k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kftenancy"}})
    yield k
    await k.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_every_bundle_manifest_passes_a_server_side_dry_run(kube: Kube) -> None:
    kinds = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        if obj["kind"] != "CustomResourceDefinition":
            obj["metadata"]["namespace"] = "kftenancy"  # OLM installs into the operator namespace
        await kube.apply(obj, dry_run=True)
        kinds.append(obj["kind"])
    assert "ClusterServiceVersion" in kinds and "CustomResourceDefinition" in kinds
