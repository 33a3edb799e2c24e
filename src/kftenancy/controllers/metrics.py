"""Prometheus metrics of the controller, and the small /healthz + /metrics server."""

from __future__ import annotations

import ssl
from collections import Counter as Tally
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class Metrics:
    """One registry per controller (so tests can run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "kftenancy_reconcile",
            "Tenant reconciles by result (the Ready reason).",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kftenancy_reconcile_duration_seconds",
            "Time to reconcile one tenant.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.tenants = Gauge(
            "kftenancy_tenants",
            "Tenants by Ready condition status and reason.",
            ["ready", "reason"],
            registry=self.registry,
        )
        self.writes = Counter(
            "kftenancy_api_writes",
            "Kubernetes API write requests by verb and kind.",
            ["verb", "kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kftenancy_queue_depth", "Tenants waiting to be reconciled.", registry=self.registry
        )
        self._state: dict[str, tuple[str, str]] = {}
        self._counts: Tally[tuple[str, str]] = Tally()

    def count_write(self, verb: str, kind: str) -> None:
        self.writes.labels(verb=verb, kind=kind).inc()

    def tenant_state(self, name: str, ready: bool | None, reason: str) -> None:
        """Record a tenant's latest outcome (ready None = forget the tenant). Constant time:
        it runs after every reconcile."""
        old = self._state.pop(name, None)
        new = None if ready is None else ("True" if ready else "False", reason)
        if old == new:
            if new is not None:
                self._state[name] = new
            return
        for key, step in ((old, -1), (new, 1)):
            if key is None:
                continue
            self._counts[key] += step
            if self._counts[key] > 0:
                self.tenants.labels(ready=key[0], reason=key[1]).set(self._counts[key])
            else:
                del self._counts[key]
                self.tenants.remove(*key)
        if new is not None:
            self._state[name] = new

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve(
    metrics: Metrics,
    healthy: Callable[[], bool],
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Start the probe/metrics server; the caller cleans up the returned runner."""

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(text="ok" if ok else "unhealthy", status=200 if ok else 503)

    async def scrape(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner
