"""Least privilege, proven on a real API server: the chart's RBAC, the chart's
ServiceAccounts, TokenRequest tokens, and the real components.

A cluster of its own (PodTolerationRestriction off, so the webhook's own pod rule is
what answers). The objects `helm template` renders from the chart are applied (all but
the webhook configurations, which point at an in-cluster Service; they are registered
here for a local webhook server instead, rendered by the same renderer). Then each
component runs with a token of its own ServiceAccount, never the admin kubeconfig:

- controller: a Profile becomes Ready (namespace, RoleBindings, quota, policies...),
  with leader election on; deleting the Profile offboards it;
- webhook: its lookups (policy, namespaces, ServiceAccounts) answer real admission
  requests: a tenant pod gets the GPU toleration, a non-tenant pod asking for it is
  refused with our reason;
- gateway: TokenReview authenticates a user's token, SubjectAccessReview authorizes
  it, the first request onboards the user (a Profile), an unauthorized user gets 403.

And the API server refuses what none of them may do: read Secrets in a tenant
namespace, delete a Namespace, change RBAC beyond what it manages, read another
component's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from helm_support import template
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from kftenancy import constants as c
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.gateway.identity import Request
from kftenancy.gateway.signer import KeyRing, SigningKey
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.naming import profile_name
from kftenancy.onboarding import ensure_profile
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render import profile_for_user
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations
from kftenancy.servers.gateway import Gateway, KubeReviewer
from kftenancy.servers.webhook import WebhookServer, WebhookSettings

NS = "kftenancy"
ADMISSION = "admissionregistration.k8s.io/v1"
COMPONENTS = ("kftenancy-controller", "kftenancy-webhook", "kftenancy-gateway")
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def lab() -> Iterator[LocalCluster]:
    lab = LocalCluster(
        controller_manager=True, disable_admission_plugins=["PodTolerationRestriction"]
    )
    try:
        lab.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane could not start:\n{err}", pytrace=False)
    try:
        # An upstream cluster: no OpenShift APIs (the controller watches Users wherever
        # they are served, and the chart grants that only on OpenShift).
        lab.install_crds([d for d in bundled_crds() if d["spec"]["group"] != "user.openshift.io"])
        yield lab
    finally:
        lab.stop()


def _token_kubeconfig(lab: LocalCluster, token: str, path: Path) -> Path:
    admin = yaml.safe_load(lab.admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


async def _token(admin: AsyncClient, name: str, namespace: str) -> str:
    req = ServiceAccountToken(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
    )
    issued = await admin.create(req, name=name, namespace=namespace)
    assert issued.status is not None
    return str(issued.status.token)


async def _eventually(check: Any, within: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    got: Any = None
    while asyncio.get_running_loop().time() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"not true within {within}s: {what} (last: {got})")


class Installed:
    def __init__(self) -> None:
        self.policy: TenancyPolicySpec
        self.admin: Kube
        self.kubeconfigs: dict[str, Path] = {}
        self.clients: dict[str, AsyncClient] = {}
        self.tenant = ""
        self.controller: Controller


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def installed(
    lab: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Installed]:
    tmp = tmp_path_factory.mktemp("least-privilege")
    state = Installed()
    admin = Kube.from_kubeconfig(str(lab.admin_kubeconfig))
    state.admin = admin
    for ns in (NS, "istio-system", "kubeflow"):
        await admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    objs = template(tmp / "helm")  # the chart as shipped (cert-manager mode)
    [policy_obj] = [o for o in objs if o["kind"] == c.POLICY_KIND]
    state.policy = load_policy(policy_obj)
    for obj in objs:
        if obj["apiVersion"] != ADMISSION:
            await admin.apply(obj)
    for name in COMPONENTS:
        token = await _token(admin.client, name, NS)
        state.kubeconfigs[name] = _token_kubeconfig(lab, token, tmp / f"{name}.kubeconfig")
        state.clients[name] = AsyncClient(
            config=KubeConfig.from_file(state.kubeconfigs[name]), trust_env=False
        )

    # The webhook, as its ServiceAccount, registered (same renderer as the chart) for a
    # local TLS endpoint.
    serving = lab.serving_cert("lp-webhook")
    webhook = WebhookServer(
        WebhookSettings(
            cert_file=serving.cert_file, key_file=serving.key_file, host="127.0.0.1", port=0
        ),
        state.clients["kftenancy-webhook"],
    )
    await webhook.start()
    await webhook.wait_ready(60)
    endpoint = WebhookEndpoint(url=f"https://127.0.0.1:{webhook.port}", ca_bundle=serving.ca_pem)
    configs = webhook_configurations(state.policy, endpoint)
    for obj in configs:
        await admin.apply(obj)
    # Wait until the API server calls the webhook (its informer takes a moment).
    probe = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lp-probe"}}

    async def mutated() -> bool:
        got = await admin.apply(probe, dry_run=True)
        return c.ANN_TOLERATIONS_WHITELIST in ((got.get("metadata") or {}).get("annotations") or {})

    await _eventually(mutated, 30, "namespace mutation by the webhook")

    # The controller, as its ServiceAccount, with leader election (a Lease in kftenancy).
    ctl = Controller(
        ControllerSettings(
            kubeconfig=str(state.kubeconfigs["kftenancy-controller"]),
            metrics_port=0,
            leader_election=True,
            lease_namespace=NS,
            apply_platform=False,
            event_namespace=NS,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    state.controller = ctl
    try:
        await _eventually(lambda: _ctl_ready(ctl, task), 60, "controller ready")
        profile = profile_for_user(state.policy, f"alice-{uuid.uuid4().hex[:6]}@example.com")
        state.tenant = profile["metadata"]["name"]
        await admin.create(profile)
        yield state
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await ctl.kube.close()
        for obj in configs:
            await admin.delete(ADMISSION, obj["kind"], obj["metadata"]["name"])
        await webhook.stop()
        for client in state.clients.values():
            await client.close()
        await admin.close()


async def _ctl_ready(ctl: Controller, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
        raise AssertionError("controller stopped")
    return ctl.ready.is_set()


async def _ready(kube: Kube, name: str) -> dict[str, Any] | None:
    p = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    conditions = ((p or {}).get("status") or {}).get("conditions") or []
    ok = any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)
    return p if ok else None


async def test_controller_makes_a_tenant_ready_with_its_service_account(
    installed: Installed,
) -> None:
    admin, name = installed.admin, installed.tenant
    try:
        await _eventually(lambda: _ready(admin, name), 60, f"tenant {name} Ready")
    except AssertionError:
        raise AssertionError(await admin.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)) from None
    assert await admin.get("v1", "Namespace", name) is not None
    bindings = await admin.list("rbac.authorization.k8s.io/v1", "RoleBinding", namespace=name)
    assert {"namespaceAdmin", "default-editor", "default-viewer"} <= {
        b["metadata"]["name"] for b in bindings
    }
    lease = await admin.get("coordination.k8s.io/v1", "Lease", "kftenancy-controller", NS)
    assert lease is not None and lease["spec"]["holderIdentity"]


async def test_webhook_lookups_answer_admission_with_its_service_account(
    installed: Installed,
) -> None:
    admin, tenant = installed.admin, installed.tenant
    await _eventually(lambda: _ready(admin, tenant), 60, "tenant Ready")
    taint = installed.policy.gpu.taint
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": tenant},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }

    async def tolerated() -> bool:
        got = await admin.apply(pod, dry_run=True)
        return any(t.get("key") == taint.key for t in got["spec"].get("tolerations") or [])

    await _eventually(tolerated, 30, "tenant pod gets the GPU toleration from the webhook")
    other = f"lp-other-{uuid.uuid4().hex[:6]}"
    await admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    gpu_pod = {
        **pod,
        "metadata": {"name": "p", "namespace": other},
        "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "tolerations": [taint.toleration().manifest()],
        },
    }
    with pytest.raises(ApiError) as err:
        await admin.apply(gpu_pod, dry_run=True)
    assert err.value.status.code == 403
    assert "kftenancy" in (err.value.status.message or "")
    await admin.delete("v1", "Namespace", other)


async def test_gateway_authenticates_authorizes_and_onboards_with_its_service_account(
    installed: Installed,
) -> None:
    admin = installed.admin
    gw_client = installed.clients["kftenancy-gateway"]
    gw_kube = Kube(gw_client)
    policy = installed.policy
    ns = "lp-users"
    await admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    rule = policy.identity.authorization.rule
    assert rule.namespace is not None
    await admin.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "lp-entry", "namespace": rule.namespace},
            "rules": [
                {"apiGroups": [rule.group], "resources": [rule.resource], "verbs": [rule.verb]}
            ],
        }
    )
    tokens = {}
    for sa in ("allowed", "stranger"):
        await admin.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": ns},
            }
        )
        tokens[sa] = await _token(admin.client, sa, ns)
    await admin.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lp-entry", "namespace": rule.namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "lp-entry",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "allowed", "namespace": ns}],
        }
    )

    async def onboard(user_id: str) -> object:
        return await ensure_profile(gw_kube, policy, user_id, source="gateway")

    reviewer = KubeReviewer(gw_client)
    try:
        gateway = Gateway(
            policy,
            keyring=KeyRing(SigningKey.generate()),
            reviewer=reviewer,
            onboard=onboard,
        )

        def request(token: str) -> Request:
            return Request(
                "GET", "/", {"authorization": f"Bearer {token}", "kubeflow-userid": "admin"}
            )

        allowed_user = f"system:serviceaccount:{ns}:allowed"
        decision = await gateway.check(request(tokens["allowed"]))
        assert decision.status == 200, decision
        assert (
            decision.headers_to_set[policy.identity.user_header]
            == policy.identity.user_prefix + allowed_user
        )
        # A service account is a workload: let through, never onboarded. A person's first
        # visit onboards them with the gateway's own credentials (the call `check` makes).
        assert not await admin.get(
            PROFILE_API_VERSION, c.PROFILE_KIND, profile_name(policy, allowed_user)
        )
        person = "lp.person@example.com"
        await onboard(person)
        assert await admin.get(PROFILE_API_VERSION, c.PROFILE_KIND, profile_name(policy, person))
        denied = await gateway.check(request(tokens["stranger"]))
        assert denied.status == 403, denied
        bogus = await gateway.check(request("not-a-token"))
        assert bogus.status == 401, bogus
    finally:
        await reviewer.close()


RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
ESCALATE = {
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    },
    "subjects": [{"kind": "User", "name": "mallory"}],
}
# (what, method, path, body); {tenant} = the tenant namespace, {self} = the component
FORBIDDEN: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("read Secrets in a tenant namespace", "GET", "/api/v1/namespaces/{tenant}/secrets", None),
    (
        "read a Secret of its own namespace",
        "GET",
        f"/api/v1/namespaces/{NS}/secrets/kftenancy-ca",
        None,
    ),
    ("delete a Namespace", "DELETE", "/api/v1/namespaces/{tenant}", None),
    (
        "bind cluster-admin cluster-wide",
        "POST",
        f"{RBAC_API}/clusterrolebindings",
        {"metadata": {"name": "lp-escalate"}, **ESCALATE},
    ),
    (
        "bind cluster-admin in a tenant namespace",
        "POST",
        f"{RBAC_API}/namespaces/{{tenant}}/rolebindings",
        {"metadata": {"name": "lp-escalate"}, **ESCALATE},
    ),
    (
        "widen its own ClusterRole",
        "PATCH",
        f"{RBAC_API}/clusterroles/{{self}}",
        {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    ),
    (
        "create a Role in a tenant namespace",
        "POST",
        f"{RBAC_API}/namespaces/{{tenant}}/roles",
        {"metadata": {"name": "lp-role"}, "rules": []},
    ),
    (
        "change the webhook registration",
        "DELETE",
        f"/apis/{ADMISSION}/validatingwebhookconfigurations/kftenancy",
        None,
    ),
    (
        "edit the TenancyPolicy",
        "PATCH",
        f"/apis/{c.API_GROUP}/{c.API_VERSION}/tenancypolicies/default",
        {"metadata": {"labels": {"lp": "x"}}},
    ),
]
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/kftenancy-controller"
TOKEN_REVIEW = ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {"token": "x"}})
OTHERS: dict[str, list[tuple[str, str, str, dict[str, Any] | None]]] = {
    # another component's objects or powers
    "kftenancy-controller": [("review tokens (the gateway's)", *TOKEN_REVIEW)],
    "kftenancy-webhook": [
        ("list Profiles (the controller's)", "GET", f"/apis/{c.KUBEFLOW_GROUP}/v1/profiles", None),
        ("read the controller's Lease", "GET", LEASE, None),
        ("review tokens (the gateway's)", *TOKEN_REVIEW),
    ],
    "kftenancy-gateway": [
        ("list namespaces (the webhook's)", "GET", "/api/v1/namespaces", None),
        ("read the controller's Lease", "GET", LEASE, None),
        ("list RoleBindings (the controller's)", "GET", f"{RBAC_API}/rolebindings", None),
        (
            "delete a Profile (the controller's)",
            "DELETE",
            f"/apis/{c.KUBEFLOW_GROUP}/v1/profiles/{{tenant}}",
            None,
        ),
    ],
}


async def _status(client: AsyncClient, method: str, path: str, body: dict[str, Any] | None) -> int:
    http: Any = client._client._client  # lightkube's authenticated HTTP client (the token)
    headers = {"content-type": "application/merge-patch+json"} if method == "PATCH" else {}
    response = await http.request(method, path, json=body, headers=headers)
    return int(response.status_code)


@pytest.mark.parametrize("component", COMPONENTS)
async def test_forbidden_actions_are_refused_by_the_api_server(
    installed: Installed, component: str
) -> None:
    admin = installed.admin
    await _eventually(lambda: _ready(admin, installed.tenant), 60, "tenant Ready")
    client = installed.clients[component]
    for what, method, path, body in [*FORBIDDEN, *OTHERS[component]]:
        real = path.replace("{tenant}", installed.tenant).replace("{self}", component)
        status = await _status(client, method, real, body)
        assert status == 403, f"{component} could {what}: {method} {real} -> {status}"
    assert await admin.get("v1", "Namespace", installed.tenant) is not None  # nothing happened


async def test_controller_offboards_a_deleted_profile_with_its_service_account(
    installed: Installed,
) -> None:
    admin = installed.admin
    profile = profile_for_user(installed.policy, f"bob-{uuid.uuid4().hex[:6]}@example.com")
    name = profile["metadata"]["name"]
    await admin.create(profile)
    await _eventually(lambda: _ready(admin, name), 60, f"tenant {name} Ready")
    await admin.delete(PROFILE_API_VERSION, c.PROFILE_KIND, name)

    async def offboarded() -> bool:
        gone = await admin.get(PROFILE_API_VERSION, c.PROFILE_KIND, name) is None
        bindings = await admin.list("rbac.authorization.k8s.io/v1", "RoleBinding", namespace=name)
        return gone and "namespaceAdmin" not in {b["metadata"]["name"] for b in bindings}

    await _eventually(offboarded, 60, "Profile gone (finalizer released), access revoked")
    ns = await admin.get("v1", "Namespace", name)
    assert ns is not None  # no retention period: the namespace is kept, never deleted
    assert c.ANN_OFFBOARDED_AT in ns["metadata"].get("annotations", {})
