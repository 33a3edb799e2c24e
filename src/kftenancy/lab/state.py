"""The state of the background cluster `kftenancy lab up` starts: what `lab status`,
`lab env` and `lab down` read back (a JSON file in the state directory)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
LOCK_FILE = ".lock"


def default_state_dir() -> Path:
    """`$KFTENANCY_LAB_DIR`, else `$XDG_STATE_HOME/kftenancy/lab` (~/.local/state/...)."""
    if os.environ.get("KFTENANCY_LAB_DIR"):
        return Path(os.environ["KFTENANCY_LAB_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kftenancy" / "lab"


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    executable: str
    log_file: str


@dataclass(frozen=True)
class LabState:
    server: str
    issuer: str
    admin_kubeconfig: str
    ca_file: str
    workdir: str
    started_at: str
    startup_seconds: float
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    gpu_nodes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data: dict[str, Any] = json.loads(text)
        data["processes"] = {k: ProcessRecord(**v) for k, v in data["processes"].items()}
        return cls(**data)

    def env(self) -> dict[str, str]:
        """Environment for kubectl and kftenancy's commands against this cluster."""
        return {
            "KUBECONFIG": self.admin_kubeconfig,
            "KFTENANCY_KUBECONFIG": self.admin_kubeconfig,
            "KFTENANCY_LAB_SERVER": self.server,
            "KFTENANCY_LAB_ISSUER": self.issuer,
            "KFTENANCY_LAB_CA_FILE": self.ca_file,
        }


def read_state(state_dir: Path) -> LabState | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    return LabState.from_json(path.read_text())


def write_state(state_dir: Path, state: LabState) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(path)
    return path


@contextlib.contextmanager
def state_lock(state_dir: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the state directory exclusively (`lab up`/`down`). Two `lab up` at once on
    one directory would write the cluster's certificates over each other: the API server
    reloads its serving certificate from the shared file while the first command's
    kubeconfig still trusts its own CA, and its first request fails certificate
    verification. The second command waits here (`on_wait` is called once if it has to)
    and then finds the first one's cluster running."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
