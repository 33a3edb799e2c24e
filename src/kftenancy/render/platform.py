"""Platform-level objects: `platform_objects(policy)`.

A plain concatenation of per-area functions (CRDs, kftenancy's own namespace and
identities, Kubeflow's roles where Kubeflow is absent, GPU placeholder priority), so
other areas (webhook configurations, gateway mesh config) add a function and a line.

Least privilege: each component gets exactly the verbs and resources its code uses, and
the policy decides some of them (no namespace `delete` unless a retention period is set,
no mesh kinds without a mesh, no OpenShift kinds off OpenShift).
"""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.crds import policy_crd, profile_crd
from kftenancy.policy import Flavor, MeshFlavor, OnboardingSource, TenancyPolicySpec
from kftenancy.render.gateway import mesh_policies
from kftenancy.render.meta import metadata, platform_labels
from kftenancy.render.webhooks import platform_webhooks

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API = f"{RBAC_GROUP}/v1"
_READ = ["get", "list", "watch"]
_MANAGE = ["get", "list", "watch", "create", "patch", "delete"]
_AGGREGATE = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-{}"


def _rule(group: str, resources: list[str], verbs: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **extra}


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


def controller_rules(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """What the tenant controller reads and writes (see the module docstring)."""
    namespace_verbs = ["get", "list", "watch", "create", "patch"]
    if policy.offboarding.retention_days is not None:
        namespace_verbs.append("delete")  # only ever after the retention period
    bindable = [c.CLUSTERROLE_ADMIN, c.CLUSTERROLE_EDIT, c.CLUSTERROLE_VIEW]
    if policy.platform.flavor == Flavor.OPENSHIFT:
        bindable.append(c.SCC_NONROOT_CLUSTERROLE)
    rules = [
        _rule(c.API_GROUP, [c.POLICY_PLURAL], _READ),
        _rule(c.API_GROUP, [f"{c.POLICY_PLURAL}/status"], ["get", "patch", "update"]),
        # delete: offboarding an OpenShift User (or `kftenancy offboard`) deletes its Profile.
        _rule(
            c.KUBEFLOW_GROUP,
            [c.PROFILE_PLURAL],
            ["get", "list", "watch", "create", "patch", "delete"],
        ),
        _rule(
            c.KUBEFLOW_GROUP,
            [f"{c.PROFILE_PLURAL}/status", f"{c.PROFILE_PLURAL}/finalizers"],
            ["get", "patch", "update"],
        ),
        _rule("", ["namespaces"], namespace_verbs),
        _rule("", ["serviceaccounts", "resourcequotas", "limitranges"], _MANAGE),
        _rule(RBAC_GROUP, ["rolebindings"], _MANAGE),
        # Creating a RoleBinding to a ClusterRole needs `bind` on it (escalation check).
        _rule(RBAC_GROUP, ["clusterroles"], ["bind"], resourceNames=bindable),
        _rule("networking.k8s.io", ["networkpolicies"], _MANAGE),
        _rule("", ["events"], ["create", "patch"]),
        _rule("events.k8s.io", ["events"], ["create", "patch"]),
        # kopf: resource discovery and peering between controller replicas.
        _rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
        _rule("kopf.dev", ["clusterkopfpeerings"], ["get", "list", "watch", "patch"]),
        # Leader election: one active controller replica holds this Lease.
        _rule("coordination.k8s.io", ["leases"], ["get", "create", "patch"]),
    ]
    if policy.mesh.flavor != MeshFlavor.NONE:
        rules.append(
            _rule("security.istio.io", ["authorizationpolicies", "requestauthentications"], _MANAGE)
        )
    if policy.mesh.flavor == MeshFlavor.OSSM:
        rules.append(_rule("maistra.io", ["servicemeshmembers"], _MANAGE))
    if (
        policy.platform.flavor == Flavor.OPENSHIFT
        and OnboardingSource.OPENSHIFT_USERS in policy.identity.onboarding
    ):
        rules.append(_rule("user.openshift.io", ["users"], _READ))
    if policy.gpu.enabled and policy.gpu.pools:
        # Warm GPU headroom: observe demand; placeholders live in the kftenancy namespace.
        rules.append(_rule("", ["pods", "nodes"], _READ))
        rules.append(_rule("apps", ["deployments"], _MANAGE))
    return rules


def webhook_rules(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The admission webhook decides from the request and the target namespace only."""
    return [
        _rule(c.API_GROUP, [c.POLICY_PLURAL], _READ),
        _rule("", ["namespaces"], _READ),
        # Pods get the web identity of their ServiceAccount's role annotation.
        _rule("", ["serviceaccounts"], _READ),
    ]


def gateway_rules(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The gateway authenticates (TokenReview), authorizes (SubjectAccessReview), onboards."""
    rules = [
        _rule(c.API_GROUP, [c.POLICY_PLURAL], _READ),
        _rule("authentication.k8s.io", ["tokenreviews"], ["create"]),
        _rule("authorization.k8s.io", ["subjectaccessreviews"], ["create"]),
    ]
    if OnboardingSource.GATEWAY in policy.identity.onboarding:
        rules.append(
            _rule(c.KUBEFLOW_GROUP, [c.PROFILE_PLURAL], ["get", "list", "watch", "create"])
        )
        # kftenancy.kube (used by ensure_profile) finds custom kinds from the CRD list
        rules.append(_rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list"]))
    return rules


def _component(
    policy: TenancyPolicySpec, name: str, rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    labels = platform_labels(name.removeprefix("kftenancy-"))
    ns = policy.platform.namespace
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(name, labels, ns),
        },
        {
            "apiVersion": RBAC_API,
            "kind": "ClusterRole",
            "metadata": metadata(name, labels),
            "rules": rules,
        },
        {
            "apiVersion": RBAC_API,
            "kind": "ClusterRoleBinding",
            "metadata": metadata(name, labels),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
    ]


def component_identities(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """ServiceAccount + ClusterRole + ClusterRoleBinding per kftenancy component."""
    return [
        *_component(policy, c.COMPONENT_CONTROLLER, controller_rules(policy)),
        *_component(policy, c.COMPONENT_WEBHOOK, webhook_rules(policy)),
        *_component(policy, c.COMPONENT_GATEWAY, gateway_rules(policy)),
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

    Value -10 (below the default 0), so that every ordinary pod preempts placeholders
    without a cluster-wide globalDefault class (the seed set one at 1000, changing every
    pod's priority); `preemptionPolicy: Never` so placeholders never evict anyone.
    """
    if not (policy.gpu.enabled and policy.gpu.pools):
        return []
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": metadata(c.PRIORITY_CLASS_PLACEHOLDER, platform_labels("capacity")),
            "value": -10,
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
        *platform_webhooks(policy),
        *mesh_policies(policy),
    ]
