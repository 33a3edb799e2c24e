"""The bounded TTL cache (clock passed in)."""

from __future__ import annotations

from kftenancy.gateway.cache import TTLCache


def test_entry_lives_exactly_its_ttl() -> None:
    c: TTLCache[str, int] = TTLCache(10)
    c.put("a", 1, now=100.0, ttl=5)
    assert c.get("a", 104.9) == 1
    assert c.get("a", 105.0) is None
    assert len(c) == 0


def test_each_entry_has_its_own_ttl() -> None:
    c: TTLCache[str, bool] = TTLCache(10)
    c.put("allow", True, now=0, ttl=300)
    c.put("deny", False, now=0, ttl=10)
    assert c.get("deny", 11) is None
    assert c.get("allow", 11) is True


def test_lru_eviction_keeps_size_bounded() -> None:
    c: TTLCache[int, int] = TTLCache(3)
    for i in range(3):
        c.put(i, i, 0, 100)
    assert c.get(0, 1) == 0  # 0 is now most recent
    c.put(3, 3, 1, 100)
    assert len(c) == 3
    assert c.get(1, 2) is None and c.get(0, 2) == 0 and c.get(3, 2) == 3


def test_zero_size_or_ttl_stores_nothing() -> None:
    c: TTLCache[str, int] = TTLCache(0)
    c.put("a", 1, 0, 100)
    assert c.get("a", 0) is None
    d: TTLCache[str, int] = TTLCache(5)
    d.put("a", 1, 0, 100)
    d.put("a", 2, 0, 0)  # ttl 0 drops an older entry instead of keeping it
    assert d.get("a", 0) is None


def test_hit_ratio() -> None:
    c: TTLCache[str, int] = TTLCache(5)
    c.put("a", 1, 0, 10)
    c.get("a", 1)
    c.get("b", 1)
    c.get("a", 2)
    assert c.stats.hits == 2 and c.stats.misses == 1
    assert abs(c.stats.hit_ratio - 2 / 3) < 1e-9
