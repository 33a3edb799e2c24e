"""Namespace rules.

Mutating (create/update): a tenant namespace (label `kftenancy.dev/tenant`) carries the
policy's `defaultTolerations` and no whitelist that would forbid the GPU toleration; every
other non-exempt namespace carries the `tolerationsWhitelist` that forbids the GPU
toleration and no default toleration of the GPU taint. Values a user changed or removed
are put back (the seed's Gatekeeper could only add, never correct).

Validating (create/update): only kftenancy's own identity may set, change or remove the
tenant label, because the label is what grants GPU access.
"""

from __future__ import annotations

import json

from kftenancy import constants as c
from kftenancy.admission.context import AdmissionContext, edit_copy, ensure_map, string_map
from kftenancy.admission.review import AdmissionRequest, Decision, allow, deny, mutate
from kftenancy.admission.tolerations import parse_annotation, permitted_by, tolerates
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.tolerations import default_tolerations_annotation, whitelist_annotation


def _same(current: str | None, want: str) -> bool:
    """Equal as toleration lists (so the seed's hand-written JSON stays byte-for-byte)."""
    if current is None:
        return False
    a, b = parse_annotation(current), parse_annotation(want)
    if a is None or b is None:
        return current == want
    return sorted(json.dumps(t, sort_keys=True) for t in a) == sorted(
        json.dumps(t, sort_keys=True) for t in b
    )


def _name(request: AdmissionRequest) -> str:
    meta = (request.object or {}).get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else request.name


def mutate_namespace(
    policy: TenancyPolicySpec, request: AdmissionRequest, ctx: AdmissionContext
) -> Decision:
    obj = request.object
    if obj is None or request.operation not in ("CREATE", "UPDATE"):
        return allow()
    name = _name(request)
    if policy.is_exempt(name) or not policy.gpu.enabled:
        return allow()
    labels = string_map(obj, "labels")
    current = string_map(obj, "annotations")
    after = edit_copy(obj)
    annotations = ensure_map(ensure_map(after, "metadata"), "annotations")
    warnings: list[str] = []
    gpu = policy.gpu.taint.toleration().manifest()

    if c.LABEL_TENANT in labels:
        want = default_tolerations_annotation(policy)
        if not _same(current.get(c.ANN_DEFAULT_TOLERATIONS), want):
            if c.ANN_DEFAULT_TOLERATIONS in current:
                warnings.append(
                    f"kftenancy: restored {c.ANN_DEFAULT_TOLERATIONS} on tenant namespace {name}"
                )
            annotations[c.ANN_DEFAULT_TOLERATIONS] = want
        whitelist = current.get(c.ANN_TOLERATIONS_WHITELIST)
        if whitelist is not None:
            parsed = parse_annotation(whitelist)
            if parsed is None or not permitted_by(parsed, gpu):
                del annotations[c.ANN_TOLERATIONS_WHITELIST]
                warnings.append(
                    f"kftenancy: removed {c.ANN_TOLERATIONS_WHITELIST} from tenant namespace "
                    f"{name}: it forbade the GPU toleration"
                )
    else:
        want = whitelist_annotation(policy)
        if not _same(current.get(c.ANN_TOLERATIONS_WHITELIST), want):
            if c.ANN_TOLERATIONS_WHITELIST in current:
                warnings.append(f"kftenancy: restored {c.ANN_TOLERATIONS_WHITELIST} on {name}")
            annotations[c.ANN_TOLERATIONS_WHITELIST] = want
        defaults = current.get(c.ANN_DEFAULT_TOLERATIONS)
        parsed = parse_annotation(defaults) if defaults is not None else None
        if parsed is not None:
            kept = [t for t in parsed if not tolerates(t, policy.gpu.taint)]
            if len(kept) != len(parsed):
                if kept:
                    annotations[c.ANN_DEFAULT_TOLERATIONS] = json.dumps(
                        kept, separators=(",", ":"), sort_keys=True
                    )
                else:
                    del annotations[c.ANN_DEFAULT_TOLERATIONS]
                warnings.append(
                    f"kftenancy: removed the GPU toleration from {c.ANN_DEFAULT_TOLERATIONS} "
                    f"on {name}: it is not a tenant namespace"
                )
    return mutate(obj, after, *warnings)


def _label(obj: dict[str, object] | None) -> str | None:
    return None if obj is None else string_map(obj, "labels").get(c.LABEL_TENANT)


def validate_namespace(
    policy: TenancyPolicySpec, request: AdmissionRequest, ctx: AdmissionContext
) -> Decision:
    if request.operation not in ("CREATE", "UPDATE"):
        return allow()
    before, after = _label(request.old_object), _label(request.object)
    if before == after or request.user.username in ctx.controller_users:
        return allow()
    if before is None:
        change = f"set it to {after!r}"
    elif after is None:
        change = f"remove it (was {before!r})"
    else:
        change = f"change it from {before!r} to {after!r}"
    return deny(
        "tenant_label",
        f"namespace {_name(request)}: the label {c.LABEL_TENANT} marks a kftenancy tenant "
        f"(it grants GPU access) and only kftenancy may manage it; "
        f"user {request.user.username!r} tried to {change}. Create a Profile instead.",
    )
