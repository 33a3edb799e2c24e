"""Keeps the data lake's storage configuration in step with the tenants.

Level-based like the tenant reconciler: whenever something may have changed (a tenant
reconciled or offboarded, the policy changed, a resync), `poke()`; a single loop then
lists the Profiles, renders the whole storage configuration for the active ones (not
being deleted) and hands it to an applier, only when the bytes differ from what was last
applied. An offboarded tenant's role disappears from the configuration (its data stays);
onboarding it again brings the same role, and so the same data, back.

- `provider: s3compatible` (SeaweedFS): the configuration is SeaweedFS's IAM file
  (`render.seaweedfs`); the applier writes it where SeaweedFS reads it and restarts it.
- `provider: aws`: the configuration is the list of every tenant's `iam_documents`
  (role name, ARN, trust and permission policy); the applier is a hook of the platform's
  (a script that creates/updates/deletes the IAM roles, see docs/datalake.md).

`file_applier` is the hook the CLI offers: write the file atomically, then run a command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from kftenancy import constants as c
from kftenancy.controllers.tenant import PROFILE_API_VERSION
from kftenancy.errors import KftenancyError
from kftenancy.kube import ApiError, Kube
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.iam import iam_documents
from kftenancy.render.seaweedfs import config_bytes, seaweedfs_iam_config

log = logging.getLogger("kftenancy.controller")

Applier = Callable[[bytes], Awaitable[None]]


def storage_configuration(
    policy: TenancyPolicySpec, tenants: Iterable[str], *, signing_key: bytes | None
) -> bytes:
    """The whole storage configuration for `tenants` in the policy's provider dialect."""
    names = sorted(set(tenants))
    if policy.data_lake.provider == "s3compatible":
        if signing_key is None:
            raise KftenancyError("dataLake.provider s3compatible needs an STS signing key")
        return config_bytes(seaweedfs_iam_config(policy, names, signing_key=signing_key))
    bundle = {"roles": [iam_documents(policy, n) for n in names]}
    return (json.dumps(bundle, indent=1, sort_keys=True) + "\n").encode()


def active_tenants(profiles: Iterable[dict[str, object]]) -> list[str]:
    """Names of the Profiles that are not being deleted (offboarded ones lose access)."""
    names = []
    for p in profiles:
        meta = p.get("metadata")
        if isinstance(meta, dict) and meta.get("name") and not meta.get("deletionTimestamp"):
            names.append(str(meta["name"]))
    return names


def file_applier(path: Path, command: str | None = None) -> Applier:
    """Write the configuration to `path` (atomically, mode 0600), then run `command` (a
    shell-free argv string, e.g. a restart) if one is given; a failing command raises."""

    async def apply(content: bytes) -> None:
        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

        await asyncio.to_thread(write)
        if command:
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(command),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise KftenancyError(
                    f"data-lake reload command {command!r} exited with {proc.returncode}: "
                    f"{out.decode(errors='replace')[-500:]}"
                )

    return apply


class StorageSync:
    """One loop that applies the storage configuration whenever it changed."""

    def __init__(
        self,
        kube: Kube,
        policy: Callable[[], TenancyPolicySpec],
        apply: Applier,
        *,
        signing_key: bytes | None = None,
        debounce_seconds: float = 0.3,
        retry_seconds: float = 5.0,
    ) -> None:
        self.kube = kube
        self._policy = policy
        self._apply = apply
        self._signing_key = signing_key
        self.debounce_seconds = debounce_seconds
        self.retry_seconds = retry_seconds
        self._wake = asyncio.Event()
        self.applied: bytes | None = None
        self.tenants: list[str] = []
        self.applies = 0
        self.error: str | None = None
        self.synced = asyncio.Condition()

    def poke(self) -> None:
        self._wake.set()

    async def sync_once(self) -> bool:
        """Render from the current Profiles and apply if changed; returns whether it applied."""
        policy = self._policy()
        if not policy.data_lake.enabled:
            return False
        profiles = await self.kube.list(PROFILE_API_VERSION, c.PROFILE_KIND)
        tenants = active_tenants(profiles)
        content = storage_configuration(policy, tenants, signing_key=self._signing_key)
        if content == self.applied:
            return False
        await self._apply(content)
        self.applied, self.tenants = content, sorted(set(tenants))
        self.applies += 1
        log.info("data-lake storage configuration applied", extra={"tenants": len(tenants)})
        return True

    async def run(self) -> None:
        self.poke()  # the first pass at start
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce_seconds)  # let a burst of changes settle
            self._wake.clear()
            try:
                await self.sync_once()
                self.error = None
            except (ApiError, KftenancyError, OSError) as err:
                self.error = str(err)
                log.error("data-lake storage configuration not applied, will retry: %s", err)
                asyncio.get_running_loop().call_later(self.retry_seconds, self.poke)
            async with self.synced:
                self.synced.notify_all()
