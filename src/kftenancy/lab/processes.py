"""Starting and stopping the control-plane processes, each with its own log file.

Only processes started here are ever signalled, by pid (and, for pids read back from a
state file, only after checking that the pid still runs the same executable).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL it when the
    # thread that started it dies, so a killed test run leaves no orphans behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One started process and its log file."""

    name: str
    argv: list[str]
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None
    pid: int = 0

    def start(self, *, die_with_parent: bool, env: dict[str, str] | None = None) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal does not reach it
                preexec_fn=_die_with_parent if die_with_parent else None,
                env=env,
            )
        self.pid = self.popen.pid

    def exit_code(self) -> int | None:
        """None while it runs (or before it is started); its exit status once it exited."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; waits for it to exit."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def pid_runs(pid: int, executable: str) -> bool:
    """True if `pid` is alive and runs `executable` (guards against reused pids)."""
    if pid <= 0:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return os.path.realpath(exe) == os.path.realpath(executable)


def stop_pid(pid: int, executable: str, timeout: float = 10.0) -> None:
    """Stop a process that this program did not start itself but recorded (lab state)."""
    if not pid_runs(pid, executable):
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_runs(pid, executable), timeout):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_runs(pid, executable), 5.0)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0
