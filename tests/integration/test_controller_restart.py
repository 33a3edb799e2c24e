"""Killing the controller mid-reconcile and starting it again converges: every tenant
Ready, exactly the renderer's objects, no duplicates, nothing orphaned. This module runs
no other controller, so the one killed is the one doing the work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio
from test_controller import (
    POLICY_API,
    desired_for,
    eventually,
    in_sync,
    onboard,
    policy_spec,
    running,
    uid,
    wait_ready,
)

from kftenancy import constants as c
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.reconcile import key_of


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kube(cluster: LocalCluster) -> AsyncIterator[Kube]:
    k = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    yield k
    await k.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def policy_name(kube: Kube) -> AsyncIterator[str]:
    name = f"restart-{uid()}"
    await kube.apply(
        {
            "apiVersion": POLICY_API,
            "kind": c.POLICY_KIND,
            "metadata": {"name": name},
            "spec": policy_spec(),
        }
    )
    yield name
    await kube.delete(POLICY_API, c.POLICY_KIND, name)


async def test_killing_the_controller_mid_reconcile_converges_without_duplicates_or_orphans(
    cluster: LocalCluster, kube: Kube, policy_name: str
) -> None:
    first = Controller(
        ControllerSettings(
            kubeconfig=str(cluster.admin_kubeconfig), policy_name=policy_name,
            metrics_port=0, leader_election=False, apply_platform=False, workers=2,
        )
    )  # fmt: skip
    task = asyncio.create_task(first.run(asyncio.Event()))
    try:
        await eventually(
            lambda: _true(first.ready.is_set()), within=60, what="first controller ready"
        )
        names = [await onboard(kube, policy_name, f"kim-{uid()}-{i}") for i in range(8)]
        await eventually(
            lambda: _true(first.kube.writes.total > 5), within=60, what="first controller writing"
        )
    finally:
        task.cancel()  # killed mid-reconcile: no graceful stop
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await first.kube.close()
    half_done = first.kube.writes.total
    async with running(cluster, policy_name) as second:
        for n in names:
            await wait_ready(kube, n, within=90)
            desired = await desired_for(kube, policy_name, n)
            owned = await second.reconciler.observe(n, desired)
            keys = [key_of(o) for o in owned]
            assert len(keys) == len(set(keys)), f"{n}: duplicates"
            assert set(keys) == {key_of(o) for o in desired}, f"{n}: missing or orphaned objects"
            assert await in_sync(kube, desired)
    per_tenant = len(await desired_for(kube, policy_name, names[0]))
    assert half_done < per_tenant * len(names)  # it really was killed before finishing


async def _true(value: bool) -> bool:
    return value
