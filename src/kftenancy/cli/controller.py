"""`kftenancy run controller`, `onboard`, `offboard`, `status` and `plan`.

Every flag defaults from an environment variable (KFTENANCY_*). Bad input exits with
code 2 and a message naming what was wrong; API failures exit 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from kftenancy import constants as c
from kftenancy.cli.run import run_app
from kftenancy.errors import KftenancyError, describe_validation_error
from kftenancy.kube import ApiError, Kube
from kftenancy.policy import TenancyPolicySpec, load_policy

T = TypeVar("T")

Kubeconfig = Annotated[
    str | None,
    typer.Option(
        envvar="KFTENANCY_KUBECONFIG",
        help="kubeconfig file (default: in-cluster, KUBECONFIG, ~/.kube/config).",
    ),
]
PolicyFile = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        envvar="KFTENANCY_POLICY",
        help="Policy YAML to use instead of the cluster's TenancyPolicy.",
    ),
]


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _run(make: Callable[[Kube], Awaitable[T]], kubeconfig: str | None) -> T:
    async def go() -> T:
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            return await make(kube)
        finally:
            await kube.close()

    try:
        return asyncio.run(go())
    except KftenancyError as err:
        raise _fail(str(err)) from None
    except ApiError as err:
        raise _fail(f"Kubernetes API: {err.status.message}", 1) from None
    except OSError as err:
        raise _fail(f"cannot reach the Kubernetes API: {err}", 1) from None


def _read_policy_file(file: Path) -> Any:
    try:
        return yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise KftenancyError(f"{file}: cannot read policy: {err}") from None


async def _policy(kube: Kube, file: Path | None) -> TenancyPolicySpec:
    try:
        if file is not None:
            return load_policy(_read_policy_file(file))
        obj = await kube.get(f"{c.API_GROUP}/{c.API_VERSION}", c.POLICY_KIND, c.DEFAULT_POLICY_NAME)
        return load_policy(obj)
    except ValidationError as err:
        raise KftenancyError(describe_validation_error(err, str(file or "TenancyPolicy"))) from None


def configure_logging(fmt: LogFormat, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == LogFormat.JSON:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("kopf").setLevel(max(logging.INFO, root.level))
    # kopf runs in its own thread by design (see controllers/operator.py): no OS signals there.
    logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)


def _age(created: str | None, now: datetime) -> str:
    if not created:
        return "?"
    seconds = int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_QUOTA_SHOWN = (
    ("cpu", ("requests.cpu", "cpu")),
    ("memory", ("requests.memory", "memory")),
    ("gpu", ("requests.nvidia.com/gpu",)),
)


def _quota_use(quota: dict[str, Any] | None) -> dict[str, str]:
    if not quota:
        return {}
    status = quota.get("status") or {}
    hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
    used = status.get("used") or {}
    out = {}
    for label, keys in _QUOTA_SHOWN:
        for key in keys:
            if key in hard:
                out[label] = f"{used.get(key, '?')}/{hard[key]}"
                break
    return out


async def tenant_rows(kube: Kube, now: datetime) -> list[dict[str, Any]]:
    from kftenancy.controllers.tenant import PROFILE_API_VERSION, READY

    profiles = await kube.list(PROFILE_API_VERSION, c.PROFILE_KIND)
    quotas = {
        q["metadata"]["namespace"]: q
        for q in await kube.list("v1", "ResourceQuota", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY})
        if q["metadata"]["name"] == "kf-resource-quota"
    }
    gpu = await _gpu_views(kube)
    rows = []
    from kftenancy.onboarding import owner_of

    for p in sorted(profiles, key=lambda p: str(p["metadata"]["name"])):
        meta = p["metadata"]
        ready: dict[str, Any] = next(
            (x for x in (p.get("status") or {}).get("conditions") or [] if x.get("type") == READY),
            {},
        )
        owner = (p.get("spec") or {}).get("owner") or {}
        rows.append(
            {
                "name": meta["name"],
                "owner": owner_of(p) or owner.get("name"),
                "namespace": meta["name"],
                "ready": ready.get("status", "Unknown"),
                "reason": ready.get("reason", ""),
                "message": ready.get("message", ""),
                "age": _age(meta.get("creationTimestamp"), now),
                "terminating": bool(meta.get("deletionTimestamp")),
                "quota": _quota_use(quotas.get(meta["name"])),
                "gpu": gpu.get(meta["name"]),
            }
        )
    return rows


async def _gpu_views(kube: Kube) -> dict[str, dict[str, Any]]:
    """Per tenant with a Kueue ClusterQueue of ours: GPU guarantee/in use/borrowed/pending."""
    from dataclasses import asdict

    from kftenancy.capacity.status import tenant_gpu

    queues = await kube.list(c.KUEUE_API, "ClusterQueue", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY})
    if not queues:
        return {}
    workloads: dict[str, list[dict[str, Any]]] = {}
    for w in await kube.list(c.KUEUE_API, "Workload"):
        workloads.setdefault(str(w["metadata"].get("namespace")), []).append(w)
    out = {}
    for q in queues:
        name = str(q["metadata"]["name"])
        view = asdict(tenant_gpu(name, q, workloads.get(name, [])))
        view.pop("tenant")
        out[name] = view
    return out


def register(app: typer.Typer) -> None:
    register_demo(app)

    @run_app.command("controller")
    def run_controller(
        kubeconfig: Kubeconfig = None,
        policy_name: Annotated[
            str, typer.Option(envvar="KFTENANCY_POLICY_NAME", help="The TenancyPolicy to follow.")
        ] = c.DEFAULT_POLICY_NAME,
        workers: Annotated[int, typer.Option(envvar="KFTENANCY_WORKERS", min=1, max=256)] = 8,
        resync_seconds: Annotated[
            float,
            typer.Option(envvar="KFTENANCY_RESYNC_SECONDS", min=1.0, help="Full resync period."),
        ] = 300.0,
        capacity_seconds: Annotated[
            float,
            typer.Option(
                envvar="KFTENANCY_CAPACITY_SECONDS",
                min=0.0,
                help="GPU headroom / tenant GPU status loop period; 0 = off.",
            ),
        ] = 5.0,
        metrics_host: Annotated[str, typer.Option(envvar="KFTENANCY_METRICS_HOST")] = "127.0.0.1",
        metrics_port: Annotated[
            int,
            typer.Option(
                envvar="KFTENANCY_METRICS_PORT", help="HTTPS /healthz and /metrics; 0 = off."
            ),
        ] = 8080,
        tls_cert: Annotated[str | None, typer.Option(envvar="KFTENANCY_TLS_CERT")] = None,
        tls_key: Annotated[str | None, typer.Option(envvar="KFTENANCY_TLS_KEY")] = None,
        leader_election: Annotated[
            bool,
            typer.Option(envvar="KFTENANCY_LEADER_ELECTION", help="One active replica (Lease)."),
        ] = True,
        lease_namespace: Annotated[
            str | None, typer.Option(envvar="KFTENANCY_LEASE_NAMESPACE")
        ] = None,
        apply_platform: Annotated[
            bool,
            typer.Option(
                envvar="KFTENANCY_APPLY_PLATFORM",
                help="Apply the platform objects (CRDs, RBAC, webhook configuration) at start "
                "and on policy change; off when a chart or GitOps owns them.",
            ),
        ] = True,
        event_namespace: Annotated[
            str, typer.Option(envvar="KFTENANCY_EVENT_NAMESPACE")
        ] = "default",
        log_format: Annotated[
            LogFormat, typer.Option(envvar="KFTENANCY_LOG_FORMAT")
        ] = LogFormat.JSON,
        log_level: Annotated[str, typer.Option(envvar="KFTENANCY_LOG_LEVEL")] = "info",
        write_log: Annotated[
            str | None,
            typer.Option(
                envvar="KFTENANCY_WRITE_LOG",
                help="Append a JSON line per API write and reconcile to this file (audit).",
            ),
        ] = None,
        datalake_config: Annotated[
            str | None,
            typer.Option(
                envvar="KFTENANCY_DATALAKE_CONFIG",
                help="Keep the data lake's storage configuration (SeaweedFS IAM file, or the "
                "AWS role bundle) in this file, in step with the tenants.",
            ),
        ] = None,
        datalake_reload_command: Annotated[
            str | None,
            typer.Option(
                envvar="KFTENANCY_DATALAKE_RELOAD_COMMAND",
                help="Run after each change of --datalake-config (e.g. restart SeaweedFS, or "
                "apply the AWS roles); split like a shell would, not run by one.",
            ),
        ] = None,
        datalake_signing_key_file: Annotated[
            str | None,
            typer.Option(
                envvar="KFTENANCY_DATALAKE_SIGNING_KEY_FILE",
                help="The STS session signing key (>= 32 bytes; s3compatible).",
            ),
        ] = None,
    ) -> None:
        """Run the tenant controller (Profiles → workspaces, onboarding, offboarding)."""
        from kftenancy.controllers.operator import Controller, ControllerSettings

        configure_logging(log_format, log_level)
        settings = ControllerSettings(
            kubeconfig=kubeconfig,
            policy_name=policy_name,
            workers=workers,
            resync_seconds=resync_seconds,
            capacity_seconds=capacity_seconds,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            leader_election=leader_election,
            apply_platform=apply_platform,
            lease_namespace=lease_namespace,
            event_namespace=event_namespace,
            write_log=write_log,
            datalake_config=datalake_config,
            datalake_reload_command=datalake_reload_command,
            datalake_signing_key_file=datalake_signing_key_file,
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            controller = Controller(settings)
            try:
                await controller.run(stop)
            finally:
                await controller.kube.close()

        try:
            asyncio.run(main())
        except KftenancyError as err:
            raise _fail(str(err), 1) from None

    @app.command("onboard")
    def onboard_cmd(
        users: Annotated[
            list[str], typer.Argument(help="User ids (as the identity provider sends them).")
        ],
        kubeconfig: Kubeconfig = None,
        policy: PolicyFile = None,
    ) -> None:
        """Create a Profile for each user (idempotent: an existing one is left as is)."""
        from kftenancy.onboarding import ensure_profile

        async def go(kube: Kube) -> None:
            pol = await _policy(kube, policy)
            for user in users:
                result = await ensure_profile(kube, pol, user, source="cli")
                verb = "created" if result.created else "exists"
                typer.echo(f"{user}: Profile {result.name} {verb}")

        _run(go, kubeconfig)

    @app.command("offboard")
    def offboard_cmd(
        users: Annotated[list[str], typer.Argument(help="User ids to offboard.")],
        kubeconfig: Kubeconfig = None,
        policy: PolicyFile = None,
    ) -> None:
        """Revoke the users' access now; keep their namespaces and data for the policy's
        retention period (offboarding.retentionDays; unset keeps them forever)."""
        from kftenancy.onboarding import offboard

        async def go(kube: Kube) -> None:
            pol = await _policy(kube, policy)
            for user in users:
                result = await offboard(kube, pol, user)
                what = "offboarded" if result.existed else "had no Profile (access objects removed)"
                typer.echo(f"{user}: {result.name} {what}; namespace kept")

        _run(go, kubeconfig)

    @app.command("status")
    def status_cmd(
        kubeconfig: Kubeconfig = None,
        output: Annotated[Output, typer.Option("--output", "-o")] = Output.TABLE,
    ) -> None:
        """Tenants: owner, namespace, Ready, reason, age, quota use (incl. GPUs); with
        Kueue queues, GPU guarantee, in use, borrowed and pending per tenant."""
        rows = _run(lambda kube: tenant_rows(kube, datetime.now(UTC)), kubeconfig)
        if output == Output.JSON:
            typer.echo(json.dumps(rows, indent=2))
            return
        _print_status(rows)

    @app.command("plan")
    def plan_cmd(
        kubeconfig: Kubeconfig = None,
        policy: PolicyFile = None,
        output: Annotated[Output, typer.Option("--output", "-o")] = Output.TABLE,
    ) -> None:
        """What the controller would change on the current cluster (no writes)."""
        from kftenancy.controllers.tenant import PROFILE_API_VERSION, TenantReconciler
        from kftenancy.profile import ProfileError
        from kftenancy.reconcile import namespace_verdict

        async def go(kube: Kube) -> dict[str, Any]:
            pol = await _policy(kube, policy)
            rec = TenantReconciler(kube, lambda: pol, now=lambda: datetime.now(UTC))
            out: dict[str, Any] = {}
            for prof in await kube.list(PROFILE_API_VERSION, c.PROFILE_KIND):
                name = prof["metadata"]["name"]
                try:
                    verdict = namespace_verdict(
                        await kube.get("v1", "Namespace", name),
                        name,
                        upstream=pol.platform.kubeflow_profile_controller,
                        profile_uid=prof["metadata"].get("uid"),
                    )
                    if not verdict.allowed:
                        out[name] = {"refused": verdict.message}
                        continue
                    p, _ = await rec.plan_for(prof)
                except ProfileError as err:
                    out[name] = {"invalid": str(err)}
                    continue
                out[name] = p.summary()
            return out

        result = _run(go, kubeconfig)
        if output == Output.JSON:
            typer.echo(json.dumps(result, indent=2))
            return
        console = Console()
        changes = 0
        for name, item in result.items():
            for verb, style in (("create", "green"), ("update", "yellow"), ("prune", "red")):
                for what in item.get(verb, []):
                    console.print(f"[{style}]{verb:>6}[/] {name}: {what}", highlight=False)
                    changes += 1
            for key in ("refused", "invalid"):
                if key in item:
                    console.print(f"[red]{key:>6}[/] {name}: {item[key]}", highlight=False)
        console.print(f"{changes} change(s) across {len(result)} tenant(s)")


def register_demo(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        users: Annotated[list[str], typer.Argument(help="Users to onboard.")],
        policy: Annotated[
            Path,
            typer.Option("--policy", envvar="KFTENANCY_POLICY", help="Policy YAML to install."),
        ],
        kubeconfig: Kubeconfig = None,
        serve: Annotated[
            bool, typer.Option(help="Keep the controller running after the status table.")
        ] = False,
        within: Annotated[float, typer.Option(help="Seconds to wait for Ready.")] = 120.0,
    ) -> None:
        """Install the policy, run the controller, onboard users, print the status table."""
        from kftenancy.controllers.operator import Controller, ControllerSettings
        from kftenancy.onboarding import ensure_profile

        configure_logging(LogFormat.TEXT, "warning")
        data = _read_policy_file(policy)
        try:
            spec = load_policy(data)
        except ValidationError as err:
            raise _fail(describe_validation_error(err, str(policy))) from None
        manifest = {
            "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
            "kind": c.POLICY_KIND,
            "metadata": {"name": c.DEFAULT_POLICY_NAME},
            "spec": (data or {}).get("spec", data) if isinstance(data, dict) else {},
        }

        async def go(kube: Kube) -> list[dict[str, Any]]:
            console = Console()
            await kube.apply(manifest)
            console.print(f"policy {policy} installed as TenancyPolicy {c.DEFAULT_POLICY_NAME}")
            settings = ControllerSettings(
                kubeconfig=kubeconfig,
                metrics_port=0,
                leader_election=False,
                # the rendered webhook configuration needs the webhook Service in-cluster
                apply_platform=False,
            )
            controller = Controller(settings)
            stop = asyncio.Event()
            task = asyncio.create_task(controller.run(stop))
            try:
                while not controller.ready.is_set():
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.1)
                console.print("controller running")
                names = []
                for user in users:
                    result = await ensure_profile(kube, spec, user, source="cli")
                    names.append(result.name)
                    console.print(f"onboarded {user!r} → Profile {result.name}")
                deadline = asyncio.get_running_loop().time() + within
                while True:
                    rows = await tenant_rows(kube, datetime.now(UTC))
                    pending = [r for r in rows if r["name"] in names and r["ready"] != "True"]
                    if not pending or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                if serve:
                    _print_status(rows)
                    console.print("controller keeps running; Ctrl-C stops it")
                    loop = asyncio.get_running_loop()
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(sig, stop.set)
                    await stop.wait()
                return rows
            finally:
                stop.set()
                await task
                await controller.kube.close()

        rows = _run(go, kubeconfig)
        if not serve:
            _print_status(rows)
        if any(r["ready"] != "True" for r in rows):
            raise typer.Exit(1)


def _print_status(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"kftenancy tenants ({len(rows)})")
    queues = any(r.get("gpu") for r in rows)
    gpu_cols = ("GPU guar.", "in use", "borrowed", "pending") if queues else ()
    for col in ("Tenant", "Owner", "Ready", "Reason", "Age", "CPU", "Memory", "GPU", *gpu_cols):
        table.add_column(col)
    for r in rows:
        q = r["quota"]
        ready = (
            "[yellow]Terminating[/]"
            if r["terminating"]
            else ("[green]True[/]" if r["ready"] == "True" else f"[red]{r['ready']}[/]")
        )
        g = r.get("gpu") or {}
        gpu = [str(g.get(k, "-")) for k in ("guarantee", "in_use", "borrowed", "pending")]
        table.add_row(
            r["name"], str(r["owner"]), ready, r["reason"], r["age"],
            q.get("cpu", "-"), q.get("memory", "-"), q.get("gpu", "-"),
            *(gpu if queues else []),
        )  # fmt: skip
    Console().print(table)
