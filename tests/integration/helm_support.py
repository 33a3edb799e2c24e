"""Running the real Helm (built by hack/build-tools.sh) against the chart (test helper)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

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
