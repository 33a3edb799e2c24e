"""The gateway server (aiohttp, TLS): the shell around `kftenancy.gateway`.

Two modes share one `Gateway.check` (authenticate → authorize → onboard → sign → decide):

- `ext-authz`: the HTTP check API that Envoy/Istio's `envoyExtAuthzHttp` provider calls.
  Envoy sends the original request's method, headers and path (behind `pathPrefix`,
  here `/check`); the answer is 200 with the headers to set upstream (Envoy overwrites
  the request headers listed in `headersToUpstreamOnAllow` with them) plus
  `x-envoy-auth-headers-to-remove` naming the client identity headers to drop, or the
  denial status with its headers and a short reason. Python never sees request bodies.
- `proxy`: a reverse proxy for clusters without a mesh and for the local demo. Same
  decision, then the request is streamed to the upstream with our headers set and the
  client's identity headers removed; websockets (Jupyter kernels) are relayed.

Both serve `/healthz`, `/readyz`, `/metrics` (Prometheus) and `/.well-known/jwks.json`
(the public keys of the identity JWT). Access logs are JSON lines without tokens,
secrets or query strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from kftenancy.gateway import authz as authz_core
from kftenancy.gateway.authz import AuthzResult
from kftenancy.gateway.cache import TTLCache
from kftenancy.gateway.decision import Decision, decide, onboarding_throttled
from kftenancy.gateway.flight import SingleFlight
from kftenancy.gateway.identity import (
    Credential,
    Identity,
    KubeTokenCredential,
    OIDCCredential,
    ProxyCredential,
    Rejected,
    Request,
    identity_from_claims,
    identity_from_token_review,
    normalize_headers,
    reserved,
    select_credential,
)
from kftenancy.gateway.jwt_verify import JWKSCache, TokenRejected, verify_with_cache
from kftenancy.gateway.limits import (
    FloodLimits,
    InFlight,
    Throttled,
    WorkLimiter,
    client_address,
)
from kftenancy.gateway.onboard import Onboarder, OnboardFn
from kftenancy.gateway.signer import KeyRing, load_keyring, sign_identity
from kftenancy.policy import OIDCIssuer, OnboardingSource, TenancyPolicySpec

log = logging.getLogger("kftenancy.gateway")
access_log = logging.getLogger("kftenancy.gateway.access")

Mode = Literal["ext-authz", "proxy"]
CHECK_PREFIX = "/check"
JWKS_PATH = "/.well-known/jwks.json"
ENVOY_REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
AUTHN_CACHE_MAX_SECONDS = 120.0
# HTTP limits (aiohttp's own settings). A request line may carry a long query string; a
# header may carry a bearer token of up to `identity.MAX_TOKEN_BYTES` (16 KiB) or big
# cookies, so fields get 32 KiB (aiohttp's default of 8 KiB would refuse large OIDC
# tokens); more than 128 headers is refused (aiohttp's default). Oversized requests get
# aiohttp's 400 before any handler runs. `keepalive_timeout` is also the slow-client
# bound: aiohttp arms it when the connection opens and after each response, and closes
# a connection that has not delivered a complete request head by then (slowloris).
HTTP_LIMITS: dict[str, Any] = {
    "max_line_size": 16 * 1024,
    "max_field_size": 32 * 1024,
    "max_headers": 128,
    "keepalive_timeout": 15.0,
}
# Proxy mode streams bodies; Jupyter's server refuses more than 100 MiB, so do we (413),
# and a body that stalls for BODY_IDLE_SECONDS is abandoned.
MAX_PROXY_BODY = 100 * 1024 * 1024
BODY_IDLE_SECONDS = 60.0
# ext-authz checks never carry a body (Envoy sends none); nothing is read anyway.
MAX_CHECK_BODY = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1) and ones the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


class Reviewer(Protocol):
    """The Kubernetes API calls the gateway makes (TokenReview, SubjectAccessReview)."""

    async def token_review(self, token: str) -> Mapping[str, Any]: ...

    async def access_review(self, body: dict[str, Any]) -> Mapping[str, Any]: ...


TOKEN_REVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
REVIEW_TIMEOUT_SECONDS = 10.0
# The review client's connections to the API server: a few, kept. A burst of reviews
# (the TokenReviews a flood is allowed, a wave of new users) otherwise opens one new TLS
# connection per concurrent review (aiohttp's pool allows 100), each a handshake that
# costs the gateway's event loop and the API server far more than the review itself, and
# in the flood benchmark stalled every legitimate check for the first second of a flood.
# Kept idle for 60 s, below kube-apiserver's 90 s idle timeout (k8s.io/apiserver
# secure_serving.go), so the pool outlives the gaps between bursts.
REVIEW_CONNECTIONS = 4
REVIEW_KEEPALIVE_SECONDS = 60.0


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `NO_PROXY`, as lightkube's
    client honours them), or None."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme) or None


class ReviewFailed(Exception):
    """The API server answered a review with an error (the gateway answers 503)."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(f"{kind}: HTTP {status}: {message}")
        self.status = status


class KubeReviewer:
    """`Reviewer`: TokenReview and SubjectAccessReview POSTed with aiohttp, the gateway's
    HTTP client (the gateway's ServiceAccount needs the `system:auth-delegator` ClusterRole).

    Not through lightkube's httpx client: a review costs the gateway's event loop about
    0.3 ms of CPU this way against about 1 ms there, and under a flood of unknown tokens
    each admitted TokenReview shares that loop with every legitimate check
    (bench/gateway_flood.py, docs/gateway.md). The connection settings still come from
    the lightkube client's config through lightkube's own helpers: the server, its CA and
    the client certificate (`verify_cluster`), and the credentials (`user_auth`: a bearer
    token, an in-cluster token file re-read on a 401 when the kubelet rotates it, or an
    exec plugin), driven here as the httpx auth flow they are.
    """

    def __init__(self, client: Any, *, timeout_seconds: float = REVIEW_TIMEOUT_SECONDS) -> None:
        from lightkube.config.client_adapter import user_auth, verify_cluster

        config = client.config
        self.base = str(config.cluster.server).rstrip("/")
        self.ssl = verify_cluster(config.cluster, config.user, config.abs_file)
        self.auth = user_auth(config.user)
        self.proxy = env_proxy(self.base)
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def token_review(self, token: str) -> Mapping[str, Any]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        return await self._create("TokenReview", TOKEN_REVIEWS_PATH, body)

    async def access_review(self, body: dict[str, Any]) -> Mapping[str, Any]:
        return await self._create("SubjectAccessReview", ACCESS_REVIEWS_PATH, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _create(self, kind: str, path: str, body: dict[str, Any]) -> Mapping[str, Any]:
        status, data = await self._post(path, json.dumps(body).encode())
        try:
            out = json.loads(data)
        except ValueError:
            out = None
        if not 200 <= status < 300 or not isinstance(out, dict):
            message = out.get("message") if isinstance(out, dict) else None
            raise ReviewFailed(kind, status, str(message or data[:200].decode(errors="replace")))
        review_status = out.get("status")
        return review_status if isinstance(review_status, dict) else {}

    async def _post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        import httpx2

        if self._session is None:
            # trust_env=False: with it aiohttp looks up ~/.netrc and the proxy variables in a
            # worker thread on every request (two thread hops per review, each a fight for
            # the GIL with the event loop); the proxy is looked up once instead (`env_proxy`).
            # At most REVIEW_CONNECTIONS connections: further reviews wait for a free one.
            connector = aiohttp.TCPConnector(
                limit=REVIEW_CONNECTIONS, keepalive_timeout=REVIEW_KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, trust_env=False
            )
        url = self.base + path
        request = httpx2.Request("POST", url)
        flow = self.auth.async_auth_flow(request) if self.auth is not None else None
        if flow is not None:
            request = await anext(flow)
        while True:
            headers = {"content-type": "application/json", "accept": "application/json"}
            if "authorization" in request.headers:
                headers["authorization"] = request.headers["authorization"]
            async with self._session.post(
                url, data=payload, headers=headers, ssl=self.ssl, proxy=self.proxy
            ) as r:
                status, data = r.status, await r.read()
            if flow is None:
                return status, data
            try:  # a 401 lets a token-file or exec credential refresh itself and retry once
                request = await flow.asend(httpx2.Response(status, request=request))
            except StopAsyncIteration:
                return status, data


class Metrics:
    """Prometheus metrics in the gateway's own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "kftenancy_gateway_decisions",
            "Decisions by result and reason.",
            ["result", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "kftenancy_gateway_check_seconds",
            "Time to decide one request.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.api_calls = Counter(
            "kftenancy_gateway_api_calls",
            "Calls to the Kubernetes API and JWKS endpoints.",
            ["call"],
            registry=r,
        )
        self.onboarded = Counter(
            "kftenancy_gateway_onboarding_calls",
            "Onboarding calls by outcome.",
            ["outcome"],
            registry=r,
        )
        self.throttled = Counter(
            "kftenancy_gateway_throttled",
            "Work refused by a flood limit (answered 429 without calling the API server).",
            ["work", "scope"],
            registry=r,
        )
        self.cache_ratio = Gauge(
            "kftenancy_gateway_cache_hit_ratio",
            "Hit ratio of the gateway caches.",
            ["cache"],
            registry=r,
        )


def _failure(e: BaseException) -> str:
    """A failed review call for the log: the API server's message, else the error type
    (a transport error's text may carry the URL, never a token: tokens go in bodies)."""
    return str(e) if isinstance(e, ReviewFailed) else type(e).__name__


def token_key(token: str) -> bytes:
    """Cache key for a bearer token: its SHA-256 (raw tokens are not kept as keys)."""
    return hashlib.sha256(token.encode()).digest()


class Gateway:
    """Authenticate, authorize, onboard, sign and decide, with caches in front of every
    remote call. `clock` returns wall-clock seconds (JWT times are wall-clock)."""

    def __init__(
        self,
        policy: TenancyPolicySpec,
        *,
        keyring: KeyRing,
        reviewer: Reviewer | None,
        jwks_fetch: Callable[[OIDCIssuer], Callable[[], Awaitable[Mapping[str, Any]]]]
        | None = None,
        onboard: OnboardFn | None = None,
        proxy_secret: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        limits: FloodLimits | None = None,
    ) -> None:
        self.policy = policy
        self.keyring = keyring
        self.reviewer = reviewer
        self.proxy_secret = proxy_secret or None
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.limits = limits or FloodLimits()
        self.token_reviews = WorkLimiter(
            self.limits.token_review_global,
            self.limits.token_review_per_client,
            max_clients=self.limits.max_clients,
        )
        self.token_reviews_inflight = InFlight(self.limits.token_review_inflight)
        size = policy.identity.authorization.cache_size
        self.authn_cache: TTLCache[bytes, Identity | Rejected] = TTLCache(size)
        self.authz_cache: TTLCache[tuple[str, tuple[str, ...]], AuthzResult] = TTLCache(size)
        self.token_cache: TTLCache[tuple[str, tuple[str, ...]], str] = TTLCache(size)
        self._authn_flight: SingleFlight[bytes, Identity | Rejected] = SingleFlight()
        self._authz_flight: SingleFlight[tuple[str, tuple[str, ...]], AuthzResult | None] = (
            SingleFlight()
        )
        self.jwks: dict[str, JWKSCache] = {}
        if jwks_fetch is not None:
            for issuer in policy.identity.oidc:
                self.jwks[issuer.issuer] = JWKSCache(self._counted(jwks_fetch(issuer), "jwks"))
        self.onboarder: Onboarder | None = None
        if onboard is not None and OnboardingSource.GATEWAY in policy.identity.onboarding:
            self.onboarder = Onboarder(onboard, limiter=WorkLimiter(self.limits.onboarding_global))
        for name in ("authn", "authz", "identity_token"):
            self.metrics.cache_ratio.labels(name).set_function(self._ratio(name))

    def _ratio(self, name: str) -> Callable[[], float]:
        caches: dict[str, TTLCache[Any, Any]] = {
            "authn": self.authn_cache,
            "authz": self.authz_cache,
            "identity_token": self.token_cache,
        }
        stats = caches[name].stats
        return lambda: stats.hit_ratio

    def _counted(
        self, fn: Callable[[], Awaitable[Mapping[str, Any]]], call: str
    ) -> Callable[[], Awaitable[Mapping[str, Any]]]:
        async def wrapped() -> Mapping[str, Any]:
            self.metrics.api_calls.labels(call).inc()
            return await fn()

        return wrapped

    # -- authentication --------------------------------------------------------------

    async def authenticate(
        self, cred: Credential | Rejected | None, now: float, client: str = "-"
    ) -> Identity | Rejected | None:
        if cred is None or isinstance(cred, Rejected):
            return cred
        if isinstance(cred, ProxyCredential):
            return cred.identity
        key = token_key(cred.token)
        cached = self.authn_cache.get(key, now)
        if cached is not None:
            return cached

        async def verify() -> Identity | Rejected:
            if isinstance(cred, OIDCCredential):
                result, ttl = await self._verify_oidc(cred, now)
            else:
                result, ttl = await self._review_token(cred, now, client)
            if ttl > 0:
                self.authn_cache.put(key, result, now, ttl)
            return result

        result, _ = await self._authn_flight.do(key, verify)
        return result

    async def _verify_oidc(
        self, cred: OIDCCredential, now: float
    ) -> tuple[Identity | Rejected, float]:
        issuer = cred.issuer
        cache = self.jwks.get(issuer.issuer)
        if cache is None:
            return Rejected("authn-unavailable", "OIDC verification is not configured", 503), 0
        try:
            claims = await verify_with_cache(
                cred.token,
                cache,
                issuer=issuer.issuer,
                audiences=issuer.audiences,
                algorithms=issuer.algorithms,
                now=now,
                leeway=issuer.clock_skew_seconds,
            )
        except TokenRejected as e:
            return Rejected(e.reason, e.detail), self._deny_ttl()
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            log.warning("JWKS of %s unavailable: %s", issuer.issuer, type(e).__name__)
            return Rejected(
                "authn-unavailable", "the identity provider's keys are unavailable", 503
            ), 0
        ident = identity_from_claims(issuer, claims)
        ttl = min(AUTHN_CACHE_MAX_SECONDS, float(claims["exp"]) - now)
        return ident, ttl

    async def _review_token(
        self, cred: KubeTokenCredential, now: float, client: str
    ) -> tuple[Identity | Rejected, float]:
        if self.reviewer is None:
            return Rejected("authn-unavailable", "token review is not configured", 503), 0
        inflight = self.token_reviews_inflight
        throttled = Throttled("inflight", 1) if inflight.full else None
        throttled = throttled or self.token_reviews.admit(client, now)
        if throttled is not None:  # refused before any API call; never cached
            self.metrics.throttled.labels("tokenreview", throttled.scope).inc()
            detail = f"too many unverified tokens ({throttled.scope} limit); retry later"
            return Rejected("throttled", detail, 429, throttled.retry_after), 0
        inflight.enter()
        self.metrics.api_calls.labels("tokenreview").inc()
        try:
            status = await self.reviewer.token_review(cred.token)
        except Exception as e:  # any API failure is an outage for this request, never a 500
            log.warning("TokenReview failed: %s", _failure(e))
            return Rejected("authn-unavailable", "token review is unavailable", 503), 0
        finally:
            self.token_reviews_inflight.leave()
        ident = identity_from_token_review(status)
        ttl = AUTHN_CACHE_MAX_SECONDS if isinstance(ident, Identity) else self._deny_ttl()
        return ident, ttl

    def _deny_ttl(self) -> float:
        return float(self.policy.identity.authorization.deny_cache_seconds)

    # -- authorization ---------------------------------------------------------------

    async def authorize(self, ident: Identity, now: float) -> AuthzResult | None:
        key = authz_core.cache_key(ident)
        cached = self.authz_cache.get(key, now)
        if cached is not None:
            return cached
        reviewer = self.reviewer
        if reviewer is None:
            return None

        async def review() -> AuthzResult | None:
            self.metrics.api_calls.labels("subjectaccessreview").inc()
            try:
                status = await reviewer.access_review(authz_core.access_review(self.policy, ident))
            except Exception as e:  # an outage: 503 for this request, not cached
                log.warning("SubjectAccessReview failed: %s", _failure(e))
                return None
            result = authz_core.authz_from_review(self.policy, status)
            self.authz_cache.put(key, result, now, authz_core.cache_seconds(self.policy, result))
            return result

        result, _ = await self._authz_flight.do(key, review)
        return result

    # -- identity token --------------------------------------------------------------

    def identity_token(self, ident: Identity, now: float) -> str | None:
        cfg = self.policy.identity.identity_token
        if not cfg.enabled:
            return None
        key = (ident.user, ident.groups)
        token = self.token_cache.get(key, now)
        if token is None:
            token = sign_identity(
                self.keyring,
                user=ident.user,
                groups=ident.groups,
                issuer=cfg.issuer,
                audience=cfg.audience,
                now=now,
                ttl_seconds=cfg.ttl_seconds,
            )
            # reuse while at least half its lifetime is left
            self.token_cache.put(key, token, now, cfg.ttl_seconds / 2)
        return token

    def set_keyring(self, ring: KeyRing) -> None:
        self.keyring = ring
        self.token_cache.clear()

    # -- the whole check -------------------------------------------------------------

    async def check(self, request: Request) -> Decision:
        started = time.perf_counter()
        now = self.clock()
        cred = select_credential(self.policy, request, self.proxy_secret)
        ident = await self.authenticate(cred, now, request.client)
        result: AuthzResult | None = None
        token: str | None = None
        throttled: Throttled | None = None
        if isinstance(ident, Identity):
            result = await self.authorize(ident, now)
            if result is not None and result.allowed:
                # Service accounts and other `system:` identities (vouched for by
                # TokenReview) are workloads, not people: they get no Profile.
                if self.onboarder is not None and not reserved(ident.user):
                    throttled = await self._onboard(ident.user, now)
                token = self.identity_token(ident, now)
        if throttled is not None and isinstance(ident, Identity):
            decision = onboarding_throttled(ident.user, throttled.retry_after)
        else:
            decision = decide(self.policy, ident, result, request, token)
        self.metrics.decisions.labels(
            "allow" if decision.allowed else "deny", decision.reason
        ).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return decision

    async def _onboard(self, user: str, now: float) -> Throttled | None:
        assert self.onboarder is not None
        try:
            ran = await self.onboarder.ensure(user, now)
        except Exception as e:  # the request still passes; the next one retries onboarding
            self.metrics.onboarded.labels("error").inc()
            log.error("onboarding %r failed: %s: %s", user, type(e).__name__, e)
            return None
        if isinstance(ran, Throttled):
            self.metrics.throttled.labels("onboarding", ran.scope).inc()
            self.metrics.onboarded.labels("throttled").inc()
            return ran
        if ran:
            self.metrics.onboarded.labels("ok").inc()
            self.metrics.api_calls.labels("onboarding").inc()
        return None


# ------------------------------------------------------------------------------ HTTP


def request_from_aiohttp(req: web.Request, path: str, *, trust_xff: bool = False) -> Request:
    headers, dup = normalize_headers(req.headers.items())
    client = client_address(headers.get("x-forwarded-for"), req.remote, trust_xff=trust_xff)
    return Request(req.method, path, headers, dup, client)


def _log_access(mode: str, req: Request, decision: Decision, started: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        json.dumps(
            {
                "mode": mode,
                "method": req.method,
                "path": req.path.split("?", 1)[0][:256],
                "status": decision.status,
                "reason": decision.reason,
                "user": decision.user,
                "ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )
    )


def _deny_response(decision: Decision) -> web.Response:
    return web.Response(
        status=decision.status,
        headers=dict(decision.headers_to_set),
        text=f"{decision.reason}: {decision.detail}\n",
    )


def _too_large(limit: int) -> web.Response:
    return web.Response(
        status=413, text=f"body-too-large: the request body exceeds {limit} bytes\n"
    )


@dataclass
class ProxyTarget:
    base: str  # e.g. https://notebooks.internal:8443 (no trailing slash)
    ssl: ssl.SSLContext | bool = True


def upstream_headers(req: web.Request, decision: Decision) -> dict[str, str]:
    """Client headers minus hop-by-hop and every identity header, plus ours (overwriting)."""
    drop = HOP_BY_HOP | set(decision.headers_to_remove) | set(decision.headers_to_set)
    out: dict[str, str] = {}
    for name, value in req.headers.items():
        low = name.lower()
        if low in drop or low.startswith("x-forwarded-"):
            continue
        out[name] = value
    out.update(decision.headers_to_set)
    out["x-forwarded-for"] = req.remote or ""
    out["x-forwarded-proto"] = req.scheme
    out["x-forwarded-host"] = req.host
    return out


class BodyTooLarge(Exception):
    pass


async def limited_body(
    stream: aiohttp.StreamReader, limit: int, idle: float = BODY_IDLE_SECONDS
) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk, failing with BodyTooLarge past `limit` bytes and
    with TimeoutError when the client sends nothing for `idle` seconds."""
    seen = 0
    while True:
        chunk = await asyncio.wait_for(stream.readany(), idle)
        if not chunk:
            return
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"the request body exceeds {limit} bytes")
        yield chunk


class GatewayServer:
    """The aiohttp application for one mode."""

    def __init__(
        self,
        gateway: Gateway,
        mode: Mode,
        *,
        upstream: ProxyTarget | None = None,
        key_dir: Path | None = None,
        key_reload_seconds: float = 30.0,
        max_body: int = MAX_PROXY_BODY,
    ) -> None:
        if mode == "proxy" and upstream is None:
            raise ValueError("proxy mode needs an upstream URL")
        self.gateway = gateway
        self.mode = mode
        self.upstream = upstream
        self.key_dir = key_dir
        self.key_reload_seconds = key_reload_seconds
        self.max_body = max_body
        self.ready = False
        self.session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def runner(self, **overrides: Any) -> web.AppRunner:
        """An AppRunner for `app()` with the HTTP limits (`HTTP_LIMITS`, then `overrides`)."""
        return web.AppRunner(self.app(), access_log=None, **(HTTP_LIMITS | overrides))

    def app(self) -> web.Application:
        size = MAX_CHECK_BODY if self.mode == "ext-authz" else self.max_body
        app = web.Application(client_max_size=size)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get(JWKS_PATH, self.jwks)
        if self.mode == "ext-authz":
            app.router.add_route("*", CHECK_PREFIX + "{tail:.*}", self.check)
        else:
            app.router.add_route("*", "/{tail:.*}", self.proxy)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        if self.mode == "proxy":
            self.session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=0),
            )
        if self.key_dir is not None:
            self._tasks.append(asyncio.create_task(self._reload_keys()))
        self.ready = True

    async def _cleanup(self, app: web.Application) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.session is not None:
            await self.session.close()

    async def _reload_keys(self) -> None:
        assert self.key_dir is not None
        seen = self._key_stamp()
        while True:
            await asyncio.sleep(self.key_reload_seconds)
            stamp = self._key_stamp()
            if stamp == seen:
                continue
            try:
                ring = load_keyring(self.key_dir)
            except (OSError, ValueError) as e:
                log.error("keeping the old signing keys: cannot load %s: %s", self.key_dir, e)
                continue
            seen = stamp
            self.gateway.set_keyring(ring)
            log.info("signing key rotated: current kid %s", ring.current.kid)

    def _key_stamp(self) -> tuple[float, ...]:
        assert self.key_dir is not None
        stamps = []
        for name in ("current.pem", "previous.pem"):
            p = self.key_dir / name
            stamps.append(p.stat().st_mtime if p.exists() else 0.0)
        return tuple(stamps)

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _: web.Request) -> web.Response:
        return (
            web.Response(text="ready\n")
            if self.ready
            else web.Response(status=503, text="starting\n")
        )

    async def metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.gateway.metrics.registry)
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    async def jwks(self, _: web.Request) -> web.Response:
        return web.json_response(
            self.gateway.keyring.jwks(), headers={"cache-control": "max-age=60"}
        )

    async def _decide(self, req: web.Request, path: str) -> tuple[Request, Decision]:
        request = request_from_aiohttp(req, path, trust_xff=self.mode == "ext-authz")
        return request, await self.gateway.check(request)

    async def check(self, req: web.Request) -> web.Response:
        started = time.perf_counter()
        path = req.raw_path[len(CHECK_PREFIX) :] or "/"
        request, decision = await self._decide(req, path)
        _log_access(self.mode, request, decision, started)
        if not decision.allowed:
            return _deny_response(decision)
        headers = dict(decision.headers_to_set)
        headers[ENVOY_REMOVE_HEADER] = ",".join(decision.headers_to_remove)
        return web.Response(status=200, headers=headers)

    async def proxy(self, req: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request, decision = await self._decide(req, req.raw_path)
        _log_access(self.mode, request, decision, started)
        if not decision.allowed:
            return _deny_response(decision)
        assert self.upstream is not None and self.session is not None
        url = self.upstream.base + req.raw_path
        headers = upstream_headers(req, decision)
        if req.headers.get("upgrade", "").lower() == "websocket":
            return await self._websocket(req, url, headers)
        if req.content_length is not None and req.content_length > self.max_body:
            return _too_large(self.max_body)
        data: Any = limited_body(req.content, self.max_body) if req.body_exists else None
        try:
            async with self.session.request(
                req.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                ssl=self.upstream.ssl,
            ) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for name, value in up.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        resp.headers.add(name, value)
                await resp.prepare(req)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except BodyTooLarge:
            return _too_large(self.max_body)
        except (TimeoutError, aiohttp.ClientError) as e:
            if isinstance(e.__cause__, BodyTooLarge) or isinstance(e.__context__, BodyTooLarge):
                return _too_large(self.max_body)
            log.warning("upstream %s failed: %s", self.upstream.base, type(e).__name__)
            return web.Response(status=502, text="bad-gateway: the upstream is unreachable\n")

    async def _websocket(
        self, req: web.Request, url: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        assert self.session is not None and self.upstream is not None
        protocols = [
            p.strip() for p in req.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
        ]
        fwd = {k: v for k, v in headers.items() if k.lower() not in WS_HANDSHAKE}
        ws_url = "ws" + url[4:] if url.startswith("http") else url
        try:
            upstream = await self.session.ws_connect(
                ws_url, headers=fwd, protocols=protocols, ssl=self.upstream.ssl, autoping=False
            )
        except (TimeoutError, aiohttp.ClientError) as e:
            log.warning("upstream websocket %s failed: %s", self.upstream.base, type(e).__name__)
            return web.Response(
                status=502, text="bad-gateway: the upstream websocket is unreachable\n"
            )
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), autoping=False
        )
        await client.prepare(req)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == aiohttp.WSMsgType.PING:
                    await dst.ping(msg.data)
                elif msg.type == aiohttp.WSMsgType.PONG:
                    await dst.pong(msg.data)
                else:
                    break
            await dst.close()

        tasks = [
            asyncio.create_task(pump(client, upstream)),
            asyncio.create_task(pump(upstream, client)),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await upstream.close()
        await client.close()
        return client


# ------------------------------------------------------------------------------ wiring


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def http_jwks_fetcher(
    session_factory: Callable[[], aiohttp.ClientSession], ca_file: Path | None
) -> Callable[[OIDCIssuer], Callable[[], Awaitable[Mapping[str, Any]]]]:
    """JWKS fetchers over HTTPS: the issuer's `jwksUri`, or the one its discovery
    document names. Responses larger than 1 MiB or not JSON objects are errors."""
    ctx = client_ssl_context(ca_file)

    async def get_json(url: str) -> Mapping[str, Any]:
        if not url.startswith("https://"):
            raise ValueError(f"refusing a non-https URL {url!r}")
        async with session_factory().get(url, ssl=ctx, timeout=aiohttp.ClientTimeout(total=5)) as r:
            r.raise_for_status()
            raw = await r.content.read(1 << 20)
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError(f"{url} did not return a JSON object")
            return data

    def for_issuer(issuer: OIDCIssuer) -> Callable[[], Awaitable[Mapping[str, Any]]]:
        async def fetch() -> Mapping[str, Any]:
            uri = issuer.jwks_uri
            if uri is None:
                disco = await get_json(
                    issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
                )
                found = disco.get("jwks_uri")
                if not isinstance(found, str):
                    raise ValueError(f"{issuer.issuer}: discovery document has no jwks_uri")
                uri = found
            return await get_json(uri)

        return fetch

    return for_issuer
