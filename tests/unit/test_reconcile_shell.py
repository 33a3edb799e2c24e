"""Pure pieces of the controller shell: retry backoff, the work queue, the Lease rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kftenancy.controllers.leader import lease_decision
from kftenancy.controllers.queue import WorkQueue, backoff

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, base=0.5, cap=5) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 5.0]
    assert backoff(10_000) == 300.0


def test_lease_rules() -> None:
    def lease(holder: str | None, renewed: datetime) -> dict[str, object]:
        return {
            "spec": {
                "holderIdentity": holder,
                "renewTime": renewed.isoformat(),
                "leaseDurationSeconds": 15,
            }
        }

    assert lease_decision(None, "me", NOW) == "acquire"
    assert lease_decision(lease(None, NOW), "me", NOW) == "acquire"
    assert lease_decision(lease("me", NOW - timedelta(hours=1)), "me", NOW) == "renew"
    assert lease_decision(lease("other", NOW - timedelta(seconds=5)), "me", NOW) == "wait"
    assert lease_decision(lease("other", NOW - timedelta(seconds=16)), "me", NOW) == "acquire"


async def test_queue_runs_a_key_once_at_a_time_and_again_if_touched_meanwhile() -> None:
    q = WorkQueue(base_delay=0.01)
    running: set[str] = set()
    seen: list[str] = []
    overlap = False

    async def handle(key: str) -> bool:
        nonlocal overlap
        overlap = overlap or key in running
        running.add(key)
        seen.append(key)
        if len(seen) == 1:
            q.add("a")  # touched while being processed: runs once more afterwards
            q.add("a")
        await asyncio.sleep(0.01)
        running.discard(key)
        return True

    workers = [asyncio.create_task(q.worker(handle)) for _ in range(3)]
    q.add("a")
    q.add("a")
    await asyncio.sleep(0.2)
    for w in workers:
        w.cancel()
    assert seen == ["a", "a"] and not overlap


async def test_queue_retries_failures_with_backoff_and_survives_exceptions() -> None:
    q = WorkQueue(base_delay=0.01, max_delay=0.05)
    calls: list[float] = []

    async def handle(key: str) -> bool:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise RuntimeError("boom")
        return len(calls) >= 3

    worker = asyncio.create_task(q.worker(handle))
    q.add("k")
    await asyncio.sleep(0.3)
    worker.cancel()
    assert len(calls) == 3 and q.failures("k") == 0
    assert calls[2] - calls[1] >= 0.02  # second retry waited longer (0.01 then 0.02)
    q.close()
