"""The front door, end to end on a live cluster (`kftenancy gateway-demo`, the lab demo).

Starts, on 127.0.0.1 and over TLS: an upstream that reports the headers it receives, and
the gateway in reverse-proxy mode in front of it, wired to the cluster for TokenReview,
SubjectAccessReview and onboarding. Then it plays a user's first visit:

1. a browser without credentials is turned away (redirect or 401);
2. the login proxy signs the user in (trusted-proxy headers plus the shared secret) while
   the client also forges `kubeflow-userid: admin`: the upstream sees the real user, the
   groups and a gateway-signed identity JWT that verifies against the published JWKS;
3. the user's Profile now exists (just-in-time onboarding);
4. the same proxy headers without the secret get nowhere.

For the demo the user's group is allowed in by a RoleBinding (`get pods` in the Kubeflow
namespace, the policy's rule) and the proxy secret is generated on the spot.
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from kftenancy.certs import serving_pair, write_pair
from kftenancy.gateway.signer import KeyRing, SigningKey, verify_identity_token
from kftenancy.policy import IdentityMethod, TenancyPolicySpec
from kftenancy.servers.gateway import (
    Gateway,
    GatewayServer,
    KubeReviewer,
    ProxyTarget,
    client_ssl_context,
    server_ssl_context,
)

DEMO_GROUP = "kftenancy-demo-users"
FIELD_MANAGER = "kftenancy-demo"


@dataclass(frozen=True)
class Step:
    what: str
    status: int
    outcome: str
    ok: bool


async def _echo(req: web.Request) -> web.Response:
    return web.json_response({"headers": {k.lower(): v for k, v in req.headers.items()}})


async def _start(app: web.Application, ctx: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"https://127.0.0.1:{port}"


async def allow_demo_group(kube: Any, policy: TenancyPolicySpec) -> None:
    """RBAC so that the demo group passes the policy's authorization rule."""
    rule = policy.identity.authorization.rule
    ns = rule.namespace or policy.platform.kubeflow_namespace
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "kftenancy-demo-users", "namespace": ns},
        "rules": [{"apiGroups": [rule.group], "resources": [rule.resource], "verbs": [rule.verb]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "kftenancy-demo-users", "namespace": ns},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DEMO_GROUP}
        ],
    }
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await kube.apply(role)
    await kube.apply(binding)


async def run_demo(kube: Any, policy: TenancyPolicySpec, user: str) -> list[Step]:
    """Play the first visit of `user` through a local gateway; see the module docstring.
    `kube` is a `kftenancy.kube.Kube` with rights to review tokens and access, apply RBAC
    and create Profiles (the lab's admin)."""
    from kftenancy.naming import profile_name
    from kftenancy.onboarding import ensure_profile

    if IdentityMethod.TRUSTED_PROXY not in policy.identity.methods:
        policy = policy.model_copy(
            update={
                "identity": policy.identity.model_copy(
                    update={"methods": [IdentityMethod.TRUSTED_PROXY, *policy.identity.methods]}
                )
            }
        )
    await allow_demo_group(kube, policy)
    secret = secrets.token_urlsafe(32)
    tp = policy.identity.trusted_proxy
    steps: list[Step] = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = write_pair(
            serving_pair("kftenancy-demo", ["127.0.0.1"], dt.datetime.now(dt.UTC)), Path(tmp)
        )
        server_ctx = server_ssl_context(cert, key)
        client_ctx = client_ssl_context(cert)
        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/{tail:.*}", _echo)
        runners = []
        runner, upstream = await _start(upstream_app, server_ctx)
        runners.append(runner)

        async def onboard(user_id: str) -> object:
            return await ensure_profile(kube, policy, user_id, source="gateway")

        reviewer = KubeReviewer(kube.client)
        gateway = Gateway(
            policy,
            keyring=KeyRing(SigningKey.generate()),
            reviewer=reviewer,
            onboard=onboard,
            proxy_secret=secret,
        )
        runner, base = await _start(
            GatewayServer(gateway, "proxy", upstream=ProxyTarget(upstream, client_ctx)).app(),
            server_ctx,
        )
        runners.append(runner)
        try:
            async with aiohttp.ClientSession() as http:

                async def get(headers: dict[str, str]) -> tuple[int, Any, str]:
                    async with http.get(
                        base + "/notebook/lab",
                        headers=headers,
                        ssl=client_ctx,
                        allow_redirects=False,
                    ) as r:
                        body: Any = (
                            await r.json()
                            if r.content_type == "application/json"
                            else await r.text()
                        )
                        return r.status, body, r.headers.get("location", "")

                status, _, location = await get({"accept": "text/html"})
                steps.append(
                    Step(
                        "browser, not signed in",
                        status,
                        f"redirected to {location}" if status == 302 else "refused, must sign in",
                        status in (302, 401),
                    )
                )
                signed_in = {
                    tp.user_header: user,
                    tp.groups_header: DEMO_GROUP,
                    tp.secret_header: secret,
                    policy.identity.user_header: "admin",  # forged by the client
                }
                status, body, _ = await get(signed_in)
                seen = body["headers"] if isinstance(body, dict) else {}
                got_user = seen.get(policy.identity.user_header, "")
                steps.append(
                    Step(
                        "signed in by the login proxy (client forges kubeflow-userid: admin)",
                        status,
                        f"upstream saw {policy.identity.user_header}={got_user!r}, "
                        f"{policy.identity.groups_header}={seen.get(policy.identity.groups_header, '')!r}",
                        status == 200 and got_user == policy.identity.user_prefix + user,
                    )
                )
                token = seen.get(policy.identity.identity_token.header)
                async with http.get(base + "/.well-known/jwks.json", ssl=client_ctx) as r:
                    jwks = await r.json()
                cfg = policy.identity.identity_token
                if token:
                    claims = verify_identity_token(token, jwks, cfg.audience, cfg.issuer)
                    steps.append(
                        Step(
                            "identity JWT at the upstream",
                            200,
                            f"verified against the JWKS: sub={claims['sub']!r}",
                            claims["sub"] == user,
                        )
                    )
                name = profile_name(policy, user)
                profile = await kube.get("kubeflow.org/v1", "Profile", name)
                steps.append(
                    Step(
                        "just-in-time onboarding",
                        200 if profile else 404,
                        f"Profile {name} exists" if profile else f"no Profile {name}",
                        profile is not None,
                    )
                )
                forged = {tp.user_header: user, policy.identity.user_header: user}
                status, _, _ = await get(forged)
                steps.append(
                    Step(
                        "same proxy headers without the secret",
                        status,
                        "refused",
                        status in (302, 401),
                    )
                )
        finally:
            for app_runner in reversed(runners):
                await app_runner.cleanup()
            await reviewer.close()
    return steps
