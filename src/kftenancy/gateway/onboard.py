"""Just-in-time onboarding at the front door: one Profile per user, created once.

The first allowed request of a user calls the controller's idempotent onboarding
function (through an injected coroutine, so this logic is testable without a cluster).
Concurrent first requests of the same user share one call (single flight); users
onboarded successfully are remembered (bounded, long TTL), so steady-state requests make
no API calls. A failed call is not remembered: the next request tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kftenancy.gateway.cache import TTLCache

OnboardFn = Callable[[str], Awaitable[object]]


class Onboarder:
    def __init__(self, fn: OnboardFn, *, maxsize: int = 100_000, ttl: float = 3600.0) -> None:
        self._fn = fn
        self._ttl = ttl
        self.known: TTLCache[str, bool] = TTLCache(maxsize)
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.calls = 0

    async def ensure(self, user: str, now: float) -> bool:
        """Make sure `user` has a Profile; True if this call ran the onboarding function.
        Raises what the onboarding function raised (for every waiter of that flight)."""
        if self.known.get(user, now):
            return False
        flight = self._inflight.get(user)
        if flight is not None:
            await asyncio.shield(flight)
            return False
        flight = asyncio.get_running_loop().create_future()
        self._inflight[user] = flight
        try:
            self.calls += 1
            await self._fn(user)
        except BaseException as e:
            flight.set_exception(e)
            flight.exception()  # retrieved: waiters re-raise it; no "never retrieved" noise
            raise
        else:
            self.known.put(user, True, now, self._ttl)
            flight.set_result(None)
        finally:
            del self._inflight[user]
        return True
