"""Chaos: leader failover with two controller replicas (Lease leader election).

Replica A leads, replica B stands by; during an onboarding burst A is SIGKILLed (or, in
the second scenario, frozen with SIGSTOP and thawed after B took over) after a random
(seeded) number of API writes. B takes over within the Lease's bounds (not before
A's lease ran out: acquireTime - A's last renewTime >= leaseDurationSeconds; and no later
than one retry period after it) and finishes the burst. Each replica's write log (a line
per reconcile started and per API write, `--write-log`) proves that no reconcile ran in
both at once: B did nothing before it led, A nothing after it was killed, and every line
of A is older than every line of B.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from chaos_support import (
    ChaosRandom,
    ControllerProcess,
    eventually,
    install_policy,
    onboard,
    owned_problems,
    wait_all_ready,
    wait_writes,
)

from kftenancy.controllers.writelog import read_write_log
from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.reconcile import parse_time

TENANTS = 500
LEASE_NAMESPACE = "kftenancy-system"
LEASE_API = "coordination.k8s.io/v1"
LEASE_NAME = "kftenancy-controller"
BUDGET_SECONDS = 420.0  # a bound; ~0.5-3 minutes on this 2-core machine (15 s of it the Lease)


def work(path: Path) -> list[float]:
    """Times of a replica's reconciles and writes (Lease renewals left out)."""
    return [e["t"] for e in read_write_log(path) if e.get("kind") != "Lease"]


def replica(lab: LocalCluster, name: str, tmp_path: Path) -> ControllerProcess:
    """One controller replica with leader election and its own write log."""
    return ControllerProcess(
        lab,
        "chaos-failover",
        name,
        leader_election=True,
        lease_namespace=LEASE_NAMESPACE,
        write_log=tmp_path / f"{name}.jsonl",
    )


async def test_the_standby_takes_over_within_the_lease_and_never_works_alongside_the_leader(
    lab: LocalCluster, lab_kube: Kube, chaos_rng: ChaosRandom, tmp_path: Path
) -> None:
    async with asyncio.timeout(BUDGET_SECONDS):
        kube = lab_kube
        policy = await install_policy(kube, "chaos-failover")
        await kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
        )
        kill_after = chaos_rng.randint(200, TENANTS * 10)
        print(f"leader killed after {kill_after} of its API writes")

        a = replica(lab, "a", tmp_path).start()
        b: ControllerProcess | None = None
        try:
            await a.wait_ready()
            b = replica(lab, "b", tmp_path).start()
            standby = b
            await eventually(
                lambda: _true("standing by" in standby.tail()), 60, "replica b standing by"
            )
            assert not await b.ready()

            names = await onboard(
                kube, policy, [f"failover-{i}@example.com" for i in range(TENANTS)]
            )
            assert await wait_writes(a, kill_after, within=180) >= kill_after
            a.kill()
            killed_at = time.time()
            lease = await kube.get(LEASE_API, "Lease", LEASE_NAME, LEASE_NAMESPACE)
            assert lease is not None and lease["spec"]["holderIdentity"] == a.identity
            last_renewal = parse_time(lease["spec"]["renewTime"])
            duration = int(lease["spec"]["leaseDurationSeconds"])

            await b.wait_ready(within=60)
            lease = await kube.get(LEASE_API, "Lease", LEASE_NAME, LEASE_NAMESPACE)
            assert lease is not None and lease["spec"]["holderIdentity"] == b.identity
            acquired = parse_time(lease["spec"]["acquireTime"])
            assert last_renewal is not None and acquired is not None
            waited = (acquired - last_renewal).total_seconds()
            print(f"lease {duration} s: b acquired {waited:.1f} s after a's last renewal")
            assert waited >= duration, "b took over while a's lease was still valid"
            # b retries every duration/3; a few seconds more for a loaded machine.
            assert waited <= duration + duration / 3 + 5, "b took over late"

            await wait_all_ready(kube, names, within=240)
            assert not await owned_problems(kube, policy)
            a_work, b_work = work(tmp_path / "a.jsonl"), work(tmp_path / "b.jsonl")
            assert a_work and b_work
            assert max(a_work) < killed_at
            assert min(b_work) > acquired.timestamp(), "b worked before it led"
            assert max(a_work) < min(b_work), "a and b worked at the same time"
        finally:
            a.kill()
            if b is not None:
                b.stop()


async def _true(value: bool) -> bool:
    return value


async def test_a_paused_leader_stops_writing_before_the_standby_takes_over(
    lab: LocalCluster, lab_kube: Kube, chaos_rng: ChaosRandom, tmp_path: Path
) -> None:
    """A leader frozen (SIGSTOP: a long GC pause, a stopped VM) past its Lease and then
    thawed must not write once it is thawed: it counts itself leader only until its renew
    deadline (2/3 of the Lease), refuses every write after that, finds the Lease taken
    and exits."""
    async with asyncio.timeout(BUDGET_SECONDS):
        kube = lab_kube
        policy = await install_policy(kube, "chaos-failover")
        if await kube.get("v1", "Namespace", LEASE_NAMESPACE) is None:
            await kube.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
            )
        pause_after = chaos_rng.randint(200, TENANTS * 10)
        print(f"leader frozen after {pause_after} of its API writes")

        a = replica(lab, "paused-a", tmp_path).start()
        b: ControllerProcess | None = None
        try:
            await a.wait_ready()
            b = replica(lab, "paused-b", tmp_path).start()
            standby = b
            await eventually(
                lambda: _true("standing by" in standby.tail()), 60, "replica b standing by"
            )
            names = await onboard(kube, policy, [f"paused-{i}@example.com" for i in range(TENANTS)])
            assert await wait_writes(a, pause_after, within=180) >= pause_after
            assert a.popen is not None
            a.popen.send_signal(signal.SIGSTOP)
            paused_at = time.time()
            await b.wait_ready(within=60)  # b leads while a is frozen
            lease = await kube.get(LEASE_API, "Lease", LEASE_NAME, LEASE_NAMESPACE)
            assert lease is not None and lease["spec"]["holderIdentity"] == b.identity
            a.popen.send_signal(signal.SIGCONT)
            thawed = a
            await eventually(lambda: _true(not thawed.alive()), 60, "the thawed old leader exits")
            assert "lost the lease" in a.tail(10_000)

            await wait_all_ready(kube, names, within=240)
            assert not await owned_problems(kube, policy)
            a_work, b_work = work(tmp_path / "paused-a.jsonl"), work(tmp_path / "paused-b.jsonl")
            assert a_work and b_work
            assert max(a_work) < paused_at, "the old leader worked after it was thawed"
            assert max(a_work) < min(b_work), "a and b worked at the same time"
        finally:
            if a.popen is not None and a.alive():
                a.popen.send_signal(signal.SIGCONT)
            a.kill()
            if b is not None:
                b.stop()
