"""Just-in-time onboarding: single flight per user, known users cached, failures retried."""

from __future__ import annotations

import asyncio

import pytest

from kftenancy.gateway.onboard import Onboarder


async def test_concurrent_first_requests_make_one_call() -> None:
    calls: list[str] = []

    async def fn(user: str) -> None:
        calls.append(user)
        await asyncio.sleep(0.01)

    ob = Onboarder(fn)
    ran = await asyncio.gather(*(ob.ensure("alice", 0) for _ in range(50)), ob.ensure("bob", 0))
    assert calls.count("alice") == 1 and calls.count("bob") == 1
    assert sum(ran) == 2
    assert await ob.ensure("alice", 10) is False
    assert calls.count("alice") == 1


async def test_known_users_expire_after_ttl() -> None:
    calls: list[str] = []

    async def fn(user: str) -> None:
        calls.append(user)

    ob = Onboarder(fn, ttl=100)
    await ob.ensure("alice", 0)
    await ob.ensure("alice", 99)
    await ob.ensure("alice", 100)
    assert calls == ["alice", "alice"]


async def test_failure_reaches_every_waiter_and_is_retried() -> None:
    attempts = 0

    async def fn(user: str) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise RuntimeError("api down")

    ob = Onboarder(fn)
    results = await asyncio.gather(
        *(ob.ensure("alice", 0) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert attempts == 1
    assert await ob.ensure("alice", 1) is True
    assert attempts == 2


async def test_failure_propagates() -> None:
    async def fn(user: str) -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        await Onboarder(fn).ensure("x", 0)


async def test_single_flight_shares_one_call_and_its_result() -> None:
    from kftenancy.gateway.flight import SingleFlight

    calls = 0

    async def fn() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    sf: SingleFlight[str, int] = SingleFlight()
    out = await asyncio.gather(*(sf.do("k", fn) for _ in range(30)))
    assert calls == 1
    assert [v for v, _ in out] == [42] * 30 and sum(ran for _, ran in out) == 1
    await sf.do("k", fn)  # a later call is a new flight
    assert calls == 2
