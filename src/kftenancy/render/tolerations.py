"""The PodTolerationRestriction namespace annotations, rendered from the policy.

Tenant namespaces get `defaultTolerations` (the GPU taint's toleration, so their pods
land on GPU nodes without asking); every other non-exempt namespace gets a
`tolerationsWhitelist` that lists the cluster's automatic tolerations and never the GPU
taint (an empty whitelist would mean "no restriction", kubernetes issue 64616).
"""

from __future__ import annotations

import json
from typing import Any

from kftenancy.policy import TenancyPolicySpec


def _compact(value: list[dict[str, Any]]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def default_tolerations_annotation(policy: TenancyPolicySpec) -> str:
    """Value of `scheduler.alpha.kubernetes.io/defaultTolerations` on tenant namespaces."""
    return _compact([policy.gpu.taint.toleration().manifest()])


def whitelist_annotation(policy: TenancyPolicySpec) -> str:
    """Value of `scheduler.alpha.kubernetes.io/tolerationsWhitelist` on other namespaces."""
    return _compact([t.manifest() for t in policy.gpu.allowed_tolerations])
