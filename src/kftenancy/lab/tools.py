"""Where the install tools (helm, operator-verify) and the benchmarks' load generator
(vegeta) are: `hack/build-tools.sh` builds and caches them by version (the one source of
versions and paths); this module asks it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kftenancy.lab.binaries import parse_print_dir
from kftenancy.lab.errors import ControlPlaneError

TOOLS_SCRIPT = Path(__file__).resolve().parents[3] / "hack" / "build-tools.sh"


def tool(name: str, *, build: bool = True) -> Path:
    """The path of `name` (helm | operator-verify | vegeta), built first when missing and
    `build`.
    Raises ControlPlaneError naming the fix when it cannot be had."""
    if not TOOLS_SCRIPT.is_file():
        raise ControlPlaneError(f"cannot find {TOOLS_SCRIPT} (not a source checkout)")
    done = subprocess.run(
        ["bash", str(TOOLS_SCRIPT), "--print-dir", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ControlPlaneError(f"{TOOLS_SCRIPT} --print-dir {name} failed:\n{done.stderr}")
    path = parse_print_dir(done.stdout)[name]
    if not os.access(path, os.X_OK) and build:
        built = subprocess.run(
            ["bash", str(TOOLS_SCRIPT), name], capture_output=True, text=True, check=False
        )
        if built.returncode != 0:
            raise ControlPlaneError(
                f"building {name} failed ({TOOLS_SCRIPT}, exit {built.returncode}):\n"
                + "\n".join(built.stderr.splitlines()[-40:])
            )
    if not os.access(path, os.X_OK):
        raise ControlPlaneError(f"{name} is not built at {path}; fix: run {TOOLS_SCRIPT} {name}")
    return path
