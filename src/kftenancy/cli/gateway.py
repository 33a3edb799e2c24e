"""`kftenancy run gateway`: the front door (ext_authz check service or reverse proxy).

Every flag defaults from a KFTENANCY_* environment variable; the effective configuration
(without secrets) is logged once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from aiohttp import web
from pydantic import ValidationError

from kftenancy.errors import describe_validation_error
from kftenancy.gateway.limits import FloodLimits, Rate
from kftenancy.policy import TenancyPolicySpec, load_policy

log = logging.getLogger("kftenancy.gateway")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def read_policy(path: Path | None) -> TenancyPolicySpec:
    """The policy from a YAML file (whole TenancyPolicy or bare spec); defaults if None."""
    if path is None:
        return load_policy(None)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise _fail(f"cannot read policy {path}: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise _fail(f"{path}: a policy must be a mapping, got {type(data).__name__}")
    try:
        return load_policy(data)
    except ValidationError as e:
        raise _fail(describe_validation_error(e, str(path))) from None


def _read_secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        value = path.read_text().strip()
    except OSError as e:
        raise _fail(f"cannot read {what} {path}: {e}") from None
    if not value:
        raise _fail(f"{what} {path} is empty")
    return value


async def serve(
    *,
    policy: TenancyPolicySpec,
    mode: str,
    host: str,
    port: int,
    tls_cert: Path,
    tls_key: Path,
    kubeconfig: Path | None,
    upstream: str | None,
    upstream_ca: Path | None,
    signing_key_dir: Path | None,
    proxy_secret: str | None,
    oidc_ca: Path | None,
    limits: FloodLimits | None = None,
) -> None:
    import aiohttp
    import lightkube
    from lightkube.config.kubeconfig import KubeConfig

    from kftenancy.gateway.signer import KeyRing, SigningKey, load_keyring
    from kftenancy.kube import Kube
    from kftenancy.onboarding import ensure_profile
    from kftenancy.servers.gateway import (
        Gateway,
        GatewayServer,
        KubeReviewer,
        ProxyTarget,
        client_ssl_context,
        http_jwks_fetcher,
        server_ssl_context,
    )

    if signing_key_dir is not None:
        ring = load_keyring(signing_key_dir)
    else:
        log.warning("no --signing-key-dir: using an ephemeral identity key (one replica only)")
        ring = KeyRing(SigningKey.generate())
    config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else None
    client = lightkube.AsyncClient(config=config, field_manager="kftenancy")
    session = aiohttp.ClientSession()
    kube = Kube(client)
    reviewer = KubeReviewer(client)

    async def onboard(user: str) -> object:
        return await ensure_profile(kube, policy, user, source="gateway")

    gateway = Gateway(
        policy,
        keyring=ring,
        reviewer=reviewer,
        jwks_fetch=http_jwks_fetcher(lambda: session, oidc_ca),
        onboard=onboard,
        proxy_secret=proxy_secret,
        limits=limits,
    )
    target = None
    if upstream:
        target = ProxyTarget(upstream.rstrip("/"), client_ssl_context(upstream_ca))
    server = GatewayServer(
        gateway,
        "proxy" if mode == "proxy" else "ext-authz",
        upstream=target,
        key_dir=signing_key_dir,
    )
    runner = server.runner()
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=server_ssl_context(tls_cert, tls_key))
    await site.start()
    # Everything made so far (modules, the policy, the app) lives as long as the process:
    # keep it out of the cyclic collector, whose full collections would otherwise walk
    # it all (tens of milliseconds with every request waiting) and come more often under
    # a flood. Only objects made per request or per cache entry are collected from now on.
    gc.freeze()
    log.info("gateway listening on https://%s:%d (%s)", host, port, mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await session.close()
        await reviewer.close()
        await client.close()


def register(run_app: typer.Typer) -> None:
    @run_app.command("gateway")
    def gateway(
        tls_cert: Annotated[
            Path, typer.Option(envvar="KFTENANCY_TLS_CERT", help="Serving certificate (PEM).")
        ],
        tls_key: Annotated[
            Path, typer.Option(envvar="KFTENANCY_TLS_KEY", help="Serving key (PEM).")
        ],
        mode: Annotated[
            str, typer.Option(envvar="KFTENANCY_GATEWAY_MODE", help="ext-authz | proxy")
        ] = "ext-authz",
        host: Annotated[
            str, typer.Option(envvar="KFTENANCY_GATEWAY_HOST", help="Listen address.")
        ] = "0.0.0.0",
        port: Annotated[
            int, typer.Option(envvar="KFTENANCY_GATEWAY_PORT", min=1, max=65535)
        ] = 8443,
        policy_file: Annotated[
            Path | None,
            typer.Option("--policy", envvar="KFTENANCY_POLICY", help="TenancyPolicy YAML."),
        ] = None,
        kubeconfig: Annotated[
            Path | None,
            typer.Option(
                envvar="KFTENANCY_KUBECONFIG", help="Default: in-cluster or ~/.kube/config."
            ),
        ] = None,
        upstream: Annotated[
            str | None,
            typer.Option(
                envvar="KFTENANCY_GATEWAY_UPSTREAM", help="proxy mode: upstream base URL."
            ),
        ] = None,
        upstream_ca: Annotated[
            Path | None,
            typer.Option(
                envvar="KFTENANCY_GATEWAY_UPSTREAM_CA", help="CA bundle for an https upstream."
            ),
        ] = None,
        signing_key_dir: Annotated[
            Path | None,
            typer.Option(
                envvar="KFTENANCY_SIGNING_KEY_DIR",
                help="Directory with current.pem (and previous.pem) EC P-256 keys; ephemeral if unset.",
            ),
        ] = None,
        proxy_secret_file: Annotated[
            Path | None,
            typer.Option(
                envvar="KFTENANCY_PROXY_SECRET_FILE",
                help="File with the trusted proxy's shared secret.",
            ),
        ] = None,
        oidc_ca: Annotated[
            Path | None,
            typer.Option(envvar="KFTENANCY_OIDC_CA_FILE", help="CA bundle for OIDC issuers."),
        ] = None,
        token_review_limit: Annotated[
            str,
            typer.Option(
                envvar="KFTENANCY_TOKEN_REVIEW_LIMIT",
                help="TokenReviews per client address: RATE/BURST (per second / burst).",
            ),
        ] = str(FloodLimits.token_review_per_client),
        token_review_global_limit: Annotated[
            str,
            typer.Option(
                envvar="KFTENANCY_TOKEN_REVIEW_GLOBAL_LIMIT",
                help="TokenReviews in total: RATE/BURST.",
            ),
        ] = str(FloodLimits.token_review_global),
        token_review_inflight: Annotated[
            int,
            typer.Option(
                envvar="KFTENANCY_TOKEN_REVIEW_INFLIGHT", min=1, help="TokenReviews at once."
            ),
        ] = FloodLimits.token_review_inflight,
        onboarding_limit: Annotated[
            str,
            typer.Option(
                envvar="KFTENANCY_ONBOARDING_LIMIT", help="New users onboarded: RATE/BURST."
            ),
        ] = str(FloodLimits.onboarding_global),
        log_level: Annotated[str, typer.Option(envvar="KFTENANCY_LOG_LEVEL")] = "INFO",
    ) -> None:
        """Authenticate and authorize every request to Kubeflow and set kubeflow-userid."""
        logging.basicConfig(level=log_level.upper(), format="%(message)s")
        try:
            limits = FloodLimits(
                token_review_per_client=Rate.parse(token_review_limit),
                token_review_global=Rate.parse(token_review_global_limit),
                token_review_inflight=token_review_inflight,
                onboarding_global=Rate.parse(onboarding_limit),
            )
        except ValueError as e:
            raise _fail(f"a flood limit is invalid: {e}") from None
        if mode not in ("ext-authz", "proxy"):
            raise _fail(f"--mode must be ext-authz or proxy, got {mode!r}")
        if mode == "proxy" and not upstream:
            raise _fail("--mode proxy needs --upstream (the URL requests are forwarded to)")
        if upstream and not upstream.startswith(("http://", "https://")):
            raise _fail(f"--upstream must be an http(s) URL, got {upstream!r}")
        for p, what in ((tls_cert, "--tls-cert"), (tls_key, "--tls-key")):
            if not p.is_file():
                raise _fail(f"{what} {p} does not exist")
        if signing_key_dir is not None and not (signing_key_dir / "current.pem").is_file():
            raise _fail(f"--signing-key-dir {signing_key_dir} has no current.pem")
        policy = read_policy(policy_file)
        secret = _read_secret(proxy_secret_file, "--proxy-secret-file")
        effective: dict[str, Any] = {
            "mode": mode,
            "listen": f"{host}:{port}",
            "policy": str(policy_file) if policy_file else "(defaults)",
            "upstream": upstream,
            "methods": list(policy.identity.methods),
            "trustedProxy": "on" if secret else "off (no secret)",
            "oidcIssuers": [i.issuer for i in policy.identity.oidc],
            "signingKeys": str(signing_key_dir) if signing_key_dir else "ephemeral",
            "limits": {
                "tokenReviewPerClient": str(limits.token_review_per_client),
                "tokenReviewGlobal": str(limits.token_review_global),
                "tokenReviewInflight": limits.token_review_inflight,
                "onboardingGlobal": str(limits.onboarding_global),
            },
        }
        log.info("kftenancy gateway configuration: %s", json.dumps(effective))
        asyncio.run(
            serve(
                policy=policy,
                mode=mode,
                host=host,
                port=port,
                tls_cert=tls_cert,
                tls_key=tls_key,
                kubeconfig=kubeconfig,
                upstream=upstream,
                upstream_ca=upstream_ca,
                signing_key_dir=signing_key_dir,
                proxy_secret=secret,
                oidc_ca=oidc_ca,
                limits=limits,
            )
        )


def register_demo(app: typer.Typer) -> None:
    @app.command("gateway-demo")
    def gateway_demo(
        user: Annotated[
            str, typer.Argument(help="The user who signs in.")
        ] = "demo.user@example.com",
        policy_file: Annotated[
            Path | None,
            typer.Option("--policy", envvar="KFTENANCY_POLICY", help="TenancyPolicy YAML."),
        ] = None,
        kubeconfig: Annotated[
            Path | None,
            typer.Option(
                envvar="KFTENANCY_KUBECONFIG", help="The cluster (`eval $(kftenancy lab env)`)."
            ),
        ] = None,
    ) -> None:
        """A user's first visit through the gateway (reverse-proxy mode) on a live cluster."""
        from rich.console import Console
        from rich.table import Table

        from kftenancy.kube import Kube
        from kftenancy.servers.gateway_demo import run_demo

        policy = read_policy(policy_file)

        async def go() -> list[Any]:
            kube = Kube.from_kubeconfig(str(kubeconfig) if kubeconfig else None)
            try:
                return await run_demo(kube, policy, user)
            finally:
                await kube.close()

        steps = asyncio.run(go())
        table = Table(title=f"the front door: {user} signs in (gateway in proxy mode)")
        for col in ("Step", "HTTP", "Outcome", "OK"):
            table.add_column(col)
        for s in steps:
            table.add_row(
                s.what, str(s.status), s.outcome, "[green]yes[/]" if s.ok else "[red]NO[/]"
            )
        Console().print(table)
        if not all(s.ok for s in steps):
            raise typer.Exit(1)
