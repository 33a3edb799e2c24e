"""Where the control-plane binaries are, and building them when they are missing.

`hack/build-control-plane.sh` is the one source of truth for versions and cache paths
(`${KFTENANCY_CACHE:-~/.cache/kftenancy}/bin/<version>/<binary>`); this module asks it.
`KFTENANCY_BIN_DIR` points at a directory that already holds all the binaries instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kftenancy.lab.errors import ControlPlaneError

ALL_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kueue",
)
# kwok's stages (what makes fake nodes Ready and pods Running), generated next to it.
KWOK_STAGES = "kwok-stages"
# Kueue's CRDs and webhook configuration (a directory), copied next to its binary.
KUEUE_MANIFESTS = "kueue-manifests"

_REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = _REPO / "hack" / "build-control-plane.sh"

GO_MISSING_FIX = (
    "Go is not installed, and the control-plane binaries are not built yet.\n"
    "fix: install Go 1.26 or newer (https://go.dev/doc/install or your package manager) so "
    "that `go` is on PATH, then run `hack/build-control-plane.sh` (or `kftenancy lab up`, "
    "which builds them). Alternatively set KFTENANCY_BIN_DIR to a directory holding "
    + ", ".join(ALL_BINARIES)
    + "."
)


def parse_print_dir(output: str) -> dict[str, Path]:
    """Parse `build-control-plane.sh --print-dir` output (`<binary> <path>` per line)."""
    paths: dict[str, Path] = {}
    for line in output.splitlines():
        if line.strip():
            name, _, path = line.partition(" ")
            paths[name] = Path(path.strip())
    return paths


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def binary_paths(names: tuple[str, ...] = ALL_BINARIES) -> dict[str, Path]:
    """The paths the binaries have (or will have once built); nothing is built. With
    kwok comes its stages config under the key KWOK_STAGES."""
    bin_dir = os.environ.get("KFTENANCY_BIN_DIR")
    if bin_dir:
        paths = {name: Path(bin_dir) / name for name in names}
        if "kwok" in names:
            paths[KWOK_STAGES] = Path(bin_dir) / "kwok-stages.yaml"
        if "kueue" in names:
            paths[KUEUE_MANIFESTS] = Path(bin_dir) / "kueue-manifests"
        return paths
    if not BUILD_SCRIPT.is_file():
        raise ControlPlaneError(
            f"cannot find {BUILD_SCRIPT} (kftenancy is not run from a source checkout).\n"
            "fix: set KFTENANCY_BIN_DIR to a directory holding " + ", ".join(names)
        )
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} --print-dir failed:\n{done.stderr}")
    return parse_print_dir(done.stdout)


def _present(name: str, path: Path) -> bool:
    if name == KWOK_STAGES:
        return path.is_file()
    if name == KUEUE_MANIFESTS:
        return (path / "webhooks.yaml").is_file()
    return os.access(path, os.X_OK)


def ensure_binaries(names: tuple[str, ...] = ALL_BINARIES) -> dict[str, Path]:
    """The binaries' paths, building the missing ones first (a cold build of
    kube-apiserver takes many minutes; progress goes to stderr). Raises
    ControlPlaneError with the build's error output when they cannot be had."""
    paths = binary_paths(names)
    missing = sorted(
        {
            {KWOK_STAGES: "kwok", KUEUE_MANIFESTS: "kueue"}.get(name, name)
            for name, path in paths.items()
            if not _present(name, path)
        }
    )
    if not missing:
        return paths
    if os.environ.get("KFTENANCY_BIN_DIR"):
        raise ControlPlaneError(
            f"KFTENANCY_BIN_DIR={os.environ['KFTENANCY_BIN_DIR']} lacks: {', '.join(missing)}"
        )
    if shutil.which("go") is None:
        raise ControlPlaneError(GO_MISSING_FIX + f"\nmissing: {', '.join(missing)}")
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *missing],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ControlPlaneError(
            f"building {', '.join(missing)} failed ({BUILD_SCRIPT}, exit {done.returncode}):\n"
            + _tail(done.stdout)
        )
    return paths
