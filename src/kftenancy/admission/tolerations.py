"""Toleration semantics, exactly as Kubernetes evaluates them, on plain dicts.

`tolerates` mirrors `Toleration.ToleratesTaint` (k8s.io/api/core/v1): an empty effect
matches every effect, an empty key (operator Exists) matches every key, an empty operator
means Equal. `permitted_by` mirrors PodTolerationRestriction's whitelist check
(`isSuperset` in plugin/pkg/admission/podtolerationrestriction).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kftenancy.policy import Taint


def tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    """True when `toleration` tolerates `taint`.

    Operators Kubernetes may add later (e.g. Gt/Lt) are treated as tolerating whenever
    key and effect match: for an isolation check, unknown must count as dangerous.
    """
    effect = toleration.get("effect") or ""
    if effect and effect != taint.effect:
        return False
    key = toleration.get("key") or ""
    if key and key != taint.key:
        return False
    operator = toleration.get("operator") or ""
    if operator in ("", "Equal"):
        return (toleration.get("value") or "") == taint.value
    return True  # Exists, or an operator we do not know


def _superset(allowed: Mapping[str, Any], t: Mapping[str, Any]) -> bool:
    if dict(allowed) == dict(t):
        return True
    a_key, t_key = allowed.get("key") or "", t.get("key") or ""
    a_op = allowed.get("operator") or ""
    if t_key != a_key and (a_key != "" or a_op != "Exists"):
        return False
    a_effect = allowed.get("effect") or ""
    if (t.get("effect") or "") != a_effect and a_effect != "":
        return False
    if a_effect == "NoExecute" and allowed.get("tolerationSeconds") is not None:
        t_secs = t.get("tolerationSeconds")
        if t_secs is None or t_secs > allowed["tolerationSeconds"]:
            return False
    if a_op in ("", "Equal"):
        return (t.get("operator") or "") == "Equal" and (t.get("value") or "") == (
            allowed.get("value") or ""
        )
    return a_op == "Exists"


def permitted_by(whitelist: Sequence[Mapping[str, Any]], toleration: Mapping[str, Any]) -> bool:
    """True when a PodTolerationRestriction whitelist admits `toleration` (empty = all)."""
    return not whitelist or any(_superset(w, toleration) for w in whitelist)


def parse_annotation(value: str) -> list[dict[str, Any]] | None:
    """A toleration-list annotation as the plugin reads it; None when it is not valid."""
    if not value.strip():
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        return None
    return data


def describe(toleration: Mapping[str, Any]) -> str:
    """A toleration as a short, readable string for denial messages."""
    key = toleration.get("key") or "<any key>"
    op = toleration.get("operator") or "Equal"
    value = f"={toleration.get('value') or ''}" if op == "Equal" else f" {op}"
    effect = toleration.get("effect") or "<any effect>"
    return f"{key}{value}:{effect}"
