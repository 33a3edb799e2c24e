"""The PodTolerationRestriction annotations, shared by the renderer and the webhook.

Tenant namespaces get `defaultTolerations` (their pods tolerate the GPU taint without
asking). Every other, non-exempt namespace gets a `tolerationsWhitelist` that lists the
cluster's automatic tolerations (not-ready, unreachable, memory-pressure) and never the
GPU taint: a present-but-empty whitelist would mean "no restriction" (kubernetes#64616).
Both values are compact JSON with a stable key order, so that re-rendering produces the
same string and a server-side apply finds nothing to change.
"""

from __future__ import annotations

import json
from typing import Any

from kftenancy.policy import TenancyPolicySpec


def _dump(tolerations: list[dict[str, Any]]) -> str:
    return json.dumps(tolerations, separators=(",", ":"), sort_keys=True)


def default_tolerations(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The tolerations a tenant's pods get by default (the GPU taint), [] if GPU is off."""
    if not policy.gpu.enabled:
        return []
    return [policy.gpu.taint.toleration().manifest()]


def default_tolerations_annotation(policy: TenancyPolicySpec) -> str:
    """Value of scheduler.alpha.kubernetes.io/defaultTolerations for tenant namespaces."""
    return _dump(default_tolerations(policy))


def whitelist_annotation(policy: TenancyPolicySpec) -> str:
    """Value of scheduler.alpha.kubernetes.io/tolerationsWhitelist for other namespaces."""
    return _dump([t.manifest() for t in policy.gpu.allowed_tolerations])
