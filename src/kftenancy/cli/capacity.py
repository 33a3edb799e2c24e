"""`kftenancy autoscaler`: what a platform team applies for the cluster autoscaler to
serve the policy's GPU pools (OpenShift ClusterAutoscaler/MachineAutoscaler/MachineSet
template, or cluster-api MachineDeployment annotations), plus the autoscaler flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kftenancy.capacity.autoscaler import autoscaler_flags, autoscaler_manifests
from kftenancy.cli.render import Output, _emit, _fail, read_policy
from kftenancy.errors import KftenancyError


def register(app: typer.Typer) -> None:
    @app.command("autoscaler")
    def autoscaler_cmd(
        policy_file: Annotated[
            Path,
            typer.Option("--policy", envvar="KFTENANCY_POLICY", help="TenancyPolicy YAML file."),
        ],
        output: Annotated[Output, typer.Option("--output", "-o")] = Output.YAML,
    ) -> None:
        """Print the autoscaler configuration for the GPU pools (flags as a comment)."""
        try:
            policy = read_policy(policy_file)
        except KftenancyError as err:
            raise _fail(str(err)) from None
        objects = autoscaler_manifests(policy)
        if not objects:
            raise _fail(f"{policy_file}: no gpu.pools (or gpu.enabled: false): nothing to render")
        if output == Output.YAML:
            typer.echo("# cluster-autoscaler flags: " + " ".join(autoscaler_flags(policy)))
        _emit(objects, output)
