"""`kftenancy datalake`: each tenant's bucket/prefix and role, and whether the storage
configuration the controller applied (`--config`, the file of `run controller
--datalake-config`) grants it. `kftenancy datalake publish`: hand that file to a storage
that runs in its own pods (a Secret it mounts, a rollout of its workload); the chart runs
it as the controller's `--datalake-reload-command`.

The rows are computed by `datalake_rows` from the Profiles and the policy (the same
functions the webhook and the controller use), so what is shown is what is enforced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kftenancy import constants as c
from kftenancy.cli.controller import Kubeconfig, Output, PolicyFile, _fail, _policy, _run
from kftenancy.controllers.datalake import active_tenants
from kftenancy.kube import Kube
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.iam import role_arn_for, tenant_prefix


def applied_roles(config: dict[str, Any]) -> set[str]:
    """Role ARNs in an applied storage configuration (SeaweedFS file or AWS bundle)."""
    return {str(r["roleArn"]) for r in config.get("roles") or []}


def datalake_rows(
    policy: TenancyPolicySpec,
    profiles: list[dict[str, Any]],
    applied: set[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per Profile: tenant, bucket, prefix, role, state (active / offboarding) and,
    given the applied configuration's roles, whether storage grants the role."""
    lake = policy.data_lake
    active = set(active_tenants(profiles))
    rows = []
    for name in sorted(str(p["metadata"]["name"]) for p in profiles):
        role = role_arn_for(policy, name)
        rows.append(
            {
                "tenant": name,
                "bucket": lake.bucket,
                "prefix": tenant_prefix(policy, name),
                "role": role,
                "state": "active" if name in active else "offboarding",
                "applied": None if applied is None else role in applied,
            }
        )
    return rows


def register(app: typer.Typer) -> None:
    lake = typer.Typer(help="The data lake: tenants' prefixes and roles; publishing.")
    app.add_typer(lake, name="datalake")
    register_publish(lake)

    @lake.callback(invoke_without_command=True)
    def datalake_cmd(
        ctx: typer.Context,
        kubeconfig: Kubeconfig = None,
        policy: PolicyFile = None,
        config: Annotated[
            Path | None,
            typer.Option(
                "--config",
                envvar="KFTENANCY_DATALAKE_CONFIG",
                help="The applied storage configuration (controller's --datalake-config).",
            ),
        ] = None,
        output: Annotated[Output, typer.Option("--output", "-o")] = Output.TABLE,
    ) -> None:
        """Each tenant's data-lake bucket/prefix and role (and whether it is applied)."""
        from kftenancy.controllers.tenant import PROFILE_API_VERSION

        if ctx.invoked_subcommand is not None:
            return

        applied = None
        if config is not None:
            try:
                applied = applied_roles(json.loads(config.read_text()))
            except (OSError, ValueError) as err:
                raise _fail(f"--config {config}: {err}") from None

        async def go(kube: Kube) -> tuple[TenancyPolicySpec, list[dict[str, Any]]]:
            return await _policy(kube, policy), await kube.list(PROFILE_API_VERSION, c.PROFILE_KIND)

        pol, profiles = _run(go, kubeconfig)
        if not pol.data_lake.enabled:
            raise _fail("dataLake.enabled is false in the policy: tenants have no data lake", 1)
        rows = datalake_rows(pol, profiles, applied)
        if output == Output.JSON:
            typer.echo(json.dumps(rows, indent=2))
            return
        lake = pol.data_lake
        where = lake.endpoint or f"AWS ({lake.region or 'default region'})"
        table = Table(title=f"kftenancy data lake: {where}, {len(rows)} tenants")
        for col in ("Tenant", "Bucket/prefix", "Role", "State", "Applied"):
            table.add_column(col)
        for r in rows:
            mark = {None: "-", True: "[green]yes[/]", False: "[red]no[/]"}[r["applied"]]
            table.add_row(
                r["tenant"], f"s3://{r['bucket']}/{r['prefix']}", r["role"], r["state"], mark
            )
        Console().print(table)


def register_publish(lake: typer.Typer) -> None:
    @lake.command("publish")
    def publish_cmd(
        file: Annotated[
            Path, typer.Argument(help="The storage configuration (--datalake-config).")
        ],
        namespace: Annotated[
            str, typer.Option("--namespace", "-n", help="The storage's namespace.")
        ],
        secret: Annotated[
            str | None,
            typer.Option(help="Existing Secret to copy the file into (the storage mounts it)."),
        ] = None,
        key: Annotated[
            str | None, typer.Option(help="The Secret's key (default: the file's name).")
        ] = None,
        restart: Annotated[
            str | None,
            typer.Option(
                help="KIND/NAME of the storage's workload (deployment/, statefulset/, "
                "daemonset/) to roll when the file changed (SeaweedFS reads it only at start)."
            ),
        ] = None,
        kubeconfig: Kubeconfig = None,
    ) -> None:
        """Copy the file into the storage's Secret and roll its workload (only on change)."""
        from kftenancy.controllers.datalake import publish

        try:
            content = file.read_bytes()
        except OSError as err:
            raise _fail(f"{file}: {err}") from None
        _run(
            lambda kube: publish(
                kube,
                content,
                namespace=namespace,
                secret=secret,
                key=key or file.name,
                restart=restart,
            ),
            kubeconfig,
        )
        done = [f"Secret {namespace}/{secret}" if secret else "", restart or ""]
        typer.echo(
            f"published {file} ({len(content):,} bytes) to {' and '.join(filter(None, done))}"
        )
