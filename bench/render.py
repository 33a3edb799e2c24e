"""Benchmark: rendering tenants (prints numbers; not a test).

Run: .venv/bin/python bench/render.py
Measures profile_for_user + parse + tenant_objects for N users with two contributors
each, on the seed policy with the data lake on (the heaviest common configuration).
"""

from __future__ import annotations

import statistics
import time

from kftenancy.policy import load_policy
from kftenancy.profile import parse_profile
from kftenancy.render import platform_objects, profile_for_user, tenant_objects


def main(n: int = 2_000) -> None:
    policy = load_policy({"dataLake": {"enabled": True}})
    contributors = [
        {"kind": "User", "name": "lead@example.com", "role": "edit"},
        {"kind": "Group", "name": "ml-team", "role": "view"},
    ]
    durations = []
    objects = 0
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        doc = profile_for_user(policy, f"User.{i}@Example.com")
        doc["spec"]["contributors"] = contributors
        objs = tenant_objects(policy, parse_profile(doc))
        durations.append(time.perf_counter() - t0)
        objects += len(objs)
    total = time.perf_counter() - start
    durations.sort()
    p50 = statistics.median(durations) * 1e3
    p99 = durations[int(len(durations) * 0.99)] * 1e3
    print(
        f"tenant render: {n} tenants, {objects} objects in {total:.2f} s "
        f"({n / total:,.0f} tenants/s); per tenant p50 {p50:.3f} ms, p99 {p99:.3f} ms"
    )
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        platform = platform_objects(policy)
        elapsed = (time.perf_counter() - t0) * 1e3
        print(f"platform render ({label}): {len(platform)} objects in {elapsed:.2f} ms")


if __name__ == "__main__":
    main()
