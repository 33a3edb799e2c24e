"""`kftenancy run gateway`: bad input is a message and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kftenancy.cli import app


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["run", "gateway", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def tls(tmp_path: Path) -> list[str]:
    (tmp_path / "c").write_text("x")
    (tmp_path / "k").write_text("x")
    return ["--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "k")]


def test_unknown_mode(tmp_path: Path) -> None:
    code, out = run([*tls(tmp_path), "--mode", "sidecar"])
    assert code == 2 and "--mode must be ext-authz or proxy, got 'sidecar'" in out


def test_proxy_mode_needs_an_upstream(tmp_path: Path) -> None:
    code, out = run([*tls(tmp_path), "--mode", "proxy"])
    assert code == 2 and "--upstream" in out
    code, out = run([*tls(tmp_path), "--mode", "proxy", "--upstream", "ftp://x"])
    assert code == 2 and "http(s) URL" in out


def test_missing_tls_files(tmp_path: Path) -> None:
    code, out = run(["--tls-cert", str(tmp_path / "nope"), "--tls-key", str(tmp_path / "nope")])
    assert code == 2 and "does not exist" in out


def test_invalid_policy_names_the_field(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("identity:\n  authorization:\n    denyCacheSeconds: -1\n")
    code, out = run([*tls(tmp_path), "--policy", str(policy)])
    assert code == 2 and "identity.authorization.denyCacheSeconds" in out


def test_empty_proxy_secret_and_missing_key_dir(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    code, out = run([*tls(tmp_path), "--proxy-secret-file", str(tmp_path / "secret")])
    assert code == 2 and "is empty" in out
    code, out = run([*tls(tmp_path), "--signing-key-dir", str(tmp_path)])
    assert code == 2 and "current.pem" in out


def test_invalid_flood_limit_names_the_value(tmp_path: Path) -> None:
    code, out = run([*tls(tmp_path), "--token-review-limit", "fast"])
    assert code == 2 and "'fast' is not RATE/BURST" in out
