"""Just-in-time onboarding at the front door: one Profile per user, created once.

The first allowed request of a user calls the controller's idempotent onboarding
function (through an injected coroutine, so this logic is testable without a cluster).
Concurrent first requests of the same user share one call (single flight); users
onboarded successfully are remembered (bounded, long TTL), so steady-state requests make
no API calls. A failed call is not remembered: the next request tries again. With a
`limiter`, a call that would start a new onboarding is refused (`Throttled`) when the
global onboarding rate is used up; joining a running call or a known user costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kftenancy.gateway.cache import TTLCache
from kftenancy.gateway.flight import SingleFlight
from kftenancy.gateway.limits import Throttled, WorkLimiter

OnboardFn = Callable[[str], Awaitable[object]]


class Onboarder:
    def __init__(
        self,
        fn: OnboardFn,
        *,
        maxsize: int = 100_000,
        ttl: float = 3600.0,
        limiter: WorkLimiter | None = None,
    ) -> None:
        self._fn = fn
        self._ttl = ttl
        self.known: TTLCache[str, bool] = TTLCache(maxsize)
        self._flight: SingleFlight[str, object] = SingleFlight()
        self.limiter = limiter
        self.calls = 0

    async def ensure(self, user: str, now: float) -> bool | Throttled:
        """Make sure `user` has a Profile; True if this call ran the onboarding function,
        `Throttled` if the onboarding rate is used up. Raises what the onboarding function
        raised (for every waiter of that flight)."""
        if self.known.get(user, now):
            return False
        if self.limiter is not None and not self._flight.running(user):
            throttled = self.limiter.admit("-", now)
            if throttled is not None:
                return throttled

        async def run() -> object:
            self.calls += 1
            result = await self._fn(user)
            self.known.put(user, True, now, self._ttl)
            return result

        _, ran = await self._flight.do(user, run)
        return ran
