"""`kftenancy render` and `kftenancy crd`: the renderer, offline, for GitOps and review.

Bad input (unreadable file, invalid YAML, invalid policy or Profile, empty user id) is
reported on stderr as `file: field: what is wrong (got VALUE)` with exit code 2; never a
traceback.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from kftenancy.crds import all_crds, crd_file_name
from kftenancy.errors import KftenancyError, describe_validation_error
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.profile import Profile, parse_profile
from kftenancy.render import iam_documents, platform_objects, profile_for_user, tenant_objects

EXIT_BAD_INPUT = 2


class Output(StrEnum):
    YAML = "yaml"
    JSON = "json"


def _read_documents(path: Path) -> list[Any]:
    """YAML/JSON documents from a file, or from stdin when the path is `-`."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as err:
        raise KftenancyError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise KftenancyError(f"{path}: not UTF-8 text") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise KftenancyError(f"{path}: not valid YAML{line}: {problem}") from None


def read_policy(path: Path) -> TenancyPolicySpec:
    """Load a TenancyPolicy file (whole object or bare spec); KftenancyError if invalid."""
    docs = _read_documents(path)
    if len(docs) > 1:
        raise KftenancyError(f"{path}: expected one TenancyPolicy document, found {len(docs)}")
    data = docs[0] if docs else None
    if data is not None and not isinstance(data, dict):
        raise KftenancyError(
            f"{path}: (document): a TenancyPolicy must be a mapping (got {type(data).__name__})"
        )
    try:
        return load_policy(data)
    except ValidationError as err:
        raise KftenancyError(describe_validation_error(err, str(path))) from None


def read_profiles(path: Path) -> list[Profile]:
    """Load one or more Profile documents; KftenancyError naming the bad field if invalid."""
    docs: list[Any] = []
    for doc in _read_documents(path):
        # `kubectl get profiles -o yaml` prints a List; expand it.
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"):
            items = doc.get("items")
            docs += items if isinstance(items, list) else []
        else:
            docs.append(doc)
    if not docs:
        raise KftenancyError(f"{path}: no Profile document found")
    return [parse_profile(doc, str(path)) for doc in docs]


def _emit(objects: list[dict[str, Any]], output: Output) -> None:
    if output == Output.JSON:
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        typer.echo(yaml.safe_dump_all(objects, sort_keys=False, allow_unicode=True), nl=False)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def render(
    policy_file: Annotated[
        Path,
        typer.Option("--policy", envvar="KFTENANCY_POLICY", help="TenancyPolicy YAML file."),
    ],
    profile_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--profile",
            help="Profile YAML/JSON file, `-` for stdin (repeatable; documents or a List).",
        ),
    ] = None,
    users: Annotated[
        list[str] | None,
        typer.Option("--user", help="Render the workspace onboarding creates for this user id."),
    ] = None,
    platform: Annotated[
        bool, typer.Option("--platform", help="Include the platform-level objects.")
    ] = False,
    iam: Annotated[
        bool,
        typer.Option(
            "--iam", help="Print each tenant's IAM role, trust and permission policy instead."
        ),
    ] = False,
    output: Annotated[Output, typer.Option("--output", "-o", help="yaml or json.")] = Output.YAML,
) -> None:
    """Print the manifests for tenants (from Profiles or user ids) and/or the platform."""
    try:
        policy = read_policy(policy_file)
        if not (profile_files or users or platform):
            raise KftenancyError("nothing to render: give --profile FILE, --user ID or --platform")
        profiles: list[tuple[Profile, dict[str, Any] | None]] = []
        for path in profile_files or []:
            profiles += [(p, None) for p in read_profiles(path)]
        for user in users or []:
            doc = profile_for_user(policy, user)
            profiles.append((parse_profile(doc, f"--user {user!r}"), doc))
        objects: list[dict[str, Any]] = []
        if iam:
            objects = [{"profile": p.name, **iam_documents(policy, p)} for p, _ in profiles]
        else:
            if platform:
                objects += platform_objects(policy)
            for profile, onboarding in profiles:
                if onboarding is not None:
                    objects.append(onboarding)
                objects += tenant_objects(policy, profile)
    except KftenancyError as err:
        raise _fail(str(err)) from None
    _emit(objects, output)


def crd(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Write one <name>.yaml per CRD here instead of stdout."),
    ] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="yaml or json.")] = Output.YAML,
) -> None:
    """Print the CRDs kftenancy ships (TenancyPolicy, and Profile for clusters without Kubeflow)."""
    crds = all_crds()
    if directory is None:
        _emit(crds, output)
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for item in crds:
            target = directory / crd_file_name(item)
            target.write_text(crd_file_text(item), encoding="utf-8")
            typer.echo(f"wrote {target}", err=True)
    except OSError as err:
        raise _fail(f"{directory}: cannot write ({err.strerror or err})") from None


def crd_file_text(item: dict[str, Any]) -> str:
    """The committed form of a generated CRD (deploy/crds/)."""
    header = (
        "# Generated by `kftenancy crd --dir deploy/crds` from the pydantic models. Do not edit.\n"
    )
    return header + yaml.safe_dump(item, sort_keys=False, width=100)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("render")(render)
    app.command("crd")(crd)
