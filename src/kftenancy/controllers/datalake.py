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
`publish` is the command the chart runs for a storage in its own pods (`kftenancy datalake
publish`): copy the file into a Secret the storage mounts and roll the storage's workload,
both only when the content changed, with no more RBAC than a patch of those two objects.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
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

# What `publish --restart` may roll: kind as kubectl spells it → (apiVersion, kind).
WORKLOAD_KINDS = {
    "deployment": ("apps/v1", "Deployment"),
    "statefulset": ("apps/v1", "StatefulSet"),
    "daemonset": ("apps/v1", "DaemonSet"),
}
# The API server refuses a Secret whose data is larger (core/v1 validation).
SECRET_MAX_BYTES = 1024 * 1024

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


# ---------------------------------------------------------------- publishing to the storage


def config_digest(content: bytes) -> str:
    """A short digest of the configuration (the storage's pod template annotation)."""
    return hashlib.sha256(content).hexdigest()[:16]


def parse_workload(ref: str) -> tuple[str, str, str]:
    """`deployment/NAME` (or `statefulset/`, `daemonset/`) → (apiVersion, kind, name)."""
    kind, sep, name = ref.partition("/")
    if not sep or not name or "/" in name or kind.lower() not in WORKLOAD_KINDS:
        raise KftenancyError(
            f"--restart {ref!r}: expected KIND/NAME with KIND one of "
            f"{', '.join(WORKLOAD_KINDS)} (e.g. deployment/seaweedfs-s3)"
        )
    api_version, kind_name = WORKLOAD_KINDS[kind.lower()]
    return api_version, kind_name, name


def secret_patch(key: str, content: bytes) -> dict[str, object]:
    """The merge patch that sets one key of a Secret (its other keys stay)."""
    if len(content) > SECRET_MAX_BYTES:
        raise KftenancyError(
            f"the data-lake configuration is {len(content):,} bytes; a Secret holds at most "
            f"{SECRET_MAX_BYTES:,}: share the file through a volume instead (docs/datalake.md)"
        )
    return {"data": {key: base64.b64encode(content).decode()}}


def restart_patch(content: bytes) -> dict[str, object]:
    """The merge patch that rolls a workload exactly when `content` changed: the pod
    template carries the content's digest (the same digest again changes nothing)."""
    annotations = {c.ANN_DATALAKE_CONFIG_DIGEST: config_digest(content)}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


async def publish(
    kube: Kube,
    content: bytes,
    *,
    namespace: str,
    secret: str | None = None,
    key: str = "config.json",
    restart: str | None = None,
) -> None:
    """Copy `content` into key `key` of the existing Secret `secret`, then roll the
    workload `restart` (KIND/NAME) onto it; both in `namespace`, both merge patches (the
    only verb the chart grants, on those two names). A missing object is an error that
    says how to make it: the publisher never creates a Secret."""
    steps: list[tuple[str, str, str, dict[str, object]]] = []
    if secret:
        steps.append(("v1", "Secret", secret, secret_patch(key, content)))
    if restart:
        api_version, kind, name = parse_workload(restart)
        steps.append((api_version, kind, name, restart_patch(content)))
    if not steps:
        raise KftenancyError("nothing to publish to: give --secret and/or --restart")
    for api_version, kind, name, patch in steps:
        try:
            await kube.patch_merge(api_version, kind, name, patch, namespace)
        except ApiError as err:
            if err.status.code != 404:
                raise
            hint = (
                f"create it once: kubectl -n {namespace} create secret generic {name}"
                if kind == "Secret"
                else "check the name (--restart KIND/NAME)"
            )
            raise KftenancyError(f"{kind} {namespace}/{name} does not exist: {hint}") from None
