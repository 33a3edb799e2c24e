"""`kftenancy doctor`: check a cluster's kftenancy install and say how to fix what is wrong.

Exit code 0 when no check found an error (warnings are printed but pass), 1 when one
did, 2 on bad input (an unreadable --policy file).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kftenancy.cli.controller import Kubeconfig, Output, PolicyFile, _run
from kftenancy.doctor import CHECKS, Finding, Severity, failed, run_checks
from kftenancy.doctor.gather import read_policy_file, take_snapshot
from kftenancy.errors import KftenancyError
from kftenancy.kube import Kube

_STYLE = {Severity.OK: "green", Severity.WARNING: "yellow", Severity.ERROR: "red"}


def _print(findings: list[Finding]) -> None:
    table = Table(show_lines=False)
    for col in ("check", "", "finding", "fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        mark = f"[{_STYLE[f.severity]}]{f.severity}[/]"
        table.add_row(f.check, mark, f.message, f.fix or "")
    Console(width=200).print(table)


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor_cmd(
        kubeconfig: Kubeconfig = None,
        policy: PolicyFile = None,
        output: Annotated[
            Output, typer.Option("--output", "-o", envvar="KFTENANCY_OUTPUT")
        ] = Output.TABLE,
    ) -> None:
        """Check CRDs, webhooks and certificates, the mesh, PodTolerationRestriction, GPU
        nodes, issuer discovery and tenants; print each finding with its fix."""
        try:
            source = read_policy_file(policy) if policy is not None else None
        except KftenancyError as err:
            Console(stderr=True).print(f"[red]error:[/red] {err}", highlight=False)
            raise typer.Exit(2) from None

        async def go(kube: Kube) -> list[Finding]:
            snap = await take_snapshot(kube, CHECKS, datetime.now(UTC), source)
            return run_checks(CHECKS, snap)

        findings = _run(go, kubeconfig)
        if output == Output.JSON:
            print(
                json.dumps(
                    {"ok": not failed(findings), "findings": [f.as_dict() for f in findings]},
                    indent=2,
                )
            )
        else:
            _print(findings)
        if failed(findings):
            raise typer.Exit(1)
