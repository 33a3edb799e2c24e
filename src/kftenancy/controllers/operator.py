"""The controller process: watches → work queue → tenant reconciles.

Plain watches (nothing kept per object) follow what grows with the tenants: Profiles,
namespaces (the adoption opt-in) and the objects we own. kopf watches the TenancyPolicy and
OpenShift Users (with its event and startup/login hooks only, so it never writes progress
annotations onto user-visible objects). A deduplicating work queue with per-key
backoff serialises work per tenant; `TenantReconciler` does the work. A slow resync
re-queues every tenant; a TenancyPolicy change re-applies the platform objects and
re-queues every tenant; OpenShift Users onboard and offboard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import kopf
import yaml
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.controllers.capacity import CapacityLoop
from kftenancy.controllers.datalake import Applier, StorageSync, file_applier
from kftenancy.controllers.leader import LeaderElector
from kftenancy.controllers.metrics import Metrics, serve
from kftenancy.controllers.queue import WorkQueue
from kftenancy.controllers.tenant import KNOWN_KINDS, PROFILE_API_VERSION, READY, TenantReconciler
from kftenancy.controllers.writelog import WriteLog
from kftenancy.errors import KftenancyError, describe_validation_error
from kftenancy.kube import ApiError, Kube, UnknownKind, WriteCounter
from kftenancy.policy import OnboardingSource, TenancyPolicySpec, load_policy
from kftenancy.reconcile import expired_namespaces, plan, written_by
from kftenancy.render import platform_objects

log = logging.getLogger("kftenancy.controller")
T = TypeVar("T")

POLICY_API_VERSION = f"{c.API_GROUP}/{c.API_VERSION}"


@dataclass(frozen=True)
class ControllerSettings:
    """Everything the controller can be told; logged once at start (no secrets in here)."""

    kubeconfig: str | None = None
    workers: int = 8
    resync_seconds: float = 300.0
    policy_name: str = c.DEFAULT_POLICY_NAME
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8080  # 0 = no probe/metrics server
    tls_cert: str | None = None
    tls_key: str | None = None
    leader_election: bool = True
    apply_platform: bool = True  # platform_objects at start and on policy change
    lease_name: str = "kftenancy-controller"
    lease_namespace: str | None = None  # default: policy.platform.namespace
    identity: str = f"{socket.gethostname()}-{os.getpid()}"
    event_namespace: str = "default"
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 300.0
    capacity_seconds: float = 5.0  # GPU headroom / tenant GPU status loop; 0 = off
    write_log: str | None = None  # a JSON line per API write and reconcile (writelog.py)
    # Data lake: where the storage configuration is written (SeaweedFS IAM file or the AWS
    # role bundle), the command run after each change, the STS signing key (s3compatible).
    datalake_config: str | None = None
    datalake_reload_command: str | None = None
    datalake_signing_key_file: str | None = None


def _login_from(kubeconfig: str) -> kopf.ConnectionInfo:
    path = Path(kubeconfig).expanduser()
    config = yaml.safe_load(path.read_text()) or {}

    def named(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise KftenancyError(f"{kubeconfig}: no {section[:-1]} named {name!r}")

    context = named("contexts", str(config.get("current-context")))
    cluster = named("clusters", str(context["cluster"]))
    user = named("users", str(context["user"]))

    def file(key: str, where: dict[str, Any]) -> str | None:
        value = where.get(key)
        return str(path.parent / value) if value and not os.path.isabs(value) else value

    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=file("certificate-authority", cluster),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=file("client-certificate", user),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file("client-key", user),
        private_key_data=user.get("client-key-data"),
        token=user.get("token"),
        default_namespace=context.get("namespace"),
    )


class Controller:
    def __init__(
        self,
        settings: ControllerSettings,
        *,
        kube: Kube | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy: TenancyPolicySpec | None = None,
        storage_applier: Applier | None = None,
        storage_signing_key: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.kube = kube or Kube.from_kubeconfig(settings.kubeconfig)
        self.kube.writes.hook = self.metrics.count_write
        self.write_log = (
            WriteLog(settings.write_log, settings.identity) if settings.write_log else None
        )
        if self.write_log is not None:
            self.kube.writes.trail = self.write_log.write
        self._now = now
        self.policy: TenancyPolicySpec = policy or TenancyPolicySpec()
        self.policy_error: str | None = None
        self._policy_rv: str | None = None
        self.queue = WorkQueue(
            base_delay=settings.retry_base_seconds, max_delay=settings.retry_max_seconds
        )
        self.reconciler = TenantReconciler(
            self.kube,
            lambda: self.policy,
            now=now,
            event_namespace=settings.event_namespace,
            policy_error=lambda: self.policy_error,
        )
        self.profiles: set[str] = set()
        self.capacity: CapacityLoop | None = None  # set by run() when the loop is on
        self.ready = asyncio.Event()  # set once kopf watches and workers run
        self.reconciled = 0  # reconciles finished (any result)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._elector: LeaderElector | None = None
        self.registry = self._build_registry()
        self.storage: StorageSync | None = None
        if storage_applier is None and settings.datalake_config:
            storage_applier = file_applier(
                Path(settings.datalake_config), settings.datalake_reload_command
            )
        if storage_signing_key is None and settings.datalake_signing_key_file:
            storage_signing_key = Path(settings.datalake_signing_key_file).read_bytes().strip()
        if storage_applier is not None:
            self.storage = StorageSync(
                self.kube, lambda: self.policy, storage_applier, signing_key=storage_signing_key
            )

    # ------------------------------------------------------------------ policy

    async def load_policy(self) -> None:
        obj = await self.kube.get(POLICY_API_VERSION, c.POLICY_KIND, self.settings.policy_name)
        if obj is None:
            log.warning(
                "no TenancyPolicy %r in the cluster: using the defaults", self.settings.policy_name
            )
            return
        await self.policy_changed(obj)

    async def policy_changed(self, obj: dict[str, Any]) -> bool:
        """Swap in a new valid policy (re-queue everything); keep the last good one if the
        new one is invalid (Event + log, never a crash)."""
        try:
            new = load_policy(obj)
        except ValidationError as err:
            msg = describe_validation_error(err, f"TenancyPolicy {self.settings.policy_name}")
            if self._policy_rv is None:
                self.policy_error = msg  # never had a valid one: reconcile nothing
                for name in self.profiles:
                    self.queue.add(name)
            log.error("invalid policy, keeping the last valid one: %s", msg)
            await self.reconciler.event(obj, reason="InvalidPolicy", message=msg, warning=True)
            return False
        if new == self.policy and self._policy_rv is not None:
            return False
        self._policy_rv = str(obj.get("metadata", {}).get("resourceVersion"))
        self.policy = new
        self.policy_error = None
        log.info("policy loaded", extra={"policy": new.model_dump(mode="json", by_alias=True)})
        for name in self.profiles:
            self.queue.add(name)
        if not self.settings.apply_platform:
            return True
        try:
            await self.apply_platform()
        except (ApiError, KftenancyError, OSError) as err:
            log.error("platform objects: %s", err)
        return True

    async def apply_platform(self) -> int:
        """Apply the platform-level objects (create or fix drift; no pruning)."""
        desired = list(platform_objects(self.policy))
        observed = [
            o
            for o in await asyncio.gather(
                *(
                    self.kube.get(
                        d["apiVersion"],
                        d["kind"],
                        d["metadata"]["name"],
                        d["metadata"].get("namespace"),
                    )
                    for d in desired
                )
            )
            if o is not None
        ]
        p = plan(desired, observed)
        failures = await self.reconciler.execute(
            type(p)(create=p.create, update=p.update)  # never prune platform objects here
        )
        for failure in failures:
            log.error("platform object: %s", failure)
        return len(p.create) + len(p.update)

    # ------------------------------------------------------------------ work

    async def handle(self, name: str) -> bool:
        if self._elector is not None and not self._elector.holds():
            return False  # not (or no longer) the leader: never start work
        started = time.perf_counter()
        if self.write_log is not None:
            self.write_log.record("reconcile", name=name)
        try:
            result = await self.reconciler.reconcile(name)
        except (ApiError, KftenancyError, OSError) as err:
            log.warning("tenant %s: reconcile failed, will retry: %s", name, err)
            self.metrics.reconciles.labels(result="Error").inc()
            return False
        except Exception:
            log.exception("tenant %s: unexpected error, will retry", name)
            self.metrics.reconciles.labels(result="Error").inc()
            return False
        finally:
            self.reconciled += 1
            if self.storage is not None:
                self.storage.poke()  # level-based: it skips unchanged configurations
            self.metrics.duration.observe(time.perf_counter() - started)
            self.metrics.queue_depth.set(len(self.queue))
        self.metrics.reconciles.labels(result=result.reason).inc()
        if result.reason in ("Gone", "Offboarded"):
            self.metrics.tenant_state(name, None, result.reason)
            if result.reason == "Gone":
                self.profiles.discard(name)  # its deletion was missed (watch restarted)
        else:
            self.metrics.tenant_state(name, result.reason == READY, result.reason)
        if result.ok and result.plan is not None and result.plan.writes:
            log.info("tenant %s reconciled", name, extra={"changes": result.plan.summary()})
        return result.ok

    async def resync(self) -> None:
        """Re-queue every tenant and delete namespaces whose retention ended."""
        for name in list(self.profiles):
            self.queue.add(name)
        try:
            namespaces = await self.kube.list(
                "v1", "Namespace", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY}
            )
            for name in expired_namespaces(namespaces, self.profiles, now=self._now()):
                log.info("retention over: deleting offboarded namespace %s", name)
                await self.kube.delete("v1", "Namespace", name)
        except (ApiError, OSError) as err:
            log.warning("retention sweep failed: %s", err)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            await self.resync()

    async def on_user(self, event_type: str | None, name: str) -> None:
        from kftenancy.onboarding import OnboardingError, ensure_profile, offboard

        if OnboardingSource.OPENSHIFT_USERS not in self.policy.identity.onboarding:
            return
        try:
            if event_type == "DELETED":
                await offboard(self.kube, self.policy, name, now=self._now)
            else:
                await ensure_profile(self.kube, self.policy, name, source="openshiftUsers")
        except (OnboardingError, ApiError, KftenancyError) as err:
            log.warning("OpenShift user %s: %s", name, err)

    # ------------------------------------------------------------------ kopf wiring

    def _build_registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        settings = self.settings

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            if settings.kubeconfig:
                return _login_from(settings.kubeconfig)
            return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

        @kopf.on.startup(registry=registry)
        def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.posting.enabled = False  # our own Events, only on changes
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            settings.networking.request_timeout = 60

        # kopf runs in its own thread and event loop (see `run`); handlers only hand
        # events over to the controller's loop. Profiles and namespaces, which grow with
        # the tenants, are watched without kopf (see `_watch`).
        @kopf.on.event(c.API_GROUP, c.API_VERSION, c.POLICY_PLURAL, registry=registry)
        async def policy_event(event: kopf.RawEvent, body: kopf.Body, name: str, **_: Any) -> None:
            if name != settings.policy_name or event.get("type") == "DELETED":
                return
            await self._on_main(self.policy_changed(dict(body)))

        @kopf.on.event("user.openshift.io", "v1", "users", registry=registry)
        async def user_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
            await self._on_main(self.on_user(event.get("type"), name))

        return registry

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    async def _on_main(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _profile_seen(self, name: str, exists: bool) -> None:
        if exists:
            self.profiles.add(name)
            self.queue.add(name)
        else:
            self.profiles.discard(name)
            self.metrics.tenant_state(name, None, "Gone")

    def _tenant_touched(self, tenant: str) -> None:
        if tenant in self.profiles:
            self.queue.add(tenant)

    def _profile_event(self, event_type: str, obj: dict[str, Any]) -> None:
        name = str(obj["metadata"]["name"])
        if event_type == "DELETED":
            self._profile_seen(name, False)
        # Our own status/finalizer write coming back is skipped, but never a Profile seen
        # for the first time (the listing after a start or a reconnect reaches every one).
        elif name not in self.profiles or not written_by(obj):
            self._profile_seen(name, True)

    def _owned_event(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type in ("ADDED", "MODIFIED") and written_by(obj):
            return  # our own apply coming back
        tenant = ((obj.get("metadata") or {}).get("labels") or {}).get(c.LABEL_TENANT)
        if tenant:
            self._tenant_touched(str(tenant))

    def _namespace_event(self, event_type: str, obj: dict[str, Any]) -> None:
        wanted = ((obj.get("metadata") or {}).get("annotations") or {}).get(c.ANN_ADOPT)
        if wanted and event_type != "DELETED":
            self._tenant_touched(str(wanted))  # the adoption opt-in

    async def _watch(
        self,
        api_version: str,
        kind: str,
        on_event: Callable[[str, dict[str, Any]], None],
        labels: dict[str, str] | None = None,
    ) -> None:
        """A plain watch (reconnecting, restarting after failures) feeding `on_event`.

        Used rather than kopf for everything that grows with the tenants (Profiles,
        namespaces, ~17 owned objects per tenant): nothing is kept per object, where kopf
        keeps state for every object it has seen.
        """
        delay = 1.0
        while True:
            try:
                async for event_type, obj in self.kube.watch(api_version, kind, labels=labels):
                    delay = 1.0
                    on_event(event_type, obj)
            except UnknownKind:
                delay = 30.0  # not installed (yet): look again later
            except (ApiError, OSError, httpx2.HTTPError) as err:
                log.warning("watch of %s failed, restarting: %s", kind, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    # ------------------------------------------------------------------ running

    def effective_configuration(self) -> dict[str, Any]:
        return {**asdict(self.settings), "fieldManager": c.FIELD_MANAGER, "finalizer": c.FINALIZER}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (graceful: in-flight reconciles finish or are cancelled
        at a step boundary — every step is idempotent, so a later run completes it)."""
        log.info(
            "kftenancy controller starting", extra={"configuration": self.effective_configuration()}
        )
        self._loop = asyncio.get_running_loop()
        runner = None
        if self.settings.metrics_port:
            from kftenancy.controllers.tls import server_context

            ctx = server_context(self.settings.tls_cert, self.settings.tls_key)
            runner = await serve(
                self.metrics,
                lambda: self.ready.is_set(),
                host=self.settings.metrics_host,
                port=self.settings.metrics_port,
                ssl_context=ctx,
            )
        elector: LeaderElector | None = None
        tasks: list[asyncio.Task[Any]] = []
        kopf_stop, kopf_ready = threading.Event(), threading.Event()
        try:
            if self.settings.leader_election:
                elector = LeaderElector(
                    Kube(
                        self.kube.client,
                        writes=WriteCounter(
                            trail=self.write_log.write if self.write_log is not None else None
                        ),
                    ),
                    name=self.settings.lease_name,
                    namespace=self.settings.lease_namespace or self.policy.platform.namespace,
                    identity=self.settings.identity,
                )
                self._elector = elector
                self.kube.fence = elector.holds  # no write once the Lease may have run out
                acquiring = asyncio.create_task(elector.acquire())
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    acquiring.cancel()
                    return
                stopping.cancel()
            await self.load_policy()
            tasks = [
                asyncio.create_task(self.queue.worker(self.handle))
                for _ in range(self.settings.workers)
            ]
            tasks.append(asyncio.create_task(self._resync_loop()))
            if self.settings.capacity_seconds > 0:
                self.capacity = CapacityLoop(
                    self.kube,
                    lambda: self.policy,
                    now=self._now,
                    interval=self.settings.capacity_seconds,
                )
                tasks.append(asyncio.create_task(self.capacity.run()))
            owned = {c.LABEL_MANAGED_BY: c.MANAGED_BY}
            if self.storage is not None:
                tasks.append(asyncio.create_task(self.storage.run()))
            tasks += [
                asyncio.create_task(self._watch(av, kind, self._owned_event, owned))
                for av, kind in KNOWN_KINDS
            ]
            tasks.append(
                asyncio.create_task(
                    self._watch(PROFILE_API_VERSION, c.PROFILE_KIND, self._profile_event)
                )
            )
            tasks.append(asyncio.create_task(self._watch("v1", "Namespace", self._namespace_event)))
            failure: list[BaseException] = []

            def kopf_thread() -> None:
                try:
                    asyncio.run(
                        kopf.operator(
                            registry=self.registry,
                            clusterwide=True,
                            standalone=True,
                            stop_flag=kopf_stop,
                            ready_flag=kopf_ready,
                        )
                    )
                except BaseException as err:
                    failure.append(err)

            # kopf cancels every task of its event loop that it did not start when it
            # stops; its own thread and loop keep it away from ours (and from tests).
            thread = threading.Thread(target=kopf_thread, name="kopf", daemon=True)
            thread.start()

            async def kopf_alive() -> None:
                while thread.is_alive():
                    if kopf_ready.is_set() and not self.ready.is_set():
                        self.ready.set()
                    await asyncio.sleep(0.05)

            watchers = [asyncio.create_task(stop.wait()), asyncio.create_task(kopf_alive())]
            if elector is not None:
                watchers.append(asyncio.create_task(elector.keep()))
            await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()  # first stop the work (a lost lease), then kopf
            kopf_stop.set()
            for w in watchers:
                w.cancel()
            await asyncio.to_thread(thread.join, 30)
            if failure and not isinstance(failure[0], asyncio.CancelledError):
                raise KftenancyError(f"the kopf operator stopped: {failure[0]}")
        finally:
            kopf_stop.set()  # also when cancelled (killed): never leave kopf running
            self.ready.clear()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.queue.close()
            if elector is not None:
                await elector.release()
            if runner is not None:
                await runner.cleanup()
            if self.write_log is not None:
                self.kube.writes.trail = None
                self.write_log.close()
            log.info("kftenancy controller stopped")
