"""Platform-level objects: `platform_objects(policy)`.

A plain concatenation of per-area functions (CRDs, kftenancy's own namespace and
identities, Kubeflow's roles where Kubeflow is absent, GPU placeholder priority), so
other areas (webhook configurations, gateway mesh config) add a function and a line.

Least privilege: each component's ServiceAccount and ClusterRole come from
`kftenancy.render.rbac`, the one source of the rules (also read by the chart and the CSV).
"""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.crds import policy_crd, profile_crd
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.gateway import mesh_policies
from kftenancy.render.meta import metadata, platform_labels
from kftenancy.render.queues import resource_flavors
from kftenancy.render.rbac import RBAC_API, component_identities
from kftenancy.render.webhooks import platform_webhooks

PLACEHOLDER_PRIORITY = -1  # see priority_classes
_AGGREGATE = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-{}"


def crds(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The policy CRD always; the Profile CRD only where Kubeflow does not ship it."""
    out = [policy_crd()]
    if not policy.platform.kubeflow_installed:
        out.append(profile_crd())
    return out


def own_namespace(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": metadata(policy.platform.namespace, platform_labels("platform")),
        }
    ]


def kubeflow_roles(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """kubeflow-admin/edit/view, only where Kubeflow (which ships them) is absent.

    Same shape as upstream's kubeflow-roles: aggregated ClusterRoles (admin ⊇ edit ⊇ view),
    each fed by a `kubeflow-kubernetes-<role>` role that aggregates Kubernetes' own
    `aggregate-to-<role>` rules, so tenant RoleBindings mean what they mean on a Kubeflow
    cluster, and CRDs that label their roles for admin/edit/view are included. Never
    rendered next to Kubeflow: taking over its roles would mark them ours, and a later
    prune would delete them.
    """
    if policy.platform.kubeflow_installed:
        return []
    labels = platform_labels("kubeflow-roles")
    out: list[dict[str, Any]] = []
    for role, parent in (("admin", None), ("edit", "admin"), ("view", "edit")):
        role_labels = dict(labels)
        if parent is not None:
            role_labels[_AGGREGATE.format(parent)] = "true"
        out.append(_aggregated_role(f"kubeflow-{role}", role_labels, _AGGREGATE.format(role)))
        base_labels = {**labels, _AGGREGATE.format(role): "true"}
        out.append(
            _aggregated_role(
                f"kubeflow-kubernetes-{role}",
                base_labels,
                f"rbac.authorization.k8s.io/aggregate-to-{role}",
            )
        )
    return out


def _aggregated_role(name: str, labels: dict[str, str], selector: str) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        # No `rules`: kube-controller-manager fills them from the aggregation; applying
        # `rules: []` would wipe them on every apply.
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector: "true"}}]},
    }


def priority_classes(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The placeholder PriorityClass for warm GPU headroom.

    Value -1: below the default 0, so that every ordinary pod preempts placeholders without
    a cluster-wide globalDefault class (the seed set one at 1000, changing every pod's
    priority), and at or above the cluster autoscaler's `--expendable-pods-priority-cutoff`
    (default -10; pods *below* it never trigger a scale-up, so placeholders there would keep
    no warm node). -1 is the autoscaler's own overprovisioning example and leaves room for a
    stricter cutoff; `preemptionPolicy: Never` so placeholders never evict anyone.
    """
    if not (policy.gpu.enabled and policy.gpu.pools):
        return []
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": metadata(c.PRIORITY_CLASS_PLACEHOLDER, platform_labels("capacity")),
            "value": PLACEHOLDER_PRIORITY,
            "preemptionPolicy": "Never",
            "description": "kftenancy GPU placeholder pods: preempted by any real workload.",
        }
    ]


def platform_objects(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """Every cluster-level object kftenancy needs, CRDs first."""
    return [
        *crds(policy),
        *own_namespace(policy),
        *component_identities(policy),
        *kubeflow_roles(policy),
        *priority_classes(policy),
        *resource_flavors(policy),
        *platform_webhooks(policy),
        *mesh_policies(policy),
    ]
