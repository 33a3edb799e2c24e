"""The tenants gauge counts each tenant's latest outcome once, updated in constant time."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from kftenancy.controllers.metrics import Metrics

OUTCOMES = st.sampled_from(
    [(True, "Ready"), (False, "ApplyFailed"), (False, "InvalidSpec"), (None, "Gone")]
)


def gauge(m: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["ready"], s.labels["reason"]): s.value
        for family in m.registry.collect()
        if family.name == "kftenancy_tenants"
        for s in family.samples
    }


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), OUTCOMES), max_size=40))
def test_the_gauge_is_the_tally_of_the_latest_outcome_per_tenant(
    steps: list[tuple[str, tuple[bool | None, str]]],
) -> None:
    m = Metrics()
    latest: dict[str, tuple[str, str]] = {}
    for name, (ready, reason) in steps:
        m.tenant_state(name, ready, reason)
        if ready is None:
            latest.pop(name, None)
        else:
            latest[name] = ("True" if ready else "False", reason)
    assert gauge(m) == {k: float(n) for k, n in Counter(latest.values()).items()}
