"""One async Kubernetes client for every kftenancy component.

Everything goes in and out as plain dicts (Kubernetes manifests), so the pure core never
sees a client type. Writes are server-side apply with the one field manager `kftenancy`
and `force=True`: we take back the fields we own, and never read-modify-write. Deletes are
by name, of objects the caller found through our ownership labels.

Every write is counted (`Kube.writes`), which is how tests prove that an unchanged resync
writes nothing and how `/metrics` reports API writes.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core import resource as lkres
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericGlobalStatus,
    GenericNamespacedResource,
    GenericNamespacedStatus,
    create_api_info,
)
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.types import PatchType

from kftenancy import constants as c
from kftenancy.errors import KftenancyError

__all__ = ["ApiError", "Kube", "UnknownKind", "WriteCounter", "owned_selector"]

Obj = dict[str, Any]

# The CRD cache is refreshed at most this often when an unknown kind is asked for.
_CRD_REFRESH_SECONDS = 5.0


class UnknownKind(KftenancyError):
    """The API server does not serve this kind (usually: its CRD is not installed)."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(
            f"the API server does not serve {kind} ({api_version}): install its CRD, "
            "or turn off the policy feature that renders it"
        )
        self.api_version = api_version
        self.kind = kind


class Fenced(KftenancyError):
    """A write refused before it was sent: this replica may not write (not the leader)."""


@dataclass
class WriteCounter:
    """Counts mutating API requests by verb and kind; `hook` sees each one (for metrics),
    `trail` also its name and namespace (the controller's write log)."""

    by_verb_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    hook: Callable[[str, str], None] | None = None
    trail: Callable[[str, str, str, str | None], None] | None = None

    def add(self, verb: str, kind: str, name: str = "", namespace: str | None = None) -> None:
        self.by_verb_kind[(verb, kind)] += 1
        if self.hook is not None:
            self.hook(verb, kind)
        if self.trail is not None:
            self.trail(verb, kind, name, namespace)

    @property
    def total(self) -> int:
        return sum(self.by_verb_kind.values())

    def snapshot(self) -> Counter[tuple[str, str]]:
        return Counter(self.by_verb_kind)


@dataclass(frozen=True)
class _Kind:
    resource: type[Any]
    status: type[Any]
    namespaced: bool


def owned_selector(tenant: str | None = None) -> dict[str, str]:
    """The label selector of objects kftenancy created (optionally for one tenant)."""
    sel = {c.LABEL_MANAGED_BY: c.MANAGED_BY}
    if tenant is not None:
        sel[c.LABEL_TENANT] = tenant
    return sel


def _split(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _generic(group: str, version: str, kind: str, plural: str, namespaced: bool) -> _Kind:
    """A lightkube resource class for any kind, not put in lightkube's global registry.

    Generic classes decode to plain dicts; keeping them private means other code in the
    same process that uses lightkube's typed models is unaffected.
    """
    info = create_api_info(group, version, kind, plural)
    status_info = lkres.ApiInfo(
        resource=info.resource,
        parent=info.resource,
        plural=plural,
        verbs=["get", "patch", "put"],
        action="status",
    )
    status_base = GenericNamespacedStatus if namespaced else GenericGlobalStatus
    status = type(f"{kind}Status", (status_base,), {"_api_info": status_info})
    base = GenericNamespacedResource if namespaced else GenericGlobalResource
    resource = type(kind, (base,), {"_api_info": info, "Status": status})
    return _Kind(resource=resource, status=status, namespaced=namespaced)


class Kube:
    """The async API client wrapper. Create one per process and pass it down."""

    def __init__(
        self, client: AsyncClient, *, writes: WriteCounter | None = None, max_inflight: int = 16
    ) -> None:
        self._client: Any = _Throttled(client, max_inflight)
        self.writes = writes if writes is not None else WriteCounter()
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._crds: dict[tuple[str, str], tuple[str, bool, tuple[str, ...]]] = {}
        self._crds_loaded_at = 0.0
        self._crd_lock = asyncio.Lock()

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, *, context: str | None = None, timeout: float = 30.0
    ) -> Kube:
        """A client from a kubeconfig file, or (no path) in-cluster/KUBECONFIG/~/.kube/config."""
        config = KubeConfig.from_file(path).get(context) if path else None
        return cls(AsyncClient(config=config, timeout=httpx2.Timeout(timeout), lazy=False))

    @property
    def client(self) -> AsyncClient:
        client: AsyncClient = self._client.inner
        return client

    @property
    def fence(self) -> Callable[[], bool] | None:
        """While set, every write first asks it (and once more just before it is sent,
        after waiting for a request slot) and raises `Fenced` when it says no: a leader
        whose Lease may have run out stops writing at once."""
        fence: Callable[[], bool] | None = self._client.fence
        return fence

    @fence.setter
    def fence(self, fence: Callable[[], bool] | None) -> None:
        self._client.fence = fence

    async def close(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------ kinds

    async def _load_crds(self) -> None:
        crds: dict[tuple[str, str], tuple[str, bool, tuple[str, ...]]] = {}
        for crd in await self._client.list_all(CustomResourceDefinition):
            spec = crd.spec
            versions = tuple(v.name for v in spec.versions if v.served)
            crds[(spec.group, spec.names.kind)] = (
                spec.names.plural,
                spec.scope == "Namespaced",
                versions,
            )
        self._crds = crds
        self._crds_loaded_at = time.monotonic()

    async def kind(self, api_version: str, kind: str) -> _Kind:
        """The resource class for apiVersion/kind; raises UnknownKind if not served."""
        hit = self._kinds.get((api_version, kind))
        if hit is not None:
            return hit
        group, version = _split(api_version)
        try:
            builtin = resource_registry.load(api_version, kind)
        except Exception:
            builtin = None
        if builtin is not None and not issubclass(
            builtin, (GenericGlobalResource, GenericNamespacedResource)
        ):
            plural = builtin._api_info.plural
            namespaced = issubclass(builtin, lkres.NamespacedResource)
        else:
            async with self._crd_lock:
                info = self._crds.get((group, kind))
                if (info is None or version not in info[2]) and (
                    time.monotonic() - self._crds_loaded_at > _CRD_REFRESH_SECONDS
                ):
                    await self._load_crds()
                    info = self._crds.get((group, kind))
            if info is None or version not in info[2]:
                raise UnknownKind(api_version, kind)
            plural, namespaced, _ = info
        made = _generic(group, version, kind, plural, namespaced)
        self._kinds[(api_version, kind)] = made
        return made

    # ------------------------------------------------------------------ reads

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        """The object, or None when it (or its kind) does not exist."""
        try:
            k = await self.kind(api_version, kind)
        except UnknownKind:
            return None
        try:
            got = await self._client.get(
                k.resource, name, **({"namespace": namespace} if k.namespaced else {})
            )
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return _plain(got)

    async def list(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        """Objects of a kind (all namespaces unless given); [] when the kind is not served."""
        try:
            k = await self.kind(api_version, kind)
        except UnknownKind:
            return []
        kwargs: dict[str, Any] = {"labels": dict(labels) if labels else None}
        if k.namespaced:
            kwargs["namespace"] = namespace if namespace is not None else "*"
        out = []
        try:
            for item in await self._client.list_all(k.resource, **kwargs):
                obj = _plain(item)
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                out.append(obj)
        except ApiError as err:
            if err.status.code == 404:
                return []
            raise
        return out

    async def list_owned(
        self, kinds: Iterable[tuple[str, str]], *, tenant: str | None = None
    ) -> builtins.list[Obj]:
        """Every object of these kinds that carries our ownership labels (for one tenant)."""
        selector = owned_selector(tenant)
        found = await asyncio.gather(
            *(self.list(av, kind, labels=selector) for av, kind in dict.fromkeys(kinds))
        )
        return [obj for objs in found for obj in objs]

    async def watch(
        self, api_version: str, kind: str, *, labels: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(event type, object) for every change of a kind, all namespaces, from now on
        (the first events are ADDED for what exists). Reconnects on its own; raises
        UnknownKind if the kind is not served, ApiError on other failures."""
        k = await self.kind(api_version, kind)
        kwargs: dict[str, Any] = {"labels": dict(labels) if labels else None, "server_timeout": 300}
        if k.namespaced:
            kwargs["namespace"] = "*"
        async for event_type, item in self._client.inner.watch(k.resource, **kwargs):
            yield str(event_type), _plain(item)

    # ------------------------------------------------------------------ writes

    async def apply(self, obj: Obj, *, force: bool = True, dry_run: bool = False) -> Obj:
        """Server-side apply of a plain manifest with field manager `kftenancy`."""
        k = await self.kind(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        kwargs: dict[str, Any] = {}
        if k.namespaced:
            kwargs["namespace"] = meta["namespace"]
        self._client.check_fence()
        if not dry_run:
            self.writes.add("apply", obj["kind"], meta["name"], meta.get("namespace"))
        got = await self._client.patch(
            k.resource,
            meta["name"],
            obj,
            patch_type=PatchType.APPLY,
            field_manager=c.FIELD_MANAGER,
            force=force,
            dry_run=dry_run,
            **kwargs,
        )
        return _plain(got)

    async def apply_as(self, obj: Obj, field_manager: str) -> Obj:
        """Server-side apply under another field manager: the Profile finalizer
        (c.FINALIZER_FIELD_MANAGER), and tools and tests that stand in for other
        controllers. Everything else kftenancy writes goes through `apply`."""
        k = await self.kind(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        kwargs: dict[str, Any] = {"namespace": meta["namespace"]} if k.namespaced else {}
        self._client.check_fence()
        self.writes.add("apply", obj["kind"], meta["name"], meta.get("namespace"))
        got = await self._client.patch(
            k.resource,
            meta["name"],
            obj,
            patch_type=PatchType.APPLY,
            field_manager=field_manager,
            force=True,
            **kwargs,
        )
        return _plain(got)

    async def apply_status(self, obj: Obj) -> Obj:
        """Server-side apply to the status subresource (apiVersion, kind, name, status)."""
        k = await self.kind(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        kwargs: dict[str, Any] = {}
        if k.namespaced:
            kwargs["namespace"] = meta["namespace"]
        self._client.check_fence()
        self.writes.add("apply-status", obj["kind"], meta["name"], meta.get("namespace"))
        got = await self._client.patch(
            k.status,
            meta["name"],
            obj,
            patch_type=PatchType.APPLY,
            field_manager=c.FIELD_MANAGER,
            force=True,
            **kwargs,
        )
        return _plain(got)

    async def create(self, obj: Obj) -> Obj:
        """Create (POST); raises ApiError 409 if the object exists. Never overwrites."""
        k = await self.kind(obj["apiVersion"], obj["kind"])
        kwargs: dict[str, Any] = {}
        if k.namespaced:
            kwargs["namespace"] = obj["metadata"]["namespace"]
        meta = obj["metadata"]
        self._client.check_fence()
        self.writes.add("create", obj["kind"], meta.get("name", ""), meta.get("namespace"))
        got = await self._client.create(k.resource(obj), field_manager=c.FIELD_MANAGER, **kwargs)
        return _plain(got)

    async def patch_merge(
        self, api_version: str, kind: str, name: str, patch: Obj, namespace: str | None = None
    ) -> Obj:
        """A JSON merge patch, for the one thing apply cannot express: dropping a finalizer
        another manager added, or fields of a list we share."""
        k = await self.kind(api_version, kind)
        self._client.check_fence()
        self.writes.add("patch", kind, name, namespace)
        got = await self._client.patch(
            k.resource,
            name,
            patch,
            patch_type=PatchType.MERGE,
            **({"namespace": namespace} if k.namespaced else {}),
        )
        return _plain(got)

    async def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """Delete by name; False if it was already gone."""
        try:
            k = await self.kind(api_version, kind)
        except UnknownKind:
            return False
        self._client.check_fence()
        self.writes.add("delete", kind, name, namespace)
        try:
            await self._client.delete(
                k.resource, name, **({"namespace": namespace} if k.namespaced else {})
            )
        except ApiError as err:
            if err.status.code == 404:
                return False
            raise
        return True

    async def event(
        self,
        regarding: Obj,
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
        namespace: str = "default",
    ) -> None:
        """A core/v1 Event about an object (cluster-scoped objects: in `namespace`)."""
        meta = regarding.get("metadata", {})
        ns = meta.get("namespace") or namespace
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'kftenancy')}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": c.FIELD_MANAGER},
            "reportingComponent": c.FIELD_MANAGER,
            "reportingInstance": c.FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        k = await self.kind("v1", "Event")
        self._client.check_fence()
        self.writes.add("create", "Event", str(meta.get("name", "")), ns)
        await self._client.create(k.resource(event), namespace=ns)


class _Throttled:
    """Requests through lightkube, at most `limit` at a time: more would open (and later
    close) extra TLS connections beyond the keep-alive pool, which costs more than waiting."""

    def __init__(self, inner: AsyncClient, limit: int) -> None:
        self.inner = inner
        self._sem = asyncio.Semaphore(limit)
        self.fence: Callable[[], bool] | None = None

    def check_fence(self) -> None:
        if self.fence is not None and not self.fence():
            raise Fenced("write refused: this replica does not hold the leader Lease (any more)")

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        async with self._sem:
            return await self.inner.get(*args, **kwargs)

    async def patch(self, *args: Any, **kwargs: Any) -> Any:
        async with self._sem:
            self.check_fence()
            return await self.inner.patch(*args, **kwargs)

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        async with self._sem:
            self.check_fence()
            return await self.inner.create(*args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        async with self._sem:
            self.check_fence()
            return await self.inner.delete(*args, **kwargs)

    async def list_all(self, *args: Any, **kwargs: Any) -> list[Any]:
        async with self._sem:
            return [item async for item in self.inner.list(*args, **kwargs)]

    async def close(self) -> None:
        await self.inner.close()


def _plain(obj: Any) -> Obj:
    if isinstance(obj, dict):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"unexpected API response {type(obj).__name__}")
    result: Obj = to_dict()
    return result
