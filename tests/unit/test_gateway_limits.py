"""Flood limits: token buckets, per-client + global admission, onboarding throttling."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kftenancy.gateway.limits import (
    InFlight,
    Rate,
    Throttled,
    TokenBucket,
    WorkLimiter,
    client_address,
)
from kftenancy.gateway.onboard import Onboarder


def test_bucket_allows_a_burst_then_the_rate() -> None:
    b = TokenBucket(Rate(2, 5), now=0)
    for _ in range(5):
        assert b.wait(0) == 0
        b.take(0)
    assert b.wait(0) == pytest.approx(0.5)
    assert b.wait(0.5) == 0
    b.take(0.5)
    assert b.available(100) == 5  # never above the burst


def test_bucket_ignores_a_clock_going_backwards() -> None:
    b = TokenBucket(Rate(1, 1), now=10)
    b.take(10)
    assert b.available(5) == 0
    assert b.available(11) == pytest.approx(1)


def test_a_flooding_client_is_refused_without_draining_the_global_budget() -> None:
    lim = WorkLimiter(Rate(10, 10), Rate(1, 3))
    admitted = [lim.admit("attacker", 0) for _ in range(100)]
    assert admitted[:3] == [None, None, None]
    refused = [a for a in admitted[3:] if a is not None]
    assert len(refused) == 97 and {r.scope for r in refused} == {"client"}
    assert refused[0].retry_after == 1
    # the global bucket was charged only for the 3 admitted calls
    assert all(lim.admit(f"user-{i}", 0) is None for i in range(7))
    assert lim.admit("user-x", 0) == Throttled("global", 1)


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    lim = WorkLimiter(Rate(0.25, 1))
    assert lim.admit("a", 0) is None
    assert lim.admit("a", 0) == Throttled("global", 4)
    assert lim.admit("a", 3.5) == Throttled("global", 1)
    assert lim.admit("a", 4) is None


def test_per_client_buckets_are_bounded() -> None:
    lim = WorkLimiter(Rate(1000, 1000), Rate(1, 1), max_clients=100)
    for i in range(1000):
        lim.admit(f"10.0.{i // 256}.{i % 256}", 0)
    assert len(lim) == 100


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 1, allow_nan=False)),
        max_size=300,
    )
)
def test_admitted_work_never_exceeds_burst_plus_rate_times_time(
    calls: list[tuple[str, float]],
) -> None:
    glob, per = Rate(5, 10), Rate(1, 4)
    lim = WorkLimiter(glob, per)
    now = 0.0
    admitted: dict[str, int] = {}
    for client, step in calls:
        now += step
        if lim.admit(client, now) is None:
            admitted[client] = admitted.get(client, 0) + 1
    assert sum(admitted.values()) <= glob.burst + glob.per_second * now + 1e-9
    for n in admitted.values():
        assert n <= per.burst + per.per_second * now + 1e-9


def test_rate_parse_and_errors() -> None:
    assert Rate.parse("2/20") == Rate(2, 20)
    assert str(Rate(0.5, 10)) == "0.5/10"
    for bad in ("2", "x/1", "0/10", "1/0.5", "-1/3"):
        with pytest.raises(ValueError, match="RATE/BURST"):
            Rate.parse(bad)


def test_in_flight_counts() -> None:
    f = InFlight(2)
    f.enter()
    assert not f.full
    f.enter()
    assert f.full
    f.leave()
    assert not f.full


def test_client_address_uses_envoys_own_forwarded_entry_only_when_trusted() -> None:
    xff = "6.6.6.6, 203.0.113.7"  # the client's forged entry first, Envoy's last
    assert client_address(xff, "10.0.0.5", trust_xff=True) == "203.0.113.7"
    assert client_address(xff, "10.0.0.5", trust_xff=False) == "10.0.0.5"
    assert client_address(None, "10.0.0.5", trust_xff=True) == "10.0.0.5"
    assert client_address("", None, trust_xff=True) == "-"


async def test_onboarding_is_throttled_but_known_users_and_joiners_are_free() -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    async def fn(user: str) -> None:
        calls.append(user)
        await gate.wait()

    ob = Onboarder(fn, limiter=WorkLimiter(Rate(1, 2)))
    first = [asyncio.create_task(ob.ensure("alice", 0)) for _ in range(20)]
    await asyncio.sleep(0)
    second = asyncio.create_task(ob.ensure("bob", 0))
    await asyncio.sleep(0)
    third = await ob.ensure("carol", 0)  # the burst of 2 is used by alice and bob
    assert third == Throttled("global", 1)
    gate.set()
    assert sum(r is True for r in await asyncio.gather(*first)) == 1
    assert await second is True
    assert calls == ["alice", "bob"]
    assert await ob.ensure("alice", 0) is False  # known: costs nothing
    assert await ob.ensure("carol", 1) is True
