"""`kftenancy run webhook`: bad flags exit 2 with a message, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kftenancy.cli import app


def test_missing_certificate_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "tls.crt"
    result = CliRunner().invoke(
        app, ["run", "webhook", "--tls-cert-file", str(missing), "--tls-key-file", str(missing)]
    )
    assert result.exit_code == 2
    assert str(missing) in result.output
    assert "Traceback" not in result.output


def test_flags_default_from_environment(tmp_path: Path) -> None:
    missing = tmp_path / "from-env.crt"
    result = CliRunner().invoke(
        app,
        ["run", "webhook"],
        env={
            "KFTENANCY_WEBHOOK_TLS_CERT_FILE": str(missing),
            "KFTENANCY_WEBHOOK_TLS_KEY_FILE": str(missing),
        },
    )
    assert result.exit_code == 2
    assert "from-env.crt" in result.output
