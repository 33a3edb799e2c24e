"""Coexistence with upstream Kubeflow's profile-controller (platform.kubeflowProfileController).

Upstream's controller is stood in for by writes under its own field manager, exactly the
objects it creates (namespace with an ownerReference to the Profile, namespaceAdmin,
default-editor/viewer, ns-owner-access-istio, kf-resource-quota). kftenancy must then
manage only the rest, and server-side apply's managedFields must show no field owned by
both managers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from test_controller import (
    POLICY_API,
    desired_for,
    eventually,
    in_sync,
    running,
    settle,
    uid,
    wait_ready,
    wait_reason,
)

from kftenancy import constants as c
from kftenancy.controllers.operator import Controller
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.reconcile import key_of, owned_paths

UPSTREAM = "profile-controller"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kube(cluster: LocalCluster) -> AsyncIterator[Kube]:
    k = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    yield k
    await k.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream_controller(cluster: LocalCluster, kube: Kube) -> AsyncIterator[Controller]:
    name = f"up-{uid()}"
    spec = {"platform": {"kubeflowProfileController": True}}
    await kube.apply(
        {"apiVersion": POLICY_API, "kind": c.POLICY_KIND, "metadata": {"name": name}, "spec": spec}
    )
    async with running(cluster, name) as ctl:
        ctl.test_policy_name = name  # type: ignore[attr-defined]
        yield ctl
    await kube.delete(POLICY_API, c.POLICY_KIND, name)


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(kube: Kube, upstream_controller: Controller) -> AsyncIterator[str]:
    """A fresh Profile name. Afterwards the Profile is deleted (offboarded through the
    finalizer by the still running controller) and its namespace too: a left-over
    Profile is cluster-scoped and would become a tenant of every controller a later test
    runs, one whose namespace (upstream's, not labelled ours) it must refuse."""
    name = f"kf-{uid()}"
    yield name
    await kube.delete(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    await eventually(
        lambda: _gone(kube, name), what=f"Profile {name} deleted after its finalizer ran"
    )
    await kube.delete("v1", "Namespace", name)


async def _gone(kube: Kube, name: str) -> bool:
    return await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name) is None


async def upstream_creates(kube: Kube, profile: dict[str, Any]) -> None:
    """What Kubeflow's profile-controller creates for a Profile (as an Update, its way)."""
    name, owner = profile["metadata"]["name"], profile["spec"]["owner"]["name"]
    ref = {
        "apiVersion": PROFILE_API_VERSION,
        "kind": c.PROFILE_KIND,
        "name": name,
        "uid": profile["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "annotations": {"owner": owner},
                "labels": {
                    "app.kubernetes.io/part-of": "kubeflow-profile",
                    "istio-injection": "enabled",
                },
                "ownerReferences": [ref],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default-editor", "namespace": name},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default-viewer", "namespace": name},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": "namespaceAdmin",
                "namespace": name,
                "annotations": {"user": owner, "role": "admin"},
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kubeflow-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner}],
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "ns-owner-access-istio", "namespace": name},
            "spec": {
                "action": "ALLOW",
                "rules": [
                    {"when": [{"key": "request.headers[kubeflow-userid]", "values": [owner]}]}
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "kf-resource-quota", "namespace": name},
            "spec": {"hard": {"cpu": "8"}},
        },
    ]
    for obj in objs:
        await kube.apply_as(obj, UPSTREAM)


async def test_with_upstream_kftenancy_manages_only_the_rest_without_field_fights(
    kube: Kube, upstream_controller: Controller, tenant: str
) -> None:
    name = tenant
    await kube.create(
        {
            "apiVersion": PROFILE_API_VERSION,
            "kind": c.PROFILE_KIND,
            "metadata": {"name": name},
            "spec": {"owner": {"kind": "User", "name": f"{name}@example.com"}},
        }
    )
    await wait_reason(kube, name, "WaitingForNamespace")
    profile = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    assert profile is not None
    await upstream_creates(kube, profile)
    await wait_ready(kube, name, within=60)
    desired = await desired_for(kube, upstream_controller.test_policy_name, name)  # type: ignore[attr-defined]
    kinds = {o["kind"] for o in desired}
    assert "Namespace" not in kinds and all(
        o["metadata"]["name"] != "namespaceAdmin" for o in desired
    )
    assert await in_sync(kube, desired)
    await settle(upstream_controller)

    # No object has a field owned by both managers.
    everything = [
        *await kube.list("v1", "Namespace"),
        *[
            o
            for kind in ("ServiceAccount", "ResourceQuota", "LimitRange")
            for o in await kube.list("v1", kind, namespace=name)
        ],
        *await kube.list("rbac.authorization.k8s.io/v1", "RoleBinding", namespace=name),
        *await kube.list("security.istio.io/v1", "AuthorizationPolicy", namespace=name),
        *await kube.list("networking.k8s.io/v1", "NetworkPolicy", namespace=name),
    ]
    checked = 0
    for obj in everything:
        if obj["kind"] == "Namespace" and obj["metadata"]["name"] != name:
            continue
        ours, theirs = owned_paths(obj, c.FIELD_MANAGER), owned_paths(obj, UPSTREAM)
        assert not (ours & theirs), f"{key_of(obj)}: both own {sorted(ours & theirs)}"
        checked += 1
    assert checked >= 10
    # upstream's objects are untouched by us
    admin = await kube.get("rbac.authorization.k8s.io/v1", "RoleBinding", "namespaceAdmin", name)
    assert admin is not None and not owned_paths(admin, c.FIELD_MANAGER)
    # and a resync finds nothing to do
    before = upstream_controller.kube.writes.total
    await upstream_controller.resync()
    await eventually(lambda: _idle(upstream_controller), what="resync done")
    await settle(upstream_controller, quiet=0.5)
    assert upstream_controller.kube.writes.total == before


async def _idle(ctl: Controller) -> bool:
    return not len(ctl.queue)
