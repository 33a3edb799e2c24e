"""What the rules may know besides the request: a read-only view the shell fills from its
watch-backed caches (so the rules stay pure and tests pass plain dicts)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AdmissionContext:
    """controller_users: user names allowed to set the tenant label (kftenancy itself).
    namespace_labels: namespace name → its labels (absent = namespace unknown).
    service_accounts: (namespace, name) → the ServiceAccount's annotations."""

    controller_users: frozenset[str]
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    service_accounts: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)


class BadObject(ValueError):
    """The object in the request does not have the shape Kubernetes gives it."""


def string_map(obj: Mapping[str, Any], field_name: str) -> dict[str, str]:
    """metadata.labels / metadata.annotations as a dict (empty when absent)."""
    meta = obj.get("metadata") or {}
    value = meta.get(field_name) if isinstance(meta, dict) else None
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadObject(f"metadata.{field_name} must map strings to strings")
    return value


def object_list(parent: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """parent[key] as a list of objects (empty when absent); BadObject names the entry."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadObject(f"{where}.{key} is {type(value).__name__}, not a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadObject(f"{where}.{key}[{i}] is {type(item).__name__}, not an object")
    return value


def edit_copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy to mutate; `diff(original, copy)` is the patch."""
    return copy.deepcopy(dict(obj))


def ensure_map(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value
