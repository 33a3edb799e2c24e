"""Chaos: the controller SIGKILLed at 20 random (seeded) points while 500 tenants are
being onboarded, and started again each time. Afterwards every tenant is Ready, each
owned object exists exactly once, nothing is orphaned, and nothing without our labels
changed (a snapshot of every non-owned object of the kinds we write, before and after)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chaos_support import (
    ChaosRandom,
    ControllerProcess,
    bystanders,
    install_policy,
    is_ready,
    onboard,
    owned_problems,
    profiles,
    snapshot_diff,
    snapshot_unowned,
    wait_all_ready,
    wait_writes,
)

from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.render import profile_for_user

TENANTS = 500
KILLS = 20
BUDGET_SECONDS = 600.0  # the whole scenario (a bound); ~3-6 minutes on this 2-core machine


async def test_sigkill_at_random_points_during_an_onboarding_burst_converges(
    lab: LocalCluster, lab_kube: Kube, chaos_rng: ChaosRandom, tmp_path: Path
) -> None:
    async with asyncio.timeout(BUDGET_SECONDS):
        kube = lab_kube
        policy = await install_policy(kube, "chaos-kills")
        await bystanders(kube)
        # A user whose namespace already exists and is not ours: stays NamespaceNotOwned,
        # its namespace untouched (part of the snapshot).
        squatter = str(profile_for_user(policy, "squatter@example.com")["metadata"]["name"])
        await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": squatter}})
        before = await snapshot_unowned(kube)

        # The kill points: during start-up (after a random delay) or after a random
        # number of API writes of that incarnation.
        points = [
            ("startup", round(chaos_rng.uniform(0.2, 2.5), 2))
            if chaos_rng.random() < 0.25
            else ("writes", chaos_rng.randint(1, 700))
            for _ in range(KILLS)
        ]
        pauses = [round(chaos_rng.uniform(0.3, 2.5), 2) for _ in range(TENANTS // 50)]
        print(f"kill points: {points}; onboarding pauses: {pauses}")

        users = [f"chaos-{i}@example.com" for i in range(TENANTS)]

        async def onboarding() -> list[str]:
            names = await onboard(kube, policy, ["squatter@example.com"])
            names.clear()
            for batch, pause in enumerate(pauses):
                names += await onboard(kube, policy, users[batch * 50 : (batch + 1) * 50])
                await asyncio.sleep(pause)
            return names

        creator = asyncio.create_task(onboarding())
        mid_work = 0
        for i, (kind, value) in enumerate(points):
            ctl = ControllerProcess(
                lab, "chaos-kills", f"kill-{i}", write_log=tmp_path / f"writes-{i}.jsonl"
            ).start()
            if kind == "startup":
                await asyncio.sleep(float(value))
            else:
                await ctl.wait_ready()
                await wait_writes(ctl, int(value), within=20)
            n = len(ctl.writes())
            ctl.kill()
            mid_work += n > 0
        names = await creator
        have = await profiles(kube)
        unfinished = sum(1 for n in names if not is_ready(have[n]))
        print(f"{mid_work} of {KILLS} kills after writes; {unfinished} tenants unfinished")

        final = ControllerProcess(lab, "chaos-kills", "final").start()
        try:
            await final.wait_ready()
            await wait_all_ready(kube, names, within=240)
            squatted = (await profiles(kube))[squatter]
            reasons = [x["reason"] for x in squatted["status"]["conditions"]]
            assert reasons == ["NamespaceNotOwned"], reasons
            assert not await kube.list_owned([("v1", "ServiceAccount")], tenant=squatter)
            assert not await owned_problems(kube, policy)
            assert not snapshot_diff(before, await snapshot_unowned(kube))
            assert final.alive()
        finally:
            final.stop()
        # The kills really interrupted work (else this scenario proves little).
        assert mid_work >= KILLS // 3, f"only {mid_work} kills came after writes"
        assert unfinished > 0, "the burst was done before the last kill"
