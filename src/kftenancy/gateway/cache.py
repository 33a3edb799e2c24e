"""A bounded time-to-live cache with the clock passed in.

Envoy has no ext_authz response cache, so the gateway caches what is expensive to learn
(TokenReview and SubjectAccessReview results, signed identity tokens) itself. Each entry
carries its own expiry, so one cache can keep "allowed" for minutes and "denied" for
seconds. The cache never reads a clock: callers pass `now` (seconds, any monotonic
origin), which keeps expiry testable and deterministic.

Bounded: when full, the least recently used entry is evicted. Not thread-safe; the
gateway runs it on one asyncio loop.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class TTLCache(Generic[K, V]):
    """`get(key, now)` returns the value stored with `put(key, value, now, ttl)` until
    `now >= stored now + ttl`, then None. At most `maxsize` entries (LRU eviction);
    `maxsize == 0` or `ttl <= 0` stores nothing."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self.stats = CacheStats()
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, now: float) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        expires, value = entry
        if now >= expires:
            del self._data[key]
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: K, value: V, now: float, ttl: float) -> None:
        if self.maxsize == 0 or ttl <= 0:
            self._data.pop(key, None)
            return
        self._data[key] = (now + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
