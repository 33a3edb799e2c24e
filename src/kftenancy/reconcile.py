"""Pure reconciliation decisions: what to create, update and prune, and what to report.

Everything here is a function on plain dicts (manifests) plus explicit inputs such as
`now`; no I/O. The controller, `kftenancy plan` and the tests all use these functions.

The planner compares only fields kftenancy owns:

* every field the renderer sets must have that value on the live object (the server may
  add fields, defaults inside list items, or normalise quantities: that is not drift);
* every field the live object's `managedFields` says our field manager owns must still be
  desired (otherwise an apply is needed to drop it).

Objects we created carry our ownership labels; only those are ever pruned, and never a
Namespace (it holds the tenant's data: see `offboard_objects` and `expired_namespaces`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from kftenancy import constants as c

Obj = dict[str, Any]
ObjectKey = tuple[str, str, str, str]  # (API group, kind, namespace or "", name)
FieldPath = tuple[str, ...]

NAMESPACE_KEY_KIND = ("", "Namespace")
# Objects that grant access to a tenant: removed at once when a tenant is offboarded.
ACCESS_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("security.istio.io", "AuthorizationPolicy"),
    }
)
# Removed at once when a tenant is offboarded too: its Kueue queues (admitting nothing more;
# workloads and their data stay in the namespace).
OFFBOARD_REMOVED_KINDS: frozenset[tuple[str, str]] = ACCESS_KINDS | frozenset(
    {(c.KUEUE_GROUP, "ClusterQueue"), (c.KUEUE_GROUP, "LocalQueue")}
)
# Never deleted by pruning: losing one loses user data.
PROTECTED_KINDS: frozenset[tuple[str, str]] = frozenset({NAMESPACE_KEY_KIND})
# Apply order: containers before contents.
_KIND_RANK = {"Namespace": 0, "ServiceAccount": 1}


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (
        group_of(str(obj["apiVersion"])),
        str(obj["kind"]),
        str(meta.get("namespace") or ""),
        str(meta["name"]),
    )


def describe(obj_or_key: Mapping[str, Any] | ObjectKey) -> str:
    """`Kind namespace/name` (or `Kind name`), how messages name an object."""
    key = obj_or_key if isinstance(obj_or_key, tuple) else key_of(obj_or_key)
    _, kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def is_owned(obj: Mapping[str, Any], tenant: str | None = None) -> bool:
    """Carries our ownership labels (and, if given, belongs to this tenant)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(c.LABEL_MANAGED_BY) != c.MANAGED_BY:
        return False
    return tenant is None or labels.get(c.LABEL_TENANT) == tenant


def written_by(
    obj: Mapping[str, Any],
    managers: Collection[str] = (c.FIELD_MANAGER, c.FINALIZER_FIELD_MANAGER),
) -> bool:
    """True when the newest change recorded in managedFields is an Apply by one of
    `managers` (ours): a watch event for it is our own write coming back (a create by
    onboarding is not). Never for an object being deleted (deletion sets
    deletionTimestamp without a managedFields entry)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    entries = meta.get("managedFields") or []
    if not entries:
        return False
    newest = max(str(e.get("time") or "") for e in entries)
    return all(
        e.get("manager") in managers and e.get("operation") == "Apply"
        for e in entries
        if str(e.get("time") or "") == newest
    )


# ---------------------------------------------------------------------------- field comparison


def _quantity(value: str) -> Decimal | None:
    suffixes: dict[str, Decimal] = {
        **{
            s: Decimal(2) ** (10 * (i + 1))
            for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))
        },
        **{
            s: Decimal(10) ** e
            for s, e in (
                ("n", -9),
                ("u", -6),
                ("m", -3),
                ("k", 3),
                ("M", 6),
                ("G", 9),
                ("T", 12),
                ("P", 15),
                ("E", 18),
            )
        },
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], suffixes[suffix]
            break
    else:
        number, factor = value, Decimal(1)
    try:
        return Decimal(number) * factor
    except (InvalidOperation, ValueError):
        return None


def quantity_value(value: str) -> Decimal | None:
    """A Kubernetes quantity ("500m", "16Gi", "2") as a number; None if it is not one."""
    return _quantity(value)


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, str) and isinstance(have, str | int) and not isinstance(have, bool):
        # The API server canonicalises quantities ("1000m" → "1", "0.5" → "500m").
        a, b = _quantity(want), _quantity(str(have))
        return a is not None and a == b
    return False


def value_drift(want: Any, have: Any, path: FieldPath = ()) -> list[FieldPath]:
    """Paths where `have` does not contain `want` (maps: subset; lists: same length,
    item-wise subset; scalars: equal, quantities by value)."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [path]
        out: list[FieldPath] = []
        for k, v in want.items():
            if v is None:
                continue
            if k not in have:
                out.append((*path, k))
            else:
                out.extend(value_drift(v, have[k], (*path, k)))
        return out
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [path]
        for w, h in zip(want, have, strict=True):
            if value_drift(w, h):
                return [path]
        return []
    return [] if _scalar_equal(want, have) else [path]


def desired_paths(obj: Mapping[str, Any]) -> set[FieldPath]:
    """Leaf field paths a manifest sets (lists and empty maps are leaves), excluding the
    identity fields (apiVersion, kind, metadata.name/namespace) that SSA does not track."""
    out: set[FieldPath] = set()

    def walk(value: Any, path: FieldPath) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                if v is not None:
                    walk(v, (*path, str(k)))
        else:
            out.add(path)

    for k, v in obj.items():
        if k in ("apiVersion", "kind", "status") or v is None:
            continue
        if k == "metadata":
            for mk, mv in v.items():
                if mk not in ("name", "namespace", "generateName") and mv is not None:
                    walk(mv, ("metadata", mk))
        else:
            walk(v, (k,))
    return out


def owned_paths(obj: Mapping[str, Any], manager: str = c.FIELD_MANAGER) -> set[FieldPath]:
    """Leaf field paths `manager` owns through Apply, from the object's managedFields.

    List contents (`k:`, `v:`, `i:` entries) are not descended into: a list is one leaf,
    matching `desired_paths`.
    """
    out: set[FieldPath] = set()

    def walk(fields: Mapping[str, Any], path: FieldPath) -> None:
        children = {k: v for k, v in fields.items() if k.startswith("f:")}
        if not children:
            if path:
                out.add(path)
            return
        for k, v in children.items():
            walk(v or {}, (*path, k[2:]))

    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            if entry.get("subresource"):
                continue
            walk(entry.get("fieldsV1") or {}, ())
    return out


def _related(a: FieldPath, b: FieldPath) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _server_managed(desired: Mapping[str, Any]) -> set[str]:
    """Top-level fields the API server's own controllers fill in, whatever we send: the
    rules of an aggregated ClusterRole belong to the aggregation controller."""
    if desired.get("kind") == "ClusterRole" and desired.get("aggregationRule"):
        return {"rules"}
    return set()


def drift(
    desired: Mapping[str, Any], observed: Mapping[str, Any], manager: str = c.FIELD_MANAGER
) -> list[str]:
    """Dotted paths of fields we own that differ from what we want; [] means in sync."""
    skip = {"apiVersion", "kind", "status", *_server_managed(desired)}
    paths = value_drift({k: v for k, v in desired.items() if k not in skip}, observed)
    wanted = desired_paths(desired)
    for owned in sorted(owned_paths(observed, manager)):
        if owned[0] in skip:
            continue
        if not any(_related(owned, w) for w in wanted):
            paths.append(owned)
    return sorted({".".join(p) for p in paths})


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Change:
    desired: Obj
    observed: Obj
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What to do to make the cluster match `desired`: each list in apply order."""

    create: tuple[Obj, ...] = ()
    update: tuple[Change, ...] = ()
    prune: tuple[Obj, ...] = ()
    unchanged: tuple[Obj, ...] = ()

    @property
    def writes(self) -> int:
        return len(self.create) + len(self.update) + len(self.prune)

    @property
    def in_sync(self) -> bool:
        return self.writes == 0

    def summary(self) -> dict[str, list[str]]:
        return {
            "create": [describe(o) for o in self.create],
            "update": [f"{describe(ch.desired)} ({', '.join(ch.fields)})" for ch in self.update],
            "prune": [describe(o) for o in self.prune],
        }


def _rank(obj: Mapping[str, Any]) -> int:
    return _KIND_RANK.get(str(obj.get("kind")), 2)


def plan(
    desired: Sequence[Obj],
    observed: Iterable[Obj],
    *,
    manager: str = c.FIELD_MANAGER,
    protected: frozenset[tuple[str, str]] = PROTECTED_KINDS,
) -> Plan:
    """Compare desired manifests with observed objects.

    `observed` may hold anything found (by our labels or by name); only objects carrying
    our ownership labels are ever pruned, and never a protected kind.
    Raises ValueError if `desired` names one object twice (a renderer bug).
    """
    wanted: dict[ObjectKey, Obj] = {}
    for obj in desired:
        key = key_of(obj)
        if key in wanted:
            raise ValueError(f"desired objects name {describe(key)} twice")
        wanted[key] = obj
    seen: dict[ObjectKey, Obj] = {}
    for obj in observed:
        seen.setdefault(key_of(obj), obj)

    create: list[Obj] = []
    update: list[Change] = []
    unchanged: list[Obj] = []
    for key, want in wanted.items():
        have = seen.get(key)
        if have is None:
            create.append(want)
            continue
        fields = drift(want, have, manager)
        if fields:
            update.append(Change(want, have, tuple(fields)))
        else:
            unchanged.append(want)
    prune = [
        obj
        for key, obj in seen.items()
        if key not in wanted and is_owned(obj) and (key[0], key[1]) not in protected
    ]
    return Plan(
        create=tuple(sorted(create, key=_rank)),
        update=tuple(sorted(update, key=lambda ch: _rank(ch.desired))),
        prune=tuple(sorted(prune, key=_rank, reverse=True)),
        unchanged=tuple(unchanged),
    )


# ---------------------------------------------------------------------------- ownership


@dataclass(frozen=True)
class NamespaceVerdict:
    allowed: bool
    adopting: bool = False
    reason: str = ""
    message: str = ""


def _owned_by_profile(namespace: Mapping[str, Any], profile: str, uid: str | None) -> bool:
    for ref in (namespace.get("metadata") or {}).get("ownerReferences") or []:
        if (
            ref.get("kind") == c.PROFILE_KIND
            and str(ref.get("apiVersion", "")).startswith(f"{c.KUBEFLOW_GROUP}/")
            and ref.get("name") == profile
            and (uid is None or ref.get("uid") == uid)
        ):
            return True
    return False


def namespace_verdict(
    namespace: Mapping[str, Any] | None,
    profile: str,
    *,
    upstream: bool = False,
    profile_uid: str | None = None,
) -> NamespaceVerdict:
    """May Profile `profile` manage this namespace?

    Yes if it does not exist yet, or kftenancy created it for this Profile, or its
    owner opted in with the annotation `kftenancy.dev/adopt: <profile>`. Otherwise no.
    With `upstream` (Kubeflow's profile-controller creates namespaces), the namespace
    must exist and be owned (ownerReference) by this Profile; until then we wait.
    """
    if upstream:
        if namespace is None:
            return NamespaceVerdict(
                False,
                reason="WaitingForNamespace",
                message=(
                    f"waiting for Kubeflow's profile-controller to create namespace {profile} "
                    "(platform.kubeflowProfileController is true)"
                ),
            )
        if _owned_by_profile(namespace, profile, profile_uid) or is_owned(namespace, profile):
            return NamespaceVerdict(True)
    if namespace is None:
        return NamespaceVerdict(True)
    meta = namespace.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if is_owned(namespace, profile):
        return NamespaceVerdict(True)
    if annotations.get(c.ANN_ADOPT) == profile:
        return NamespaceVerdict(True, adopting=True, reason="Adopted")
    if is_owned(namespace):
        other = labels.get(c.LABEL_TENANT, "?")
        return NamespaceVerdict(
            False,
            reason="NamespaceOwnedByOtherTenant",
            message=(
                f"namespace {profile} belongs to kftenancy tenant {other!r}, "
                f"not to Profile {profile}"
            ),
        )
    return NamespaceVerdict(
        False,
        reason="NamespaceNotOwned",
        message=(
            f"namespace {profile} exists and was not created by kftenancy for Profile "
            f"{profile}; to hand it over, its owner or an admin annotates it "
            f"{c.ANN_ADOPT}={profile}"
        ),
    )


def owned_subset(obj: Mapping[str, Any], manager: str = c.FIELD_MANAGER) -> Obj:
    """The manifest of only the fields `manager` owns on a live object (plus identity).

    Applying it back is a no-op; it is what we keep applying when we cannot render.
    """
    out: Obj = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {}}
    meta = obj.get("metadata") or {}
    out["metadata"]["name"] = meta["name"]
    if meta.get("namespace"):
        out["metadata"]["namespace"] = meta["namespace"]
    for path in owned_paths(obj, manager):
        src: Any = obj
        for part in path:
            if not isinstance(src, Mapping) or part not in src:
                break
            src = src[part]
        else:
            dst = out
            for part in path[:-1]:
                dst = dst.setdefault(part, {})
            dst[path[-1]] = src
    return out


# ---------------------------------------------------------------------------- offboarding


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def offboard_marks(
    previous: Mapping[str, str], *, now: datetime, retention_days: int | None
) -> dict[str, str]:
    """The namespace annotations of an offboarded tenant. An earlier offboarding time is
    kept (offboarding twice does not extend retention); no delete-after = keep forever."""
    at = previous.get(c.ANN_OFFBOARDED_AT)
    when = parse_time(at) if at else None
    when = when or now
    marks = {c.ANN_OFFBOARDED_AT: _rfc3339(when)}
    if retention_days is not None:
        marks[c.ANN_DELETE_AFTER] = _rfc3339(when + timedelta(days=retention_days))
    return marks


def offboard_objects(
    kept: Sequence[Obj],
    namespace: Mapping[str, Any] | None,
    *,
    now: datetime,
    retention_days: int | None,
) -> list[Obj]:
    """Desired objects of an offboarded tenant: `kept` minus everything granting access
    (and its queues), and the namespace (as we manage it) marked with offboarded-at /
    delete-after."""
    out = [o for o in kept if (group_of(o["apiVersion"]), o["kind"]) not in OFFBOARD_REMOVED_KINDS]
    ns_index = next((i for i, o in enumerate(out) if o["kind"] == "Namespace"), None)
    base: Obj | None = out[ns_index] if ns_index is not None else None
    if base is None and namespace is not None:
        base = owned_subset(namespace)
    if base is None:
        return out
    previous = ((namespace or {}).get("metadata") or {}).get("annotations") or {}
    marked = json.loads(json.dumps(base))
    marked["metadata"].setdefault("annotations", {}).update(
        offboard_marks(previous, now=now, retention_days=retention_days)
    )
    if ns_index is None:
        return [marked, *out]
    out[ns_index] = marked
    return out


def is_offboarded(namespace: Mapping[str, Any]) -> bool:
    return c.ANN_OFFBOARDED_AT in ((namespace.get("metadata") or {}).get("annotations") or {})


def expired_namespaces(
    namespaces: Iterable[Mapping[str, Any]], live_profiles: Iterable[str], *, now: datetime
) -> list[str]:
    """Offboarded namespaces of ours whose retention ended and whose Profile is gone."""
    live = set(live_profiles)
    out = []
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        after = (meta.get("annotations") or {}).get(c.ANN_DELETE_AFTER)
        if not is_owned(ns) or not after or meta.get("name") in live:
            continue
        deadline = parse_time(after)
        if deadline is not None and deadline <= now:
            out.append(str(meta["name"]))
    return sorted(out)


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


_COMPARED = ("type", "status", "reason", "message")


def conditions_status(
    conditions: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    generation: int | None,
) -> list[Obj]:
    """Kubernetes-style condition dicts; lastTransitionTime moves only when status flips."""
    before = {str(p.get("type")): p for p in previous}
    out = []
    for cond in conditions:
        status = "True" if cond.status else "False"
        old = before.get(cond.type)
        transition = (
            str(old["lastTransitionTime"])
            if old and old.get("status") == status and old.get("lastTransitionTime")
            else _rfc3339(now)
        )
        item: Obj = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out


def conditions_changed(new: Sequence[Mapping[str, Any]], old: Sequence[Mapping[str, Any]]) -> bool:
    """Whether recording `new` would change what `old` says (times ignored)."""

    def norm(items: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(str(i.get(k, "")) for k in (*_COMPARED, "observedGeneration")) for i in items
        )

    return norm(new) != norm(old)
