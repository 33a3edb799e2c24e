"""The Containerfile, read (the lab has no container runtime to build it): multi-stage,
pinned dependencies, non-root, nothing written at run time, the three entry points."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kftenancy.cli import app

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "Containerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", TEXT)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_multi_stage_with_a_pinned_base_image() -> None:
    stages = _stages()
    assert len(stages) >= 2
    [arg] = [rest for word, rest in _instructions() if word == "ARG" and "PYTHON_IMAGE" in rest]
    image = arg.split("=", 1)[1]
    assert ":latest" not in image and re.search(r":\d+\.\d+\.\d+", image), image
    runtime = stages[-1]
    assert any(w == "COPY" and rest.startswith("--from=build") for w, rest in runtime)
    # the runtime stage installs nothing itself
    assert not any(w == "RUN" for w, _ in runtime)


def test_dependencies_are_installed_exactly_from_the_constraints_file() -> None:
    runs = " ".join(rest for w, rest in _stages()[0] if w == "RUN")
    assert re.search(r"pip install (--constraint|-c) constraints\.txt \.", runs)
    copied = " ".join(rest for w, rest in _stages()[0] if w == "COPY")
    assert "constraints.txt" in copied
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=\[;~! ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert not any(w == "ADD" for w, _ in _instructions())  # no remote downloads


def test_runs_as_the_charts_non_root_user_and_writes_nothing() -> None:
    runtime = _stages()[-1]
    [user] = [rest for w, rest in runtime if w == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    env = " ".join(rest for w, rest in runtime if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    helpers = (ROOT / "deploy/helm/kftenancy/templates/_helpers.tpl").read_text()
    assert f"runAsUser: {uid}" in helpers and f"runAsGroup: {gid}" in helpers
    assert "readOnlyRootFilesystem: true" in helpers


def test_entry_point_serves_the_three_components() -> None:
    [entry] = [rest for w, rest in _instructions() if w == "ENTRYPOINT"]
    assert yaml.safe_load(entry) == ["kftenancy"]
    run = next(g for g in app.registered_groups if g.name == "run")
    assert run.typer_instance is not None
    names = {cmd.name for cmd in run.typer_instance.registered_commands}
    assert {"controller", "webhook", "gateway"} <= names
    for component in ("controller", "webhook", "gateway"):
        chart = (ROOT / f"deploy/helm/kftenancy/templates/{component}.yaml").read_text()
        assert f"args: [run, {component}]" in chart
