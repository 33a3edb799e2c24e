"""Shared machinery of the fuzzers (tests/integration/test_fuzz_*.py).

Inputs are *mutations of valid documents* (a valid AdmissionReview, policy or Profile
with a few values replaced by arbitrary JSON, keys deleted or added), so most of them get
past the first checks and reach the rules, the model validators and the renderer.

Budget: each fuzzer runs rounds of examples with seeds `KFTENANCY_FUZZ_SEED` (default
9), +1, +2, ... until its time budget is spent; the seeds are printed so a finding can
be replayed. `KFTENANCY_FUZZ_SECONDS` sets every fuzzer's budget (e.g. 300 for the
five-minute run); unset, each uses its short default (a few seconds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ROUND_EXAMPLES = 40


def budget(default: float) -> float:
    raw = os.environ.get("KFTENANCY_FUZZ_SECONDS", "")
    return float(raw) if raw else default


def first_seed() -> int:
    return int(os.environ.get("KFTENANCY_FUZZ_SEED", "") or 9)


def fuzz_rounds(
    name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], seconds: float
) -> int:
    """Run `check` on examples of `strategy` in seeded rounds for `seconds`; returns the
    number of examples run. A failing example is shrunk and re-raised by hypothesis."""
    started = time.monotonic()
    rounds = examples = 0
    s = first_seed()
    counted: list[int] = [0]

    def body(value: Any) -> None:
        counted[0] += 1
        check(value)

    while rounds == 0 or time.monotonic() - started < seconds:
        test = seed(s)(
            settings(
                max_examples=ROUND_EXAMPLES,
                database=None,
                deadline=None,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(body))
        )
        try:
            test()
        except BaseException:
            print(
                f"fuzz {name}: FAILED in the round with seed {s} (replay: KFTENANCY_FUZZ_SEED={s})",
                flush=True,
            )
            raise
        rounds += 1
        s += 1
    examples = counted[0]
    print(
        f"fuzz {name}: {examples} examples in {rounds} rounds, "
        f"seeds {first_seed()}..{s - 1}, {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return examples


INTERESTING_STRINGS = [
    "",
    " ",
    "Exists",
    "Equal",
    "NoSchedule",
    "NoExecute",
    "workload",
    "ai-ml",
    "*",
    "system:masters",
    "system:serviceaccount:kftenancy:kftenancy-controller",
    "kftenancy.dev/tenant",
    "default",
    "kube-system",
    "a" * 300,
    "\u00e9\u4e2d",
    "\x00",
    "-1",
    "1e309",
    "null",
    "{}",
    "../..",
    "CREATE",
    "UPDATE",
    "DELETE",
]

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(INTERESTING_STRINGS)
    | st.text(max_size=12)
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(INTERESTING_STRINGS) | st.text(max_size=8), inner, max_size=3
        )
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc


@st.composite
def mutations(draw: st.DrawFn, seeds: list[Any], keys: list[str] | None = None) -> Any:
    """A seed document with 0..4 mutations: replace a value, delete a key or item, add a
    key (a known one or any), wrap a value in a list."""
    doc = _copy(draw(st.sampled_from(seeds)))
    extra = st.sampled_from(keys) if keys else st.text(max_size=8)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap"]))
        if not path:
            if op == "replace":
                doc = draw(json_values)
            continue
        parent = _get(doc, path[:-1])
        last = path[-1]
        if op == "replace":
            parent[last] = draw(json_values)
        elif op == "delete":
            del parent[last]
        elif op == "wrap":
            parent[last] = [parent[last]]
        else:
            target = parent[last]
            if isinstance(target, dict):
                target[draw(extra | st.text(max_size=8))] = draw(json_values)
            elif isinstance(target, list):
                target.append(draw(json_values))
    return doc
