"""`kftenancy lab up | down | status | env`: the local control plane, in the background.

`up` builds the binaries if needed, starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (with fake GPU nodes), installs the CRDs and returns; the state
(pids, kubeconfig, logs) lives in the state directory. `env` prints shell exports,
`status` checks it, `down` stops exactly the processes `up` started.
"""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import typer
from rich.console import Console

from kftenancy.lab.cluster import COMPONENT_ORDER, LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.lab.processes import pid_runs, stop_pid
from kftenancy.lab.state import (
    LabState,
    ProcessRecord,
    default_state_dir,
    read_state,
    state_lock,
    write_state,
)

out = Console()
err = Console(stderr=True)

STATE_DIR_OPTION = typer.Option(
    default_factory=default_state_dir,
    envvar="KFTENANCY_LAB_DIR",
    help="Where the lab keeps its state, certificates, etcd data and logs.",
    show_default="$XDG_STATE_HOME/kftenancy/lab",
)


def _running(state: LabState) -> dict[str, bool]:
    return {name: pid_runs(p.pid, p.executable) for name, p in state.processes.items()}


def _ready(state: LabState) -> bool:
    pki = Path(state.workdir) / "pki"
    ctx = ssl.create_default_context(cafile=state.ca_file)
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"{state.server}/readyz", timeout=5, context=ctx) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _stop(state: LabState) -> None:
    for name in reversed(COMPONENT_ORDER):
        record = state.processes.get(name)
        if record is not None:
            stop_pid(record.pid, record.executable)


def up(
    state_dir: Path = STATE_DIR_OPTION,
    controller_manager: bool = typer.Option(True, help="Run kube-controller-manager."),
    scheduler: bool = typer.Option(True, help="Run kube-scheduler."),
    kwok: bool = typer.Option(True, help="Run kwok (fake nodes)."),
    gpu_nodes: int = typer.Option(1, min=0, help="Fake GPU nodes to create (needs kwok)."),
    gpus_per_node: int = typer.Option(4, min=1, help="nvidia.com/gpu capacity of each."),
) -> None:
    """Start the local control plane in the background (idempotent)."""
    with state_lock(state_dir, on_wait=lambda: _say_waiting(state_dir)):
        _up(state_dir, controller_manager, scheduler, kwok, gpu_nodes, gpus_per_node)


def _say_waiting(state_dir: Path) -> None:
    out.print(f"waiting for another `kftenancy lab` command on {state_dir} to finish")


def _up(
    state_dir: Path,
    controller_manager: bool,
    scheduler: bool,
    kwok: bool,
    gpu_nodes: int,
    gpus_per_node: int,
) -> None:
    existing = read_state(state_dir)
    if existing is not None:
        if all(_running(existing).values()) and _ready(existing):
            out.print(f"lab already running at {existing.server}")
            out.print(f'use it with: eval "$(kftenancy lab env --state-dir {state_dir})"')
            return
        _stop(existing)  # left over from a crash or a reboot: start afresh
    if gpu_nodes and not kwok:
        err.print("error: --gpu-nodes needs kwok (drop --no-kwok or pass --gpu-nodes 0)")
        raise typer.Exit(2)
    workdir = state_dir / "cluster"
    shutil.rmtree(workdir, ignore_errors=True)
    cluster = LocalCluster(
        controller_manager=controller_manager,
        scheduler=scheduler,
        kwok=kwok,
        workdir=workdir,
        die_with_parent=False,
    )
    try:
        with out.status("starting the local control plane (a first run builds it from Go)"):
            cluster.start()
            cluster.install_crds(bundled_crds())
            nodes = [f"gpu-node-{i}" for i in range(1, gpu_nodes + 1)]
            for node in nodes:
                cluster.add_gpu_node(node, gpus=gpus_per_node)
    except ControlPlaneError as error:
        cluster.stop()
        err.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except BaseException:
        cluster.stop()  # never leave a half-started lab running without a state file
        raise
    state = LabState(
        server=cluster.server,
        issuer=cluster.issuer,
        admin_kubeconfig=str(cluster.admin_kubeconfig),
        ca_file=str(cluster.ca_file),
        workdir=str(workdir),
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        startup_seconds=round(cluster.started_seconds, 2),
        processes={
            name: ProcessRecord(pid=p.pid, executable=p.argv[0], log_file=str(p.log_file))
            for name, p in cluster.processes.items()
        },
        gpu_nodes=nodes,
    )
    write_state(state_dir, state)
    out.print(
        f"lab running at {state.server} ({', '.join(state.processes)}; "
        f"started in {state.startup_seconds}s); logs in {cluster.logs}"
    )
    out.print(f'use it with: eval "$(kftenancy lab env --state-dir {state_dir})"')


def down(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Stop every process `lab up` started and remove the lab's data."""
    if not state_dir.is_dir():
        out.print(f"no lab in {state_dir}: nothing to stop")
        return
    with state_lock(state_dir, on_wait=lambda: _say_waiting(state_dir)):
        state = read_state(state_dir)
        if state is None:
            out.print(f"no lab in {state_dir}: nothing to stop")
            return
        _stop(state)
        from kftenancy.cli import lab_seaweedfs

        lab_seaweedfs.down(state_dir)  # the lab's SeaweedFS, if `lab seaweedfs up` ran
        shutil.rmtree(state.workdir, ignore_errors=True)
        (state_dir / "state.json").unlink(missing_ok=True)
    out.print(f"lab stopped ({', '.join(state.processes)})")


def status(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Show whether the lab's processes run and the API server is ready (exit 1 if not)."""
    state = read_state(state_dir)
    if state is None:
        err.print(f"no lab in {state_dir} (start one with `kftenancy lab up`)")
        raise typer.Exit(1)
    running = _running(state)
    ready = running.get("kube-apiserver", False) and _ready(state)
    out.print(f"server {state.server}: {'ready' if ready else 'NOT ready'}")
    for name, alive in running.items():
        record = state.processes[name]
        out.print(f"  {name:<24} pid {record.pid:<8} {'running' if alive else 'STOPPED'}")
    out.print(f"kubeconfig {state.admin_kubeconfig}")
    if not (ready and all(running.values())):
        raise typer.Exit(1)


def env(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Print shell exports for kubectl and kftenancy: eval "$(kftenancy lab env)"."""
    state = read_state(state_dir)
    if state is None:
        err.print(f"no lab in {state_dir} (start one with `kftenancy lab up`)")
        raise typer.Exit(1)
    for key, value in state.env().items():
        print(f"export {key}={shlex.quote(value)}")


def register(app: typer.Typer) -> None:
    """Add `kftenancy lab ...` to the top-level app."""
    lab = typer.Typer(
        help="A real local Kubernetes control plane for trying kftenancy (and its demo).",
        no_args_is_help=True,
    )
    lab.command("up")(up)
    lab.command("down")(down)
    lab.command("status")(status)
    lab.command("env")(env)
    from kftenancy.cli import lab_seaweedfs  # it imports this module

    lab_seaweedfs.register(lab)
    app.add_typer(lab, name="lab")
