"""Onboarding and offboarding of users: one idempotent function each.

`ensure_profile` is what every onboarding source calls (the gateway on a first request,
the controller when an OpenShift User appears, `kftenancy onboard`). It creates the
user's Profile once; a second call is a no-op; a Profile of that name that belongs to a
different user is an error, never a takeover.

`offboard` revokes access at once (the same code the Profile finalizer runs), keeps the
namespace and its data, and deletes the Profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kftenancy import constants as c
from kftenancy.controllers.tenant import PROFILE_API_VERSION, TenantReconciler
from kftenancy.errors import KftenancyError
from kftenancy.kube import ApiError, Kube
from kftenancy.naming import profile_name
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render import profile_for_user

SOURCES = ("gateway", "openshiftUsers", "cli")


class OnboardingError(KftenancyError):
    """The user cannot be onboarded as asked (the message says why)."""


@dataclass(frozen=True)
class OnboardResult:
    name: str
    created: bool


@dataclass(frozen=True)
class OffboardResult:
    name: str
    existed: bool


def owner_of(profile: dict[str, Any]) -> str | None:
    """The user who owns a Profile: `spec.owner` (kind User) is the truth, so an owner
    change moves the Profile to the new owner. The onboarding annotation (the exact id it
    was created for) counts only when the spec names no User."""
    owner = (profile.get("spec") or {}).get("owner") or {}
    if owner.get("kind") == "User" and owner.get("name"):
        return str(owner["name"])
    user_id = ((profile.get("metadata") or {}).get("annotations") or {}).get(c.ANN_USER_ID)
    return str(user_id) if user_id else None


def same_user(policy: TenancyPolicySpec, a: str | None, b: str) -> bool:
    if a is None:
        return False
    return a.casefold() == b.casefold() if policy.naming.fold_case else a == b


async def ensure_profile(
    kube: Kube, policy: TenancyPolicySpec, user_id: str, *, source: str
) -> OnboardResult:
    """Create the user's Profile unless it exists. Idempotent and race-safe (create, not
    apply: of two concurrent callers exactly one creates, the other sees it exists)."""
    if source not in SOURCES:
        raise OnboardingError(f"unknown onboarding source {source!r}; one of {list(SOURCES)}")
    manifest = profile_for_user(policy, user_id)
    name = str(manifest["metadata"]["name"])
    manifest["metadata"].setdefault("annotations", {})[c.ANN_ONBOARDED_BY] = source

    async def existing() -> OnboardResult | None:
        found = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
        if found is None:
            return None
        owner = owner_of(found)
        if not same_user(policy, owner, user_id):
            raise OnboardingError(
                f"Profile {name} exists and belongs to {owner!r}, not to {user_id!r}; "
                "kftenancy never takes over another user's Profile"
            )
        if found["metadata"].get("deletionTimestamp"):
            raise OnboardingError(
                f"Profile {name} of {user_id!r} is being offboarded; onboard again when it is gone"
            )
        return OnboardResult(name, False)

    found = await existing()
    if found is not None:
        return found
    try:
        await kube.create(manifest)
    except ApiError as err:
        if err.status.code != 409:
            raise
        again = await existing()
        if again is None:
            raise OnboardingError(f"Profile {name} changed while onboarding; try again") from err
        return again
    return OnboardResult(name, True)


async def offboard(
    kube: Kube,
    policy: TenancyPolicySpec,
    user_id: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> OffboardResult:
    """Revoke the user's access now, keep (and mark) the namespace, delete the Profile.

    A Profile that belongs to someone else is refused. Safe to repeat.
    """
    name = profile_name(policy, user_id)
    found = await kube.get(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    if found is None or not same_user(policy, owner_of(found), user_id):
        # The user may own a Profile under another name (an owner change moved it to
        # them): look it up by owner. Offboarding is rare, so a full list is fine.
        theirs = [
            p
            for p in await kube.list(PROFILE_API_VERSION, c.PROFILE_KIND)
            if same_user(policy, owner_of(p), user_id)
        ]
        if theirs:
            found = min(theirs, key=lambda p: str(p["metadata"]["name"]))
            name = str(found["metadata"]["name"])
        elif found is not None:
            raise OnboardingError(
                f"Profile {name} belongs to {owner_of(found)!r}, not to {user_id!r}; "
                "not offboarding it"
            )
    # Delete first: from then on the controller offboards too (finalizer) instead of
    # repairing what we revoke. Then revoke here, at once, whether or not it runs.
    if found is not None:
        await kube.delete(PROFILE_API_VERSION, c.PROFILE_KIND, name)
    reconciler = TenantReconciler(kube, lambda: policy, now=now)
    await reconciler.offboard(name, found)
    return OffboardResult(name, found is not None)
