"""Single flight: concurrent callers asking for the same key share one call.

A burst of first requests of one user (a browser opening a notebook fires dozens) must
cost one TokenReview, one SubjectAccessReview and one onboarding call, not dozens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    def running(self, key: K) -> bool:
        """True while a call for `key` is in flight (joining it costs nothing)."""
        return key in self._inflight

    async def do(self, key: K, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """`(fn(), True)` for the caller that ran it; `(same result, False)` for callers
        that joined while it ran. An exception reaches every caller of that flight."""
        flight = self._inflight.get(key)
        if flight is not None:
            return await asyncio.shield(flight), False
        flight = asyncio.get_running_loop().create_future()
        self._inflight[key] = flight
        try:
            value = await fn()
        except BaseException as e:
            flight.set_exception(e)
            flight.exception()  # retrieved: joiners re-raise it; no "never retrieved" warning
            raise
        else:
            flight.set_result(value)
            return value, True
        finally:
            del self._inflight[key]
