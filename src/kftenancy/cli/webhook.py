"""`kftenancy run webhook`: the admission webhook server (see `kftenancy.servers.webhook`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.errors import describe_validation_error


def _client(kubeconfig: Path | None) -> object:
    from lightkube import AsyncClient, KubeConfig

    if kubeconfig is None:
        return AsyncClient(field_manager=c.FIELD_MANAGER)
    return AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager=c.FIELD_MANAGER)


def webhook(
    tls_cert_file: Annotated[
        Path,
        typer.Option(envvar="KFTENANCY_WEBHOOK_TLS_CERT_FILE", help="PEM certificate (chain)."),
    ],
    tls_key_file: Annotated[
        Path, typer.Option(envvar="KFTENANCY_WEBHOOK_TLS_KEY_FILE", help="PEM private key.")
    ],
    host: Annotated[str, typer.Option(envvar="KFTENANCY_WEBHOOK_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="KFTENANCY_WEBHOOK_PORT")] = 8443,
    controller_user: Annotated[
        list[str] | None,
        typer.Option(
            envvar="KFTENANCY_CONTROLLER_USERS",
            help="User name allowed to set the tenant label (repeatable). "
            "Default: system:serviceaccount:<platform namespace>:kftenancy.",
        ),
    ] = None,
    policy_name: Annotated[
        str, typer.Option(envvar="KFTENANCY_POLICY_NAME", help="TenancyPolicy to follow.")
    ] = c.DEFAULT_POLICY_NAME,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            envvar="KFTENANCY_POLICY_FILE", help="Use this policy instead of the cluster's."
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(envvar="KFTENANCY_KUBECONFIG", help="Default: in-cluster/KUBECONFIG."),
    ] = None,
    cert_check_seconds: Annotated[
        float, typer.Option(envvar="KFTENANCY_WEBHOOK_CERT_CHECK_SECONDS", min=0.1)
    ] = 5.0,
    max_inflight: Annotated[
        int,
        typer.Option(
            envvar="KFTENANCY_WEBHOOK_MAX_INFLIGHT",
            min=1,
            help="Requests answered at once; beyond, validations are denied (overloaded).",
        ),
    ] = 64,
    log_level: Annotated[str, typer.Option(envvar="KFTENANCY_LOG_LEVEL")] = "INFO",
) -> None:
    """Serve /mutate and /validate (AdmissionReview v1) over TLS, plus health and metrics."""
    from kftenancy.servers.webhook import WebhookServer, WebhookSettings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for path in (tls_cert_file, tls_key_file, *([policy_file] if policy_file else [])):
        if not path.is_file():
            typer.echo(f"error: {path} does not exist or is not a file", err=True)
            raise typer.Exit(2)
    users: list[str] = []
    for value in controller_user or []:
        users += [u.strip() for u in value.split(",") if u.strip()]
    settings = WebhookSettings(
        cert_file=tls_cert_file,
        key_file=tls_key_file,
        host=host,
        port=port,
        controller_users=tuple(users),
        policy_name=policy_name,
        policy_file=policy_file,
        cert_check_seconds=cert_check_seconds,
        max_inflight=max_inflight,
    )
    logging.getLogger("kftenancy.webhook").info("settings: %s", settings)

    async def main() -> None:
        server = WebhookServer(settings, _client(kubeconfig))  # type: ignore[arg-type]
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    try:
        asyncio.run(main())
    except ValidationError as exc:
        typer.echo(describe_validation_error(exc, str(policy_file)), err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # port in use, unreadable certificate, ...
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(run_app: typer.Typer) -> None:
    """Add `webhook` to `kftenancy run`."""
    run_app.command("webhook")(webhook)
