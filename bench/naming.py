"""Benchmark: user id → profile name throughput (prints numbers; not a test).

Run: .venv/bin/python bench/naming.py
"""

from __future__ import annotations

import time

from kftenancy.naming import profile_name
from kftenancy.policy import load_policy


def main(n: int = 50_000) -> None:
    policy = load_policy(None)
    ids = [f"User.{i}@Example.com" for i in range(n)] + [f"user{i}" for i in range(n)]
    start = time.perf_counter()
    names = {profile_name(policy, uid) for uid in ids}
    elapsed = time.perf_counter() - start
    assert len(names) == len(ids)
    print(f"naming: {len(ids)} ids in {elapsed:.3f} s = {len(ids) / elapsed:,.0f} names/s")


if __name__ == "__main__":
    main()
