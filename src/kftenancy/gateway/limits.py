"""Limits on unauthenticated work: token buckets with the clock passed in (pure).

A bearer token the gateway has not seen costs a TokenReview on the API server before we
know who sent it, and a new user costs an onboarding call. Without a limit, a flood of
random tokens becomes a flood of TokenReviews. `WorkLimiter` admits such work only when
both the caller's bucket and the global bucket hold a token; otherwise it answers with
how long to wait, and the gateway refuses at once (429 with `Retry-After`) instead of
queueing calls on the API server. Work that needs no remote call (cached identities,
verified OIDC signatures, the trusted proxy) never touches a bucket, so legitimate users
with a warm cache are unaffected by a flood.

Every function takes `now` (seconds, any monotonic origin); nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens refill continuously up to `burst`."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_second > 0 and burst >= 1, got {self}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`"RATE/BURST"`, e.g. `"2/20"` (2 per second, bursts of 20)."""
        rate, sep, burst = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(float(rate), float(burst))
        except ValueError:
            raise ValueError(
                f"{text!r} is not RATE/BURST (per second / burst, both > 0, e.g. 2/20)"
            ) from None

    def __str__(self) -> str:
        return f"{self.per_second:g}/{self.burst:g}"


class TokenBucket:
    """Starts full. `available(now)` refills and returns the tokens held; `wait(now)` is
    the seconds until one token is there (0 when one is)."""

    __slots__ = ("rate", "stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.stamp = now

    def available(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(
                self.rate.burst, self.tokens + (now - self.stamp) * self.rate.per_second
            )
            self.stamp = now
        return self.tokens

    def wait(self, now: float) -> float:
        missing = 1.0 - self.available(now)
        return max(0.0, missing / self.rate.per_second)

    def take(self, now: float) -> None:
        self.available(now)
        self.tokens -= 1.0


@dataclass(frozen=True)
class Throttled:
    """Work refused: `scope` is `client`, `global` or `inflight`; `retry_after` whole
    seconds (>= 1) until it is worth trying again."""

    scope: str
    retry_after: int


def _seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class WorkLimiter:
    """Admit one unit of work for `client` when its bucket and the global bucket both
    hold a token (both are then charged; a refused call charges neither, so a flooding
    client cannot drain the global budget beyond its own rate).

    Per-client buckets are kept for at most `max_clients` clients (least recently used
    evicted; an evicted client comes back with a full bucket, which the global bucket
    still bounds). `per_client=None` means only the global limit applies.
    """

    def __init__(
        self, global_rate: Rate, per_client: Rate | None = None, *, max_clients: int = 10_000
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.global_rate = global_rate
        self.per_client = per_client
        self.max_clients = max_clients
        self._global: TokenBucket | None = None
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()

    def _client_bucket(self, client: str, now: float) -> TokenBucket | None:
        if self.per_client is None:
            return None
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = TokenBucket(self.per_client, now)
            self._clients[client] = bucket
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        return bucket

    def admit(self, client: str, now: float) -> Throttled | None:
        """None when the work may run (and is charged); else why not and for how long."""
        if self._global is None:
            self._global = TokenBucket(self.global_rate, now)
        own = self._client_bucket(client, now)
        if own is not None and own.available(now) < 1.0:
            return Throttled("client", _seconds(own.wait(now)))
        if self._global.available(now) < 1.0:
            return Throttled("global", _seconds(self._global.wait(now)))
        if own is not None:
            own.take(now)
        self._global.take(now)
        return None

    def __len__(self) -> int:
        return len(self._clients)


class InFlight:
    """A count of calls running now; callers refuse (do not queue) new ones when `full`."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight limit must be >= 1, got {limit}")
        self.limit = limit
        self.current = 0

    @property
    def full(self) -> bool:
        return self.current >= self.limit

    def enter(self) -> None:
        self.current += 1

    def leave(self) -> None:
        self.current -= 1


@dataclass(frozen=True)
class FloodLimits:
    """The gateway's limits on unauthenticated and first-time work (see docs/gateway.md).

    - TokenReviews (bearer tokens not in the cache): per client address and global rate,
      and at most `token_review_inflight` outstanding at once.
    - Onboarding (first request of a user): global rate only; per user it is already
      one call at a time and remembered once it succeeded.
    - JWKS refreshes are limited in `jwt_verify.JWKSCache` (one per issuer per 10 s).
    """

    token_review_per_client: Rate = Rate(2, 20)
    token_review_global: Rate = Rate(20, 40)
    token_review_inflight: int = 16
    onboarding_global: Rate = Rate(20, 200)
    max_clients: int = 10_000


def client_address(headers_xff: str | None, peer: str | None, *, trust_xff: bool) -> str:
    """The address a limit is charged to. Behind Envoy (ext-authz) every check comes from
    Envoy itself, so the client is the last `x-forwarded-for` entry: the address Envoy
    saw, which Envoy appends itself (`use_remote_address`, the Istio and Envoy Gateway
    default); entries before it are the client's own claims and never used. Without
    `trust_xff` (proxy mode: clients connect directly) it is the peer address."""
    if trust_xff and headers_xff:
        last = headers_xff.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return peer or "-"
