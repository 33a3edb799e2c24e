"""Reconcile one tenant (a Profile) into exactly the renderer's objects; offboard one.

This is the thin shell around `kftenancy.reconcile`: read the Profile, the namespace and
the objects carrying our labels; ask the pure planner what differs; apply or delete just
that; record the outcome as status conditions and Events. Every step can run again at any
time and converge, so a crash half-way leaves nothing a later run cannot finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from kftenancy import constants as c
from kftenancy.errors import KftenancyError
from kftenancy.kube import ApiError, Kube, UnknownKind
from kftenancy.policy import TenancyPolicySpec
from kftenancy.profile import ProfileError, parse_profile
from kftenancy.reconcile import (
    Condition,
    Obj,
    Plan,
    conditions_changed,
    conditions_status,
    describe,
    is_owned,
    namespace_verdict,
    offboard_objects,
    plan,
)
from kftenancy.render import tenant_objects

log = logging.getLogger("kftenancy.controller")

PROFILE_API_VERSION = f"{c.KUBEFLOW_GROUP}/{c.PROFILE_VERSIONS[0]}"
READY = "Ready"

# Kinds the renderer may produce: listed (by our labels) on every reconcile so that an
# object whose kind the renderer stopped producing is still found and pruned.
KNOWN_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("maistra.io/v1", "ServiceMeshMember"),
    (c.KUEUE_API, "ClusterQueue"),
    (c.KUEUE_API, "LocalQueue"),
)


class ReconcileError(KftenancyError):
    """A reconcile that must be retried (API error, conflict); the message names the object."""


@dataclass(frozen=True)
class Result:
    """What one reconcile did. `ok` False means: retry with backoff."""

    name: str
    ok: bool
    reason: str
    plan: Plan | None = None
    status_written: bool = False


def _reason_of(err: Exception) -> str:
    if isinstance(err, ApiError):
        code = err.status.code
        return {409: "Conflict", 403: "Forbidden", 422: "Invalid"}.get(code or 0, "ApiError")
    if isinstance(err, UnknownKind):
        return "KindNotServed"
    return "Error"


def _message_of(err: Exception) -> str:
    if isinstance(err, ApiError):
        return str(err.status.message or err)
    return str(err)


class TenantReconciler:
    """Reconciles and offboards tenants. One per process; safe to call concurrently for
    different names (the work queue never runs one name twice at once)."""

    def __init__(
        self,
        kube: Kube,
        policy: Callable[[], TenancyPolicySpec],
        *,
        now: Callable[[], datetime],
        event_namespace: str = "default",
        policy_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.kube = kube
        self._policy_error = policy_error

        self._policy = policy
        self._now = now
        self._event_namespace = event_namespace

    # ------------------------------------------------------------------ reading

    async def observe(self, tenant: str, desired: Sequence[Obj]) -> list[Obj]:
        kinds = dict.fromkeys([(o["apiVersion"], o["kind"]) for o in desired] + list(KNOWN_KINDS))
        return await self.kube.list_owned(kinds, tenant=tenant)

    async def desired_for(self, profile_obj: Obj) -> list[Obj]:
        """The renderer's objects for a Profile manifest (ProfileError if it is invalid)."""
        return list(tenant_objects(self._policy(), parse_profile(profile_obj)))

    async def plan_for(self, profile_obj: Obj) -> tuple[Plan, list[Obj]]:
        """What a reconcile would do now, without writing (for `kftenancy plan`)."""
        name = profile_obj["metadata"]["name"]
        desired = await self.desired_for(profile_obj)
        observed = await self.observe(name, desired)
        ns = await self.kube.get("v1", "Namespace", name)
        if ns is not None and not is_owned(ns):
            observed.append(ns)
        return plan(desired, observed), desired

    # ------------------------------------------------------------------ writing

    async def execute(self, p: Plan) -> list[str]:
        """Apply creates/updates (namespaces first) and prunes; return failures by object."""
        failures: list[str] = []

        async def guarded(obj: Obj, action: str) -> None:
            try:
                if action == "delete":
                    meta = obj["metadata"]
                    await self.kube.delete(
                        obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")
                    )
                else:
                    await self.kube.apply(obj)
            except (ApiError, UnknownKind) as err:
                failures.append(f"{describe(obj)}: {_message_of(err)}")

        writes = [*p.create, *(ch.desired for ch in p.update)]
        first = [o for o in writes if o["kind"] == "Namespace"]
        rest = [o for o in writes if o["kind"] != "Namespace"]
        for obj in first:
            await guarded(obj, "apply")
        if failures:
            return failures
        await asyncio.gather(*(guarded(o, "apply") for o in rest))
        await asyncio.gather(*(guarded(o, "delete") for o in p.prune))
        return failures

    async def _set_finalizer(self, profile: Obj, present: bool) -> None:
        # Under a manager of its own (see c.FINALIZER_FIELD_MANAGER): this apply must
        # never drop Profile fields someone applied as FIELD_MANAGER.
        meta = profile["metadata"]
        if (c.FINALIZER in (meta.get("finalizers") or [])) == present:
            return
        body: Obj = {
            "apiVersion": profile["apiVersion"],
            "kind": profile["kind"],
            "metadata": {
                "name": meta["name"],
                **({"finalizers": [c.FINALIZER]} if present else {}),
            },
        }
        if present:
            await self.kube.apply_as(body, c.FINALIZER_FIELD_MANAGER)
            return
        try:
            await self.kube.apply_as(body, c.FINALIZER_FIELD_MANAGER)
        except ApiError as err:
            if err.status.code != 404:
                raise
        # If our finalizer was added by a different operation or manager (not this Apply;
        # e.g. as FIELD_MANAGER by an older kftenancy), apply cannot drop it: remove it
        # from the list explicitly.
        current = await self.kube.get(profile["apiVersion"], profile["kind"], meta["name"])
        if current and c.FINALIZER in (current["metadata"].get("finalizers") or []):
            rest = [f for f in current["metadata"]["finalizers"] if f != c.FINALIZER]
            await self.kube.patch_merge(
                profile["apiVersion"],
                profile["kind"],
                meta["name"],
                {
                    "metadata": {
                        "finalizers": rest,
                        "resourceVersion": current["metadata"]["resourceVersion"],
                    }
                },
            )

    async def record(
        self, profile: Obj, conditions: Sequence[Condition], *, event: bool = True
    ) -> bool:
        """Write the conditions to the Profile's status if they changed (and post an Event
        on every change). Returns whether anything was written."""
        meta = profile["metadata"]
        previous = (profile.get("status") or {}).get("conditions") or []
        new = conditions_status(
            conditions, previous, now=self._now(), generation=meta.get("generation")
        )
        if not conditions_changed(new, previous):
            return False
        await self.kube.apply_status(
            {
                "apiVersion": profile["apiVersion"],
                "kind": profile["kind"],
                "metadata": {"name": meta["name"]},
                "status": {"conditions": new},
            }
        )
        if event:
            ready = next((cd for cd in conditions if cd.type == READY), conditions[0])
            await self.event(
                profile,
                reason=ready.reason,
                message=ready.message or ready.reason,
                warning=not ready.status,
            )
        return True

    async def event(self, obj: Obj, *, reason: str, message: str, warning: bool = False) -> None:
        try:
            await self.kube.event(
                obj,
                reason=reason,
                message=message,
                type_="Warning" if warning else "Normal",
                namespace=self._event_namespace,
            )
        except ApiError as err:  # an Event is best effort; never fail a reconcile on it
            log.warning("could not post event %s: %s", reason, _message_of(err))

    # ------------------------------------------------------------------ the reconcile

    async def reconcile(self, name: str) -> Result:
        """Bring tenant `name` to its desired state. Never raises for bad input: it becomes
        a condition and an Event; API failures return ok=False for a retry with backoff."""
        profile = await self.kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
        if profile is None:
            return Result(name, True, "Gone")
        if profile["metadata"].get("deletionTimestamp"):
            if c.FINALIZER in (profile["metadata"].get("finalizers") or []):
                await self.offboard(name, profile)
                await self._set_finalizer(profile, present=False)
            return Result(name, True, "Offboarded")
        policy_error = self._policy_error()
        if policy_error is not None:
            await self.record(profile, [Condition(READY, False, "InvalidPolicy", policy_error)])
            return Result(name, False, "InvalidPolicy")

        try:
            desired = await self.desired_for(profile)
        except ProfileError as err:
            written = await self.record(profile, [Condition(READY, False, "InvalidSpec", str(err))])
            return Result(name, True, "InvalidSpec", status_written=written)
        except (KftenancyError, ValueError) as err:
            written = await self.record(
                profile, [Condition(READY, False, "RenderFailed", str(err))]
            )
            return Result(name, True, "RenderFailed", status_written=written)

        ns = await self.kube.get("v1", "Namespace", name)
        upstream = self._policy().platform.kubeflow_profile_controller
        verdict = namespace_verdict(
            ns, name, upstream=upstream, profile_uid=profile["metadata"].get("uid")
        )
        if not verdict.allowed:
            written = await self.record(
                profile, [Condition(READY, False, verdict.reason, verdict.message)]
            )
            # Waiting for upstream's namespace resolves itself: retry with backoff.
            ok = verdict.reason != "WaitingForNamespace"
            return Result(name, ok, verdict.reason, status_written=written)

        await self._set_finalizer(profile, present=True)
        # No namespace yet: nothing namespaced of ours can exist, so skip the lists.
        observed = await self.observe(name, desired) if ns is not None else []
        if ns is not None and not is_owned(ns) and verdict.adopting:
            observed.append(ns)  # adopting: compare with what is there
        try:
            p = plan(desired, observed)
        except ValueError as err:
            written = await self.record(
                profile, [Condition(READY, False, "RenderFailed", str(err))]
            )
            return Result(name, True, "RenderFailed", status_written=written)
        if verdict.adopting and p.writes:
            await self.event(
                profile,
                reason="Adopted",
                message=f"adopting namespace {name} (opt-in annotation {c.ANN_ADOPT})",
            )
        try:
            failures = await self.execute(p)
        except ApiError as err:
            failures = [_message_of(err)]
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            reason = "ApplyFailed"
            await self.record(profile, [Condition(READY, False, reason, failures[0] + more)])
            log.warning("tenant %s: %d object(s) failed: %s", name, len(failures), failures[0])
            return Result(name, False, reason, plan=p)
        written = await self.record(
            profile, [Condition(READY, True, READY, f"workspace complete: {len(desired)} objects")]
        )
        return Result(name, True, READY, plan=p, status_written=written)

    async def offboard(self, name: str, profile: Obj | None) -> Plan:
        """Revoke access at once (bindings, authorization policies), keep the namespace and
        its data, mark it offboarded-at / delete-after. Idempotent."""
        policy = self._policy()
        ns = await self.kube.get("v1", "Namespace", name)
        kept: list[Obj] = []
        if profile is not None:
            try:
                kept = await self.desired_for(profile)
            except (KftenancyError, ValueError):
                kept = []
        if ns is not None and not is_owned(ns, name):
            ns = None  # never mark a namespace that is not ours
            kept = [o for o in kept if o["kind"] != "Namespace"]
        desired = offboard_objects(
            kept, ns, now=self._now(), retention_days=policy.offboarding.retention_days
        )
        observed = await self.observe(name, desired)
        p = plan(desired, observed)
        failures = await self.execute(p)
        if failures:
            raise ReconcileError(f"offboarding {name}: {failures[0]}")
        log.info("tenant %s offboarded: access revoked, namespace kept", name)
        return p
