"""The controller's write log: one JSON line per API write and per reconcile started.

An audit trail of what this replica did and when (`--write-log PATH`): `t` (Unix time),
`who` (the replica's identity), `what` (`reconcile`, or the write's verb: `apply`,
`apply-status`, `create`, `patch`, `delete`), `kind`, `name`, `namespace`. Lines are
written as they happen (line-buffered, appended), so a killed replica loses nothing it
reported; the chaos tests read it to prove that two replicas never work at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any


class WriteLog:
    def __init__(self, path: str | Path, identity: str) -> None:
        self.identity = identity
        # open for the controller's lifetime
        self._file: IO[str] = Path(path).open("a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def record(self, what: str, **fields: Any) -> None:
        line = {"t": time.time(), "who": self.identity, "what": what, **fields}
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def write(self, verb: str, kind: str, name: str, namespace: str | None) -> None:
        self.record(verb, kind=kind, name=name, namespace=namespace)

    def close(self) -> None:
        self._file.close()


def read_write_log(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a write log (a line cut short by a kill is dropped)."""
    out: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
