"""Chaos: kube-apiserver restarted mid-burst, and separately etcd restarted mid-burst
(same ports and data, `LocalCluster.restart`). The controller keeps running (no restart
of its own: the same process throughout), reconnects its watches and client, and
converges: every tenant Ready, each owned object once, nothing orphaned, nothing without
our labels changed.

The point of the restart (after how many of the controller's API writes), whether it is
a SIGKILL or a SIGTERM, and how long the component stays down are drawn from the seed.
Leader election is off here: an outage longer than the Lease makes a leader step down
and exit by design (see test_leader_failover.py), which is not what this scenario tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chaos_support import (
    ChaosRandom,
    ControllerProcess,
    bystanders,
    install_policy,
    onboard,
    owned_problems,
    snapshot_diff,
    snapshot_unowned,
    wait_all_ready,
    wait_writes,
)

from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster

TENANTS = 500
WRITES_PER_TENANT = 19  # first reconcile (docs/controller.md, bench/controller.py)
BUDGET_SECONDS = 420.0  # each scenario (a bound); ~1-2.5 minutes on this 2-core machine


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
async def test_a_control_plane_restart_mid_burst_is_survived_without_a_controller_restart(
    component: str, lab: LocalCluster, lab_kube: Kube, chaos_rng: ChaosRandom, tmp_path: Path
) -> None:
    async with asyncio.timeout(BUDGET_SECONDS):
        kube = lab_kube
        policy = await install_policy(kube, "chaos-restarts")
        await bystanders(kube, prefix=f"bystander-{component}")
        before = await snapshot_unowned(kube)
        at = chaos_rng.randint(TENANTS * 2, TENANTS * WRITES_PER_TENANT // 2)
        hard = chaos_rng.random() < 0.5
        down = round(chaos_rng.uniform(0.0, 3.0), 2)
        print(f"{component}: restart after {at} controller writes, hard={hard}, down {down} s")

        ctl = ControllerProcess(
            lab, "chaos-restarts", f"restart-{component}", write_log=tmp_path / "writes.jsonl"
        ).start()
        try:
            await ctl.wait_ready()
            pid = ctl.pid
            users = [f"{component}-{i}@example.com" for i in range(TENANTS)]
            names = await onboard(kube, policy, users)
            seen = await wait_writes(ctl, at, within=180)
            assert seen >= at, f"the controller wrote only {seen} times"
            away = lab.restart(component, hard=hard, down_seconds=down)
            print(f"{component} back after {away:.1f} s; {seen} controller writes before")
            await wait_all_ready(kube, names, within=240)
            noticed = [line for line in ctl.tail(10_000).splitlines() if "WARNING" in line]
            print(f"the controller logged {len(noticed)} warnings, e.g. {noticed[:2]}")
            assert ctl.alive() and ctl.pid == pid, "the controller restarted"
            assert not await owned_problems(kube, policy)
            assert not snapshot_diff(before, await snapshot_unowned(kube))
            assert len(ctl.writes()) > seen  # it went on writing after the restart
        finally:
            ctl.stop()
