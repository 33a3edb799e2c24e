"""User-facing error messages: what was wrong, the offending value, and what is allowed."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class KftenancyError(Exception):
    """An error a user can fix; its message is shown as is (no traceback)."""


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def describe_validation_error(err: ValidationError, source: str = "input") -> str:
    """One line per problem: `source: field.path: message (got VALUE)`."""
    lines = []
    for e in err.errors(include_url=False):
        value: Any = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {_location(tuple(e['loc']))}: {msg} (got {shown})")
    return "\n".join(lines)
