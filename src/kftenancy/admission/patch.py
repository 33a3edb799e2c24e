"""JSON Patch (RFC 6902) between two plain JSON values, with RFC 6901 pointer escaping.

The admission rules compute the object they want; `diff` turns "before → after" into the
operations the API server applies. Lists that only grew at the end become appends, so
the patch does not depend on indexes of entries other webhooks may have added; any other
list change replaces the list.
"""

from __future__ import annotations

from typing import Any

Patch = list[dict[str, Any]]


def escape(token: str) -> str:
    """One JSON Pointer reference token: `~` → `~0`, then `/` → `~1` (RFC 6901 §3)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """A JSON Pointer from unescaped tokens: pointer("metadata", "annotations", "a/b")."""
    return "".join("/" + escape(str(t)) for t in tokens)


def diff(before: Any, after: Any, path: str = "") -> Patch:
    """Operations that turn `before` into `after` (both plain JSON values)."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        ops: Patch = []
        for key in before:
            if key not in after:
                ops.append({"op": "remove", "path": path + "/" + escape(key)})
        for key, value in after.items():
            sub = path + "/" + escape(key)
            if key in before:
                ops.extend(diff(before[key], value, sub))
            else:
                ops.append({"op": "add", "path": sub, "value": value})
        return ops
    if (
        isinstance(before, list)
        and isinstance(after, list)
        and len(after) > len(before)
        and after[: len(before)] == before
    ):
        return [{"op": "add", "path": path + "/-", "value": v} for v in after[len(before) :]]
    if isinstance(before, list) and isinstance(after, list) and len(after) == len(before):
        # Same length: patch the entries in place (e.g. env appended inside one container).
        ops = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            ops.extend(diff(b, a, f"{path}/{i}"))
        return ops
    return [{"op": "replace", "path": path or "", "value": after}]
