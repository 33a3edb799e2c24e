"""One active replica: leader election on a coordination.k8s.io Lease.

`lease_decision` is the pure rule; `LeaderElector` does the I/O. Writes use the Lease's
resourceVersion as an optimistic lock, so two replicas can never both win a round.

A standby takes over only `lease_seconds` after the leader's last renewal. The leader
counts itself the leader only until `renew_deadline` (2/3 of the lease) after the start
of its last successful renewal (`holds()`, the write fence): a leader that cannot renew
(paused, cut off from the API server) stops writing at least a third of a lease before
anyone else may start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kftenancy.kube import ApiError, Kube
from kftenancy.reconcile import parse_time

log = logging.getLogger("kftenancy.leader")

Decision = Literal["acquire", "renew", "wait"]


def lease_decision(lease: Mapping[str, Any] | None, me: str, now: datetime) -> Decision:
    """renew if we hold it; acquire if nobody holds it or the holder's lease expired."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if holder == me:
        return "renew"
    if not holder:
        return "acquire"
    renewed = parse_time(str(spec.get("renewTime") or spec.get("acquireTime") or ""))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    if renewed is None or renewed + timedelta(seconds=duration) < now:
        return "acquire"
    return "wait"


def _micro(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_seconds: int = 15,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self._now = now
        self.leading = False
        self.renew_deadline = lease_seconds * 2 / 3
        self._valid_until = 0.0  # time.monotonic()

    def holds(self) -> bool:
        """Leading, and the last successful renewal is recent enough to write."""
        return self.leading and time.monotonic() < self._valid_until

    async def _try(self) -> bool:
        started = time.monotonic()
        lease = await self._kube.get("coordination.k8s.io/v1", "Lease", self.name, self.namespace)
        now = self._now()
        decision = lease_decision(lease, self.identity, now)
        if decision == "wait":
            return False
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro(now),
        }
        try:
            if lease is None:
                spec["acquireTime"] = _micro(now)
                await self._kube.create(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": spec,
                    }
                )
            else:
                if decision == "acquire":
                    spec["acquireTime"] = _micro(now)
                    transitions = int((lease.get("spec") or {}).get("leaseTransitions") or 0)
                    spec["leaseTransitions"] = transitions + 1
                await self._kube.patch_merge(
                    "coordination.k8s.io/v1",
                    "Lease",
                    self.name,
                    {
                        "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                        "spec": spec,
                    },
                    namespace=self.namespace,
                )
        except ApiError as err:
            if err.status.code == 409:
                return False  # someone else wrote first
            raise
        self._valid_until = started + self.renew_deadline
        return True

    async def acquire(self) -> None:
        """Block until this replica leads."""
        waiting_logged = False
        while True:
            try:
                if await self._try():
                    self.leading = True
                    log.info("leading (lease %s/%s)", self.namespace, self.name)
                    return
            except ApiError as err:
                log.warning("lease %s/%s: %s", self.namespace, self.name, err.status.message)
            if not waiting_logged:
                log.info("another replica leads; standing by")
                waiting_logged = True
            await asyncio.sleep(self.lease_seconds / 3)

    async def keep(self) -> None:
        """Renew until the renew deadline passed without a successful renewal; then
        return (leadership lost)."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if await asyncio.wait_for(self._try(), self.lease_seconds / 3):
                    continue
            except TimeoutError:
                log.warning("lease renewal timed out")
            except ApiError as err:
                log.warning("lease renewal failed: %s", err.status.message)
            except OSError as err:
                log.warning("lease renewal failed: %s", err)
            if not self.holds():
                self.leading = False
                log.error("lost the lease %s/%s", self.namespace, self.name)
                return

    async def release(self) -> None:
        """Hand the lease over at shutdown so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self._kube.get(
                "coordination.k8s.io/v1", "Lease", self.name, self.namespace
            )
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self._kube.patch_merge(
                    "coordination.k8s.io/v1",
                    "Lease",
                    self.name,
                    {"spec": {"holderIdentity": None}},
                    namespace=self.namespace,
                )
        except (ApiError, OSError) as err:
            log.warning("could not release the lease: %s", err)
