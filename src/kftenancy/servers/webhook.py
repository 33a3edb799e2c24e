"""The admission webhook server (thin shell around `kftenancy.admission`).

aiohttp over TLS. Paths:

- `POST /mutate`, `POST /validate` — AdmissionReview v1 in, AdmissionReview v1 out. Every
  answer is HTTP 200 with an allowed/denied response and a reason; bad input never
  becomes a 500 (see `kftenancy.admission.review`).
- `GET /healthz` (the process serves), `GET /readyz` (policy, caches and certificate
  loaded), `GET /metrics` (Prometheus text format).

State the rules read comes from the cluster: the `TenancyPolicy` (followed by a watch;
an invalid new version is logged and the last good one kept; no object or no CRD means
the seed defaults), and namespace labels and ServiceAccount web-identity annotations
(list + watch caches, with a read-through GET on a miss so an object created a moment ago
is never judged as unknown). The TLS certificate and key are re-read when their files
change (cert-manager rotates them in place); new connections use the new pair.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource
from lightkube.resources.core_v1 import Namespace, ServiceAccount
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.admission import AdmissionContext, Phase, review
from kftenancy.admission.dispatch import Outcome, failed, lookups, overloaded
from kftenancy.admission.review import decode_body, respond
from kftenancy.errors import describe_validation_error
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.webhooks import default_controller_user

log = logging.getLogger("kftenancy.webhook")

TenancyPolicy = create_global_resource(
    group=c.API_GROUP, version=c.API_VERSION, kind=c.POLICY_KIND, plural=c.POLICY_PLURAL
)

# kube-apiserver accepts request bodies up to 3 MiB and etcd objects up to 1.5 MiB; an
# AdmissionReview carries the object and, on UPDATE, the old object: 8 MiB is ample.
MAX_BODY = 8 * 1024 * 1024
# Requests being answered at once. Answering is CPU-bound except for reading the body
# and read-through GETs of objects the caches miss, so a pile-up means the API server or
# this process is stalled; beyond the limit requests are answered without evaluating
# (`dispatch.overloaded`: validating denied with a reason, mutating admitted unchanged).
MAX_INFLIGHT = 64
# Read-through GETs at once; beyond, the object is judged as not cached (an unknown
# namespace is a non-tenant one: stricter, never looser).
MAX_LOOKUPS = 16
RETRY_SECONDS = 2.0
LOOKUP_TIMEOUT = 2.0
LIST_CHUNK = 500  # a 5,000-tenant cluster lists tens of thousands of ServiceAccounts
# Annotations of ServiceAccounts the pod rule reads; nothing else is cached.
SA_ANNOTATION_PREFIX = "eks.amazonaws.com/"


@dataclass(frozen=True)
class WebhookSettings:
    cert_file: Path
    key_file: Path
    host: str = "0.0.0.0"
    port: int = 8443
    controller_users: tuple[str, ...] = ()  # empty: default_controller_user(policy)
    policy_name: str = c.DEFAULT_POLICY_NAME
    policy_file: Path | None = None  # a fixed policy instead of the cluster's object
    cert_check_seconds: float = 5.0
    max_inflight: int = MAX_INFLIGHT
    max_lookups: int = MAX_LOOKUPS


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "kftenancy_webhook_requests",
            "Admission requests answered.",
            ["endpoint", "kind", "operation", "allowed"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kftenancy_webhook_request_duration_seconds",
            "Time from request body received to answer ready, server-side.",
            ["endpoint"],
            # Fine below the 5 ms budget, so p50/p99 can be read off the histogram.
            buckets=(
                0.00025,
                0.0005,
                0.00075,
                0.001,
                0.0015,
                0.002,
                0.003,
                0.004,
                0.005,
                0.0075,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                1.0,
            ),
            registry=self.registry,
        )
        self.denials = Counter(
            "kftenancy_webhook_denials",
            "Admission requests denied, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.cached = Gauge(
            "kftenancy_webhook_cached_objects",
            "Objects held by the watch-backed caches.",
            ["kind"],
            registry=self.registry,
        )
        self.policy_valid = Gauge(
            "kftenancy_webhook_policy_valid",
            "1 when the latest TenancyPolicy version is in effect, 0 when it was invalid.",
            registry=self.registry,
        )
        self.overloaded = Counter(
            "kftenancy_webhook_overloaded",
            "Admission requests answered without evaluation because of the in-flight limit.",
            ["endpoint"],
            registry=self.registry,
        )
        self.patches = Counter(
            "kftenancy_webhook_patches",
            "Admission requests answered with a patch.",
            ["endpoint", "kind"],
            registry=self.registry,
        )


def _file_state(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        st = p.stat()  # follows symlinks: a Secret volume swaps its ..data link
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class WebhookServer:
    """The webhook process: caches, policy, TLS and HTTP. `start()`, then `stop()`."""

    def __init__(self, settings: WebhookSettings, client: AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.metrics = Metrics()
        self.policy = TenancyPolicySpec()
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.service_accounts: dict[tuple[str, str], dict[str, str]] = {}
        self._synced: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self._cert_state: tuple[tuple[int, int, int], ...] = ()
        self.port = settings.port
        self.inflight = 0
        self.lookups = 0
        self.policy_error: str | None = None  # why the latest policy version was refused
        self.metrics.policy_valid.set_function(lambda: 0.0 if self.policy_error else 1.0)
        cached = self.metrics.cached
        cached.labels("namespaces").set_function(lambda: len(self.namespace_labels))
        cached.labels("serviceaccounts").set_function(lambda: len(self.service_accounts))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._load_cert()
        if self.settings.policy_file is not None:
            self._set_policy(_read_policy_file(self.settings.policy_file))
            self._synced.add("policy")
        else:
            self._spawn(self._follow_policy)
        self._spawn(self._follow_namespaces)
        self._spawn(self._follow_service_accounts)
        self._spawn(self._follow_certificate)
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes(
            [
                web.post("/mutate", self._handle(Phase.MUTATE)),
                web.post("/validate", self._handle(Phase.VALIDATE)),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.settings.host, self.settings.port, ssl_context=self._ssl
        )
        await site.start()
        if self.settings.port == 0:
            self.port = int(self._runner.addresses[0][1])
        log.info(
            "webhook serving on https://%s:%d (controller users %s, policy %s)",
            self.settings.host,
            self.port,
            ", ".join(self.controller_users()),
            self.settings.policy_file or f"TenancyPolicy/{self.settings.policy_name}",
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_ready(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhook not ready after {seconds}s: {self._not_ready()}")
            await asyncio.sleep(0.05)

    def ready(self) -> bool:
        return not self._not_ready()

    def _not_ready(self) -> list[str]:
        wanted = ("policy", "namespaces", "serviceaccounts")
        return [f"{w} not loaded" for w in wanted if w not in self._synced]

    def _spawn(self, fn: Callable[[], Any]) -> None:
        self._tasks.append(asyncio.create_task(fn()))

    # ------------------------------------------------------------------ state

    def controller_users(self) -> tuple[str, ...]:
        return self.settings.controller_users or (default_controller_user(self.policy),)

    def context(self) -> AdmissionContext:
        return AdmissionContext(
            controller_users=frozenset(self.controller_users()),
            namespace_labels=self.namespace_labels,
            service_accounts=self.service_accounts,
        )

    def _set_policy(self, policy: TenancyPolicySpec) -> None:
        if policy != self.policy:
            log.info(
                "policy in effect: %s", json.dumps(policy.model_dump(mode="json", by_alias=True))
            )
        self.policy = policy

    async def _ensure_cached(self, namespace: str, account: str | None) -> None:
        """Read through to the API for objects the watches have not delivered yet."""
        if namespace and namespace not in self.namespace_labels:
            try:
                ns = await asyncio.wait_for(self.client.get(Namespace, namespace), LOOKUP_TIMEOUT)
                self.namespace_labels[namespace] = _ns_labels(ns)
            except Exception as exc:  # absent, or API unreachable: the rules treat it as unknown
                log.debug("namespace %s not found: %s", namespace, exc)
        if account is not None and (namespace, account) not in self.service_accounts:
            try:
                sa = await asyncio.wait_for(
                    self.client.get(ServiceAccount, account, namespace=namespace), LOOKUP_TIMEOUT
                )
                self.service_accounts[(namespace, account)] = _sa_annotations(sa)
            except Exception as exc:
                log.debug("serviceaccount %s/%s not found: %s", namespace, account, exc)

    # ------------------------------------------------------------------ watches

    async def _informer(
        self,
        name: str,
        res: Any,
        key: Callable[[Any], Any],
        value: Callable[[Any], Any],
        store: dict[Any, Any],
        **kw: Any,
    ) -> None:
        """List, then watch from the list's resourceVersion; on any error relist."""
        while True:
            try:
                listing = self.client.list(res, chunk_size=LIST_CHUNK, **kw)
                fresh = {key(obj): value(obj) async for obj in listing}
                store.clear()
                store.update(fresh)  # no await in between: readers never see it half-full
                self._synced.add(name)
                if self.ready():
                    # The caches are long-lived: keep them out of the cyclic GC, whose full
                    # passes over tens of thousands of entries would land in request p99.
                    gc.freeze()
                async for kind, obj in self.client.watch(
                    res, resource_version=listing.resourceVersion, **kw
                ):
                    if kind == "DELETED":
                        store.pop(key(obj), None)
                    else:
                        store[key(obj)] = value(obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch must survive API restarts, 410s, timeouts
                log.warning("%s watch restarts after error: %s", name, exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _follow_namespaces(self) -> None:
        await self._informer(
            "namespaces", Namespace, lambda o: o.metadata.name, _ns_labels, self.namespace_labels
        )

    async def _follow_service_accounts(self) -> None:
        await self._informer(
            "serviceaccounts",
            ServiceAccount,
            lambda o: (o.metadata.namespace, o.metadata.name),
            _sa_annotations,
            self.service_accounts,
            namespace="*",
        )

    async def _follow_policy(self) -> None:
        name = self.settings.policy_name
        while True:
            try:
                listing = self.client.list(TenancyPolicy, fields={"metadata.name": name})
                found = [obj async for obj in listing]
                self._apply_policy_object(found[0] if found else None)
                self._synced.add("policy")
                async for kind, obj in self.client.watch(
                    TenancyPolicy,
                    fields={"metadata.name": name},
                    resource_version=listing.resourceVersion,
                ):
                    self._apply_policy_object(None if kind == "DELETED" else obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _http_status(exc) == 404:  # CRD not installed (yet): the seed defaults
                    self._apply_policy_object(None)
                    self._synced.add("policy")
                else:
                    log.warning("policy watch restarts after error: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    def _apply_policy_object(self, obj: Any) -> None:
        if obj is None:
            if "policy" not in self._synced:
                log.info("no TenancyPolicy %r: the seed defaults apply", self.settings.policy_name)
            self._set_policy(TenancyPolicySpec())
            self.policy_error = None
            return
        data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
        try:
            self._set_policy(load_policy({"spec": data.get("spec") or {}}))
            self.policy_error = None
        except ValidationError as exc:
            self.policy_error = describe_validation_error(
                exc, f"TenancyPolicy/{self.settings.policy_name}"
            )
            log.error("invalid policy, keeping the previous one:\n%s", self.policy_error)

    # ------------------------------------------------------------------ TLS

    def _load_cert(self) -> None:
        state = _file_state(self.settings.cert_file, self.settings.key_file)
        self._ssl.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        self._cert_state = state

    async def _follow_certificate(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cert_check_seconds)
            try:
                if _file_state(self.settings.cert_file, self.settings.key_file) != self._cert_state:
                    self._load_cert()
                    log.info("TLS certificate reloaded from %s", self.settings.cert_file)
            except (OSError, ssl.SSLError) as exc:  # half-written pair: keep serving the old one
                log.warning("TLS certificate not reloaded (keeping the current one): %s", exc)

    def reload_certificate_now(self) -> bool:
        """Check the files once (what the periodic task does); True if a new pair loaded."""
        if _file_state(self.settings.cert_file, self.settings.key_file) == self._cert_state:
            return False
        self._load_cert()
        return True

    # ------------------------------------------------------------------ HTTP

    def _handle(self, phase: Phase) -> Callable[[web.Request], Any]:
        endpoint = phase.value

        async def handler(request: web.Request) -> web.Response:
            self.inflight += 1
            try:
                return await answer(request)
            finally:
                self.inflight -= 1

        async def answer(request: web.Request) -> web.Response:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return web.Response(
                    status=413, text=f"request body exceeds {MAX_BODY} bytes (AdmissionReview)\n"
                )
            started = time.perf_counter()
            body = decode_body(raw)
            try:
                if self.inflight > self.settings.max_inflight:
                    self.metrics.overloaded.labels(endpoint).inc()
                    outcome = overloaded(body, phase, self.inflight)
                else:
                    wanted = lookups(body)
                    if wanted is not None and self.lookups < self.settings.max_lookups:
                        self.lookups += 1
                        try:
                            await self._ensure_cached(*wanted)
                        finally:
                            self.lookups -= 1
                    outcome = review(self.policy, body, phase, self.context())
                text = json.dumps(outcome.response, separators=(",", ":"))
            except Exception as exc:  # last resort: still an AdmissionReview, never a 500
                log.exception("unexpected error answering an admission request")
                failure = failed(phase, f"kftenancy webhook error ({type(exc).__name__})")
                outcome = Outcome(respond(_uid(body), failure), failure, "", "")
                text = json.dumps(outcome.response, separators=(",", ":"))
            decision = outcome.decision
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(
                endpoint,
                outcome.kind or "-",
                outcome.operation or "-",
                str(decision.allowed).lower(),
            ).inc()
            if decision.patch:
                self.metrics.patches.labels(endpoint, outcome.kind or "-").inc()
            if not decision.allowed:
                self.metrics.denials.labels(decision.code or "unknown").inc()
                log.info("denied (%s): %s", decision.code, decision.message)
            return web.Response(text=text, content_type="application/json")

        return handler

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = self._not_ready()
        if problems:
            return web.Response(status=503, text="; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


def _uid(body: Any) -> str:
    request = body.get("request") if isinstance(body, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) else ""


def _http_status(exc: Exception) -> int | None:
    """The HTTP status behind a lightkube error (an unknown API group answers a plain
    404 page, not a Status object, so ApiError alone does not cover it)."""
    if isinstance(exc, ApiError):
        return int(exc.status.code) if exc.status.code is not None else None
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


_NONE: dict[str, str] = {}  # shared by the (many) entries without labels/annotations we read


def _ns_labels(ns: Any) -> dict[str, str]:
    # Only the label the rules read: a 5,000-tenant cluster stays small in memory.
    labels = ns.metadata.labels or {}
    kept = {k: v for k, v in labels.items() if k == c.LABEL_TENANT}
    return kept or _NONE


def _sa_annotations(sa: Any) -> dict[str, str]:
    annotations = sa.metadata.annotations or {}
    kept = {k: v for k, v in annotations.items() if k.startswith(SA_ANNOTATION_PREFIX)}
    return kept or _NONE


def _read_policy_file(path: Path) -> TenancyPolicySpec:
    import yaml

    with path.open() as fh:
        return load_policy(yaml.safe_load(fh))
