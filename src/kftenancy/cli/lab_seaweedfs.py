"""`kftenancy lab seaweedfs up | reload | env | down`: the lab's real S3 + STS.

`up` starts SeaweedFS (`kftenancy.lab.seaweedfs`) in the background next to a running
`kftenancy lab`, trusting its service-account issuer, with no tenant yet; `env` prints the
exports that make `kftenancy run controller` keep its configuration in step with the
tenants (`KFTENANCY_DATALAKE_CONFIG`, `..._RELOAD_COMMAND` = `lab seaweedfs reload`,
`..._SIGNING_KEY_FILE`); `reload` restarts it on the configuration file as it is now
(SeaweedFS reads it only at start; data and ports stay); `down` stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from kftenancy.cli.lab import STATE_DIR_OPTION
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.lab.processes import pid_runs, wait_until
from kftenancy.lab.seaweedfs import AdminCredentials, SeaweedFS, remove_sockets
from kftenancy.lab.state import read_state
from kftenancy.policy import load_policy
from kftenancy.render.seaweedfs import config_bytes, seaweedfs_iam_config

out = Console()
err = Console(stderr=True)

STATE = "seaweedfs.json"
LAB_AUDIENCE = "sts.amazonaws.com"


@dataclass(frozen=True)
class SeaweedState:
    pid: int
    executable: str
    endpoint: str
    workdir: str
    ca_file: str
    ports: dict[str, int]
    access_key: str
    secret_key: str
    signing_key_file: str
    buckets: list[str]

    @property
    def iam_config(self) -> Path:
        return Path(self.workdir) / "iam.json"


def _dir(state_dir: Path) -> Path:
    return state_dir / "seaweedfs"


def _read(state_dir: Path) -> SeaweedState | None:
    path = _dir(state_dir) / STATE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return SeaweedState(**data)


def _write(state_dir: Path, state: SeaweedState) -> None:
    path = _dir(state_dir) / STATE
    path.write_text(json.dumps(asdict(state), indent=2, sort_keys=True))
    path.chmod(0o600)


def _kill(state: SeaweedState) -> None:
    if pid_runs(state.pid, state.executable):
        os.kill(state.pid, signal.SIGKILL)  # SeaweedFS ignores SIGTERM
        wait_until(lambda: not pid_runs(state.pid, state.executable), 10.0)
        remove_sockets(state.ports)


def _launch(state: SeaweedState | None, *, workdir: Path, ca_file: str, buckets: list[str],
            signing_key_file: Path, config: bytes) -> SeaweedState:  # fmt: skip
    sw = SeaweedFS(
        ca_file=Path(ca_file),
        buckets=tuple(buckets),
        workdir=workdir,
        die_with_parent=False,
        ports=dict(state.ports) if state else None,
        admin=AdminCredentials(state.access_key, state.secret_key) if state else None,
    )
    sw.start(config)
    assert sw.process is not None
    return SeaweedState(
        pid=sw.process.pid,
        executable=sw.process.argv[0],
        endpoint=sw.endpoint,
        workdir=str(workdir),
        ca_file=ca_file,
        ports=sw.ports,
        access_key=sw.admin.access_key,
        secret_key=sw.admin.secret_key,
        signing_key_file=str(signing_key_file),
        buckets=buckets,
    )


BUCKET_OPTION = typer.Option(["datalake"], help="Buckets to create (repeatable).")


def up(
    state_dir: Path = STATE_DIR_OPTION,
    bucket: list[str] = BUCKET_OPTION,
) -> None:
    """Start SeaweedFS trusting the running lab's issuer (idempotent)."""
    lab = read_state(state_dir)
    if lab is None:
        err.print(f"no lab in {state_dir}: start one with `kftenancy lab up` first")
        raise typer.Exit(1)
    existing = _read(state_dir)
    if existing is not None and pid_runs(existing.pid, existing.executable):
        out.print(f"seaweedfs already running at {existing.endpoint}")
        return
    workdir = _dir(state_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "sts-signing.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    policy = load_policy(
        {"dataLake": {"enabled": True, "provider": "s3compatible", "issuerUrl": lab.issuer,
                      "audience": LAB_AUDIENCE}}
    )  # fmt: skip
    config = config_bytes(
        seaweedfs_iam_config(policy, [], signing_key=key_file.read_bytes().strip())
    )
    try:
        state = _launch(None, workdir=workdir, ca_file=lab.ca_file, buckets=bucket,
                        signing_key_file=key_file, config=config)  # fmt: skip
    except ControlPlaneError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    _write(state_dir, state)
    out.print(f"seaweedfs (S3 + STS) running at {state.endpoint}, trusting {lab.issuer}")
    out.print(f'use it with: eval "$(kftenancy lab seaweedfs env --state-dir {state_dir})"')


def reload(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Restart SeaweedFS on its configuration file as it is now (the controller's hook)."""
    state = _read(state_dir)
    if state is None:
        err.print(f"no seaweedfs in {state_dir}: start it with `kftenancy lab seaweedfs up`")
        raise typer.Exit(1)
    _kill(state)
    try:
        new = _launch(state, workdir=Path(state.workdir), ca_file=state.ca_file,
                      buckets=state.buckets, signing_key_file=Path(state.signing_key_file),
                      config=state.iam_config.read_bytes())  # fmt: skip
    except ControlPlaneError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    _write(state_dir, new)
    out.print(f"seaweedfs restarted at {new.endpoint}")


def env(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Exports for the controller and for S3 clients: eval "$(kftenancy lab seaweedfs env)"."""
    state = _read(state_dir)
    if state is None:
        err.print(f"no seaweedfs in {state_dir}: start it with `kftenancy lab seaweedfs up`")
        raise typer.Exit(1)
    beside = Path(sys.executable).parent / "kftenancy"
    kftenancy = str(beside) if beside.exists() else (shutil.which("kftenancy") or "kftenancy")
    exports = {
        "KFTENANCY_LAB_S3_ENDPOINT": state.endpoint,
        "KFTENANCY_DATALAKE_CONFIG": str(state.iam_config),
        "KFTENANCY_DATALAKE_RELOAD_COMMAND": (
            f"{kftenancy} lab seaweedfs reload --state-dir {shlex.quote(str(state_dir))}"
        ),
        "KFTENANCY_DATALAKE_SIGNING_KEY_FILE": state.signing_key_file,
    }
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")


def down(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Stop SeaweedFS and remove its data."""
    state = _read(state_dir)
    if state is None:
        out.print(f"no seaweedfs in {state_dir}: nothing to stop")
        return
    _kill(state)
    shutil.rmtree(_dir(state_dir), ignore_errors=True)
    out.print("seaweedfs stopped")


def register(lab: typer.Typer) -> None:
    sw = typer.Typer(help="The lab's real S3 + STS (SeaweedFS).", no_args_is_help=True)
    sw.command("up")(up)
    sw.command("reload")(reload)
    sw.command("env")(env)
    sw.command("down")(down)
    lab.add_typer(sw, name="seaweedfs")
