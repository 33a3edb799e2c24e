"""`kftenancy chart` and `kftenancy olm`: write the generated parts of the Helm chart and
the OLM bundle from a policy file (the committed ones: `kftenancy chart --policy
examples/policy-kubernetes.yaml --dir deploy/helm/kftenancy`, `kftenancy olm --policy
examples/policy.yaml --dir deploy/olm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from kftenancy.errors import describe_validation_error
from kftenancy.policy import load_policy

PolicyPath = Annotated[Path, typer.Option("--policy", help="TenancyPolicy YAML file.")]
Dir = Annotated[Path, typer.Option("--dir", help="Where to write the files.")]


def read_spec(path: Path) -> dict[str, Any]:
    """The policy's spec as written (validated by the model); exits 2 on bad input."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        typer.echo(f"error: {path}: cannot read policy: {err}", err=True)
        raise typer.Exit(2) from None
    spec = doc.get("spec", {}) if isinstance(doc, dict) and "spec" in doc else doc or {}
    if not isinstance(spec, dict):
        typer.echo(f"error: {path}: a policy must be a mapping", err=True)
        raise typer.Exit(2)
    try:
        load_policy(spec)
    except ValidationError as err:
        typer.echo(f"error: {describe_validation_error(err, str(path))}", err=True)
        raise typer.Exit(2) from None
    return spec


def write_files(directory: Path, files: dict[str, str]) -> None:
    for rel, text in sorted(files.items()):
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {target}")


def register(app: typer.Typer) -> None:
    @app.command("chart")
    def chart_cmd(policy: PolicyPath, directory: Dir = Path("deploy/helm/kftenancy")) -> None:
        """Write the Helm chart's generated files (CRDs, values, schema, platform objects)."""
        from kftenancy.render.chart import chart_files

        write_files(directory, chart_files(read_spec(policy)))

    @app.command("olm")
    def olm_cmd(
        policy: PolicyPath,
        directory: Dir = Path("deploy/olm"),
        version: Annotated[str, typer.Option(help="The CSV version.")] = "0.1.0",
        image: Annotated[str | None, typer.Option(help="Default: the project image.")] = None,
    ) -> None:
        """Write the OLM bundle (ClusterServiceVersion, CRDs, metadata) for a policy."""
        from kftenancy.render.olm import bundle_files

        write_files(directory, bundle_files(read_spec(policy), version, image))
