"""Authorization: the SubjectAccessReview the policy's rule asks for (pure).

The seed's rule is "may `get` `pods` in namespace `kubeflow`". The review carries the
user's groups, so group-based RoleBindings count. Results are cached by the shell under
`cache_key` (user and groups; the rule is fixed per policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kftenancy.gateway.identity import Identity
from kftenancy.policy import ResourceRule, TenancyPolicySpec


@dataclass(frozen=True)
class AuthzResult:
    allowed: bool
    detail: str = ""


def describe_rule(rule: ResourceRule) -> str:
    what = f"{rule.resource}.{rule.group}" if rule.group else rule.resource
    where = f" in namespace {rule.namespace}" if rule.namespace else " cluster-wide"
    name = f" named {rule.name}" if rule.name else ""
    return f"{rule.verb} {what}{name}{where}"


def access_review(policy: TenancyPolicySpec, identity: Identity) -> dict[str, Any]:
    """The SubjectAccessReview object (authorization.k8s.io/v1) for this identity."""
    rule = policy.identity.authorization.rule
    attrs: dict[str, Any] = {"verb": rule.verb, "group": rule.group, "resource": rule.resource}
    if rule.namespace:
        attrs["namespace"] = rule.namespace
    if rule.name:
        attrs["name"] = rule.name
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": identity.user,
            "groups": list(identity.groups),
            "resourceAttributes": attrs,
        },
    }


def authz_from_review(policy: TenancyPolicySpec, status: Mapping[str, Any]) -> AuthzResult:
    """Allowed only when the API server says `allowed` and not `denied`."""
    rule = describe_rule(policy.identity.authorization.rule)
    if status.get("allowed") is True and not status.get("denied"):
        return AuthzResult(True, f"may {rule}")
    return AuthzResult(False, f"not allowed to {rule}")


def cache_key(identity: Identity) -> tuple[str, tuple[str, ...]]:
    return (identity.user, tuple(sorted(identity.groups)))


def cache_seconds(policy: TenancyPolicySpec, result: AuthzResult) -> int:
    a = policy.identity.authorization
    return a.allow_cache_seconds if result.allowed else a.deny_cache_seconds
