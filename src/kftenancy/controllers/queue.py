"""A deduplicating work queue with per-key exponential backoff (controller-runtime style).

A key is processed by at most one worker at a time. Adding a key that is queued is a
no-op; adding a key that is being processed marks it dirty, so it runs once more after.
A failed key is retried after `backoff(failures)`; success resets its failure count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("kftenancy.queue")


def backoff(failures: int, *, base: float = 0.5, cap: float = 300.0) -> float:
    """Delay before retry number `failures` (1-based): base·2^(n-1), at most `cap`."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 30)))


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 300.0) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._base = base_delay
        self._cap = max_delay

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        if key in self._timers or key in self._queued:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def worker(self, handle: Callable[[str], Awaitable[bool]]) -> None:
        """Process keys forever. `handle` returns True on success; False or an exception
        means retry with backoff. (Cancel the task to stop.)"""
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            ok = False
            try:
                ok = await handle(key)
            except Exception:
                log.exception("work item %s failed", key)
                ok = False
            finally:
                self._active.discard(key)
                self._queue.task_done()
            if ok:
                self._failures.pop(key, None)
            else:
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                self._dirty.discard(key)
                self.add_after(key, backoff(n, base=self._base, cap=self._cap))
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
