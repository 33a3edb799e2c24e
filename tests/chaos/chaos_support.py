"""Helpers shared by the chaos scenarios: the controller as a real process (so it can be
SIGKILLed), onboarding bursts, and the after-the-storm checks (every tenant Ready, each
owned object exactly once, nothing orphaned, nothing without our labels changed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx2

from kftenancy import constants as c
from kftenancy.controllers.tenant import KNOWN_KINDS, PROFILE_API_VERSION
from kftenancy.controllers.writelog import read_write_log
from kftenancy.kube import ApiError, Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.onboarding import ensure_profile
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.profile import parse_profile
from kftenancy.reconcile import key_of
from kftenancy.render import tenant_objects

T = TypeVar("T")
POLICY_API = f"{c.API_GROUP}/{c.API_VERSION}"
POLICY_SPEC: dict[str, Any] = {"platform": {"kubeflowInstalled": False}}
# What is compared before/after for "nothing outside our labels changed": every kind the
# controller writes, plus the ones it must never touch.
SNAPSHOT_KINDS: tuple[tuple[str, str], ...] = (
    *KNOWN_KINDS,
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
)
TRANSIENT = (ApiError, OSError, httpx2.HTTPError)
SEED_ENV = "KFTENANCY_CHAOS_SEED"


class ChaosRandom(random.Random):
    """A seeded RNG that remembers its seed (for replay messages); see the `chaos_rng`
    fixture in conftest.py."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.seed_value = seed

    def __repr__(self) -> str:
        return f"ChaosRandom(seed={self.seed_value}; replay with {SEED_ENV}={self.seed_value})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T | None]], within: float, what: str, interval: float = 0.5
) -> T:
    """Poll `check` until it returns something truthy; API hiccups count as not yet."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            got = await check()
            if got:
                return got
            last = got
        except (AssertionError, *TRANSIENT) as err:
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within:.0f}s: {what} (last: {last!r})")
        await asyncio.sleep(interval)


async def retrying(call: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
    """`call()` again while the API server is away (restarts under test)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# ----------------------------------------------------------------------------- controller


@dataclass
class ControllerProcess:
    """`kftenancy run controller` as its own process, on `lab`, following `policy_name`."""

    lab: LocalCluster
    policy_name: str
    name: str
    leader_election: bool = False
    lease_namespace: str | None = None
    workers: int = 16
    write_log: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.lab.workdir / f"controller-{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def identity(self) -> str:
        """The replica's Lease identity (ControllerSettings.identity: host-pid)."""
        return f"{socket.gethostname()}-{self.pid}"

    def start(self) -> ControllerProcess:
        self.port = free_port()
        env = {
            **os.environ,
            "KFTENANCY_KUBECONFIG": str(self.lab.admin_kubeconfig),
            "KFTENANCY_POLICY_NAME": self.policy_name,
            "KFTENANCY_METRICS_PORT": str(self.port),
            "KFTENANCY_LEADER_ELECTION": str(self.leader_election).lower(),
            "KFTENANCY_WORKERS": str(self.workers),
            "KFTENANCY_RESYNC_SECONDS": "3600",
            # The rendered webhook configuration points at an in-cluster Service the lab
            # does not run; registering it would fail every namespace create.
            "KFTENANCY_APPLY_PLATFORM": "false",
            "KFTENANCY_LOG_FORMAT": "text",
        }
        if self.lease_namespace:
            env["KFTENANCY_LEASE_NAMESPACE"] = self.lease_namespace
        if self.write_log is not None:
            env["KFTENANCY_WRITE_LOG"] = str(self.write_log)
        exe = Path(sys.executable).parent / "kftenancy"
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                [str(exe), "run", "controller"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    async def ready(self) -> bool:
        """/readyz answers 200 (watching, and leading when leader election is on)."""
        if not self.alive():
            raise AssertionError(f"controller {self.name} exited: {self.tail()}")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"https://127.0.0.1:{self.port}/readyz",
                    ssl=ctx,
                    timeout=aiohttp.ClientTimeout(total=2),
                ) as resp,
            ):
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_ready(self, within: float = 90.0) -> None:
        await eventually(self.ready, within, f"controller {self.name} ready", interval=0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL after 30 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def writes(self) -> list[dict[str, Any]]:
        """Its write log, API writes only (no `reconcile` lines, no Lease renewals)."""
        if self.write_log is None or not self.write_log.exists():
            return []
        return [
            e
            for e in read_write_log(self.write_log)
            if e["what"] != "reconcile" and e.get("kind") != "Lease"
        ]


async def wait_writes(ctl: ControllerProcess, at_least: int, within: float) -> int:
    """Wait until the controller's write log shows `at_least` API writes (or `within`
    seconds passed, or it exited); returns how many it shows."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and ctl.alive():
        n = len(ctl.writes())
        if n >= at_least:
            return n
        await asyncio.sleep(0.05)
    return len(ctl.writes())


# ----------------------------------------------------------------------------- setup


async def install_policy(
    kube: Kube, name: str, spec: dict[str, Any] | None = None
) -> TenancyPolicySpec:
    obj = {
        "apiVersion": POLICY_API,
        "kind": c.POLICY_KIND,
        "metadata": {"name": name},
        "spec": spec if spec is not None else POLICY_SPEC,
    }
    await kube.apply(obj)
    return load_policy(obj)


async def onboard(kube: Kube, policy: TenancyPolicySpec, users: Iterable[str]) -> list[str]:
    """Onboard users at once (the real onboarding function, as the gateway calls it);
    returns the Profile names."""

    async def one(user: str) -> str:
        result = await retrying(lambda: ensure_profile(kube, policy, user, source="gateway"))
        return str(result.name)

    return list(await asyncio.gather(*(one(u) for u in users)))


async def bystanders(kube: Kube, prefix: str = "bystander", count: int = 3) -> list[str]:
    """Namespaces and objects that are not ours (no managed-by label), some looking like
    ours, for the before/after comparison; returns the namespaces."""
    names = [f"{prefix}-{i}" for i in range(count)]
    for ns in names:
        await kube.create(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"team": "other"}},
            }
        )
        await kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": ns},
                "data": {"a": "1"},
            }
        )
        await kube.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default-editor", "namespace": ns},
            }
        )
        await kube.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {
                    "name": "namespaceAdmin",
                    "namespace": ns,
                    "labels": {c.LABEL_TENANT: ns},
                },
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "edit",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "someone@example.com",
                    }
                ],
            }
        )
        await kube.create(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny-all", "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            }
        )
    return names


async def snapshot_unowned(kube: Kube) -> dict[tuple[str, ...], tuple[str, str]]:
    """(kind, namespace, name) → (uid, resourceVersion) of every object of SNAPSHOT_KINDS
    that does not carry our managed-by label."""
    out: dict[tuple[str, ...], tuple[str, str]] = {}
    for api_version, kind in SNAPSHOT_KINDS:
        for obj in await retrying(lambda av=api_version, k=kind: kube.list(av, k)):
            meta = obj["metadata"]
            if (meta.get("labels") or {}).get(c.LABEL_MANAGED_BY) == c.MANAGED_BY:
                continue
            key = (kind, meta.get("namespace") or "", meta["name"])
            out[key] = (meta["uid"], meta["resourceVersion"])
    return out


def snapshot_diff(
    before: dict[tuple[str, ...], tuple[str, str]], after: dict[tuple[str, ...], tuple[str, str]]
) -> list[str]:
    changed = [f"changed: {k}" for k in before if k in after and before[k] != after[k]]
    gone = [f"deleted: {k}" for k in before if k not in after]
    new = [f"appeared without our labels: {k}" for k in after if k not in before]
    return changed + gone + new


# ----------------------------------------------------------------------------- checks


def is_ready(profile: dict[str, Any]) -> bool:
    conds = (profile.get("status") or {}).get("conditions") or []
    return any(x.get("type") == "Ready" and x.get("status") == "True" for x in conds)


async def profiles(kube: Kube) -> dict[str, dict[str, Any]]:
    items = await kube.list(PROFILE_API_VERSION, c.PROFILE_KIND)
    return {p["metadata"]["name"]: p for p in items}


async def wait_all_ready(kube: Kube, names: Iterable[str], within: float) -> None:
    wanted = set(names)

    async def check() -> bool:
        have = await profiles(kube)
        missing = sorted(n for n in wanted if n not in have or not is_ready(have[n]))
        if missing:
            raise AssertionError(f"{len(missing)} of {len(wanted)} not Ready, e.g. {missing[:3]}")
        return True

    await eventually(check, within, "every tenant Ready", interval=1.0)


async def owned_problems(kube: Kube, policy: TenancyPolicySpec) -> list[str]:
    """Each tenant's objects are exactly the renderer's (each once); nothing with our
    labels belongs to no Profile."""
    have = await retrying(lambda: profiles(kube))
    owned = await retrying(lambda: kube.list_owned(KNOWN_KINDS))
    by_tenant: dict[str, list[tuple[str, ...]]] = {}
    problems: list[str] = []
    for obj in owned:
        tenant = obj["metadata"]["labels"].get(c.LABEL_TENANT)
        if tenant not in have:
            problems.append(f"orphaned (no Profile {tenant!r}): {key_of(obj)}")
            continue
        by_tenant.setdefault(tenant, []).append(key_of(obj))
    for name, profile in have.items():
        if not is_ready(profile):
            continue  # checked separately (a Profile that must not become Ready)
        desired = {key_of(o) for o in tenant_objects(policy, parse_profile(profile))}
        keys = by_tenant.get(name, [])
        dupes = [k for k, n in Counter(keys).items() if n > 1]
        if dupes:
            problems.append(f"{name}: more than once: {dupes}")
        if set(keys) - desired:
            problems.append(f"{name}: not rendered (orphaned): {sorted(set(keys) - desired)}")
        if desired - set(keys):
            problems.append(f"{name}: missing: {sorted(desired - set(keys))}")
    return problems
