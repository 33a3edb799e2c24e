"""Rendered objects on a real API server: accepted as rendered (nothing pruned), applied
with exactly the controller's least-privilege ClusterRole, and meaning what they should
(RBAC through the Kubeflow roles, GPU default tolerations, quota + LimitRange)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import (
    create_global_resource,
    create_namespaced_resource,
    get_generic_resource,
)
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount

from kftenancy import constants as c
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.lab.crds import bundled_crds
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.profile import parse_profile
from kftenancy.render import platform, profile_for_user, tenant_objects

UserClient = Callable[..., AsyncClient]
CONTROLLER = f"system:serviceaccount:kftenancy:{c.COMPONENT_CONTROLLER}"
CONTROLLER_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:kftenancy"]

OPENSHIFT_OSSM = load_policy({"dataLake": {"enabled": True}})
KUBERNETES_ISTIO = load_policy(
    {
        "platform": {"flavor": "kubernetes", "kubeflowInstalled": False},
        "mesh": {"flavor": "istio"},
        "dataLake": {"enabled": True},
        "gpu": {"pools": [{"name": "t4"}]},
    }
)


def _register_crd_kinds() -> None:
    for crd in bundled_crds():
        spec = crd["spec"]
        names = spec["names"]
        make = create_global_resource if spec["scope"] == "Cluster" else create_namespaced_resource
        for version in spec["versions"]:
            api_version = f"{spec['group']}/{version['name']}"
            if get_generic_resource(api_version, names["kind"]) is None:
                make(spec["group"], version["name"], names["kind"], names["plural"])


def _contained(rendered: Any, served: Any, path: str = "") -> list[str]:
    """Every place where `served` lacks or changed what we rendered."""
    if isinstance(rendered, dict):
        if not isinstance(served, dict):
            return [f"{path}: {served!r}"]
        out: list[str] = []
        for key, value in rendered.items():
            if key not in served:
                if value not in (False, [], {}, ""):  # zero values are omitted on output
                    out.append(f"{path}.{key}: missing (pruned?)")
            else:
                out += _contained(value, served[key], f"{path}.{key}")
        return out
    if isinstance(rendered, list):
        if not isinstance(served, list) or len(served) != len(rendered):
            return [f"{path}: {served!r}"]
        return [p for r, s, i in zip(rendered, served, range(len(rendered)), strict=True)
                for p in _contained(r, s, f"{path}[{i}]")]  # fmt: skip
    return [] if rendered == served else [f"{path}: {served!r} != {rendered!r}"]


async def _apply(client: AsyncClient, doc: dict[str, Any]) -> dict[str, Any]:
    obj = codecs.from_dict(doc)
    served = await client.apply(obj, field_manager=c.FIELD_MANAGER, force=True)
    result: dict[str, Any] = served.to_dict() if hasattr(served, "to_dict") else dict(served)
    return result


async def _allowed(
    admin: AsyncClient, user: str, groups: list[str], verb: str, resource: str, ns: str
) -> bool:
    review = await admin.create(
        codecs.from_dict(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {
                        "namespace": ns,
                        "verb": verb,
                        "group": "rbac.authorization.k8s.io" if resource.startswith("role") else "",
                        "resource": resource,
                    },
                },
            }
        )
    )
    return bool(review.status.allowed)


@pytest_asyncio.fixture(loop_scope="session")
async def tenants(admin: AsyncClient) -> AsyncIterator[list[str]]:
    """Names of the tenants a test applied; afterwards each one's Profile and namespace
    are deleted. The Profile matters most: it is cluster-scoped, so a left-over one
    becomes a tenant of every controller a later test runs in this session."""
    names: list[str] = []
    yield names
    _register_crd_kinds()
    profile_kind = get_generic_resource(PROFILE_API_VERSION, c.PROFILE_KIND)
    assert profile_kind is not None
    for name in names:
        for kind in (profile_kind, Namespace):
            try:
                await admin.delete(kind, name)
            except ApiError as err:
                if err.status.code != 404:
                    raise


async def _render_and_apply_tenant(
    admin: AsyncClient, user_client: UserClient, policy: TenancyPolicySpec, tenants: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    _register_crd_kinds()
    # This module's platform areas only: the webhook configurations and gateway mesh
    # policies in platform_objects() would route this shared cluster's requests to
    # servers that do not run here (their own tests register them).
    ours = [
        *platform.crds(policy),
        *platform.own_namespace(policy),
        *platform.component_identities(policy),
        *platform.kubeflow_roles(policy),
        *platform.priority_classes(policy),
    ]
    for doc in ours:
        assert _contained(doc, await _apply(admin, doc)) == [], doc["metadata"]["name"]
    controller = user_client(CONTROLLER, CONTROLLER_GROUPS)
    user = f"Ada.{uuid.uuid4().hex[:8]}@Example.com"
    profile_doc = profile_for_user(policy, user)
    tenants.append(profile_doc["metadata"]["name"])  # deleted by the fixture, even on failure
    profile_doc["spec"]["contributors"] = [
        {"kind": "User", "name": "bob@example.com", "role": "edit"},
        {"kind": "Group", "name": "ml-viewers", "role": "view"},
    ]
    # The controller's own role suffices for the Profile and for every tenant object.
    served_profile = await _apply(controller, profile_doc)
    assert served_profile["spec"]["contributors"] == profile_doc["spec"]["contributors"]
    profile = parse_profile(served_profile)
    objects = tenant_objects(policy, profile)
    for doc in objects:
        try:
            served = await _apply(controller, doc)
        except ApiError as err:
            pytest.fail(
                f"controller could not apply {doc['kind']}/{doc['metadata']['name']}: {err}"
            )
        assert _contained(doc, served) == [], (doc["kind"], doc["metadata"]["name"])
    return profile.name, objects


@pytest.mark.parametrize(
    "policy", [OPENSHIFT_OSSM, KUBERNETES_ISTIO], ids=["openshift-ossm", "kubernetes-istio"]
)
async def test_controller_role_applies_every_tenant_object_and_nothing_is_pruned(
    admin: AsyncClient, user_client: UserClient, policy: TenancyPolicySpec, tenants: list[str]
) -> None:
    ns, objects = await _render_and_apply_tenant(admin, user_client, policy, tenants)
    assert len(objects) > 15
    # Least privilege holds: the controller cannot read Secrets or delete namespaces.
    assert not await _allowed(admin, CONTROLLER, CONTROLLER_GROUPS, "get", "secrets", ns)
    assert not await _allowed(admin, CONTROLLER, CONTROLLER_GROUPS, "delete", "namespaces", "")


async def _eventually_allowed(
    admin: AsyncClient, user: str, groups: list[str], verb: str, resource: str, ns: str
) -> bool:
    # ClusterRole aggregation is done by kube-controller-manager, a moment after apply.
    for _ in range(100):
        if await _allowed(admin, user, groups, verb, resource, ns):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_tenant_rbac_means_owner_admin_contributors_and_nobody_else(
    admin: AsyncClient, user_client: UserClient, tenants: list[str]
) -> None:
    ns, objects = await _render_and_apply_tenant(admin, user_client, KUBERNETES_ISTIO, tenants)
    owner = next(o for o in objects if o["kind"] == "Namespace")["metadata"]["annotations"]["owner"]
    editor_sa = f"system:serviceaccount:{ns}:default-editor"
    assert await _eventually_allowed(admin, owner, [], "create", "pods", ns)
    assert await _eventually_allowed(admin, owner, [], "create", "rolebindings", ns)
    assert await _eventually_allowed(admin, "bob@example.com", [], "create", "pods", ns)
    assert not await _allowed(admin, "bob@example.com", [], "create", "rolebindings", ns)
    assert await _eventually_allowed(admin, "carol", ["ml-viewers"], "list", "pods", ns)
    assert not await _allowed(admin, "carol", ["ml-viewers"], "create", "pods", ns)
    assert await _eventually_allowed(admin, editor_sa, [], "create", "pods", ns)
    assert not await _allowed(admin, "mallory", ["other"], "list", "pods", ns)


async def test_tenant_pods_get_gpu_toleration_and_default_requests_within_quota(
    admin: AsyncClient, user_client: UserClient, tenants: list[str]
) -> None:
    ns, _ = await _render_and_apply_tenant(admin, user_client, KUBERNETES_ISTIO, tenants)
    for _ in range(300):
        try:
            await admin.get(ServiceAccount, "default", namespace=ns)
            break
        except ApiError:
            await asyncio.sleep(0.1)
    pod = codecs.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bare", "namespace": ns},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
    )
    # A quota on cpu/memory rejects request-less pods unless the LimitRange fills them.
    created = await admin.create(pod)
    assert isinstance(created, Pod)
    requests = created.spec.containers[0].resources.requests
    assert requests == {"cpu": "200m", "memory": "100Mi"}
    tolerations = [t.to_dict() for t in created.spec.tolerations or []]
    assert {
        "key": "workload",
        "operator": "Equal",
        "value": "ai-ml",
        "effect": "NoSchedule",
    } in tolerations
