"""Per-component RBAC: the one source of truth for what each kftenancy component may do.

`component_rules(policy)` maps each component (controller, webhook, gateway) to the
ClusterRole rules its code uses: exactly those verbs and resources, no more. Everything
that grants kftenancy permissions reads it: `platform_objects` (and so `render` and the
GitOps path), the Helm chart, the OLM ClusterServiceVersion and the least-privilege
integration tests, which run each component with a token of its ServiceAccount and
check that what is not listed here is refused by the API server.

The policy decides some rules: no namespace `delete` unless a retention period is set,
no mesh kinds without a mesh, no OpenShift kinds off OpenShift, no placeholder
Deployments without GPU pools. An area that adds work to a component adds a function
here (named after the area) and one line in that component's rule list.
"""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.policy import Flavor, MeshFlavor, OnboardingSource, TenancyPolicySpec
from kftenancy.render.meta import metadata, platform_labels

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API = f"{RBAC_GROUP}/v1"
READ = ["get", "list", "watch"]
MANAGE = ["get", "list", "watch", "create", "patch", "delete"]

Rule = dict[str, Any]

COMPONENTS = (c.COMPONENT_CONTROLLER, c.COMPONENT_WEBHOOK, c.COMPONENT_GATEWAY)


def rule(group: str, resources: list[str], verbs: list[str], **extra: Any) -> Rule:
    """One PolicyRule; `extra` takes e.g. resourceNames=[...]."""
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **extra}


def _tenant_rules(policy: TenancyPolicySpec) -> list[Rule]:
    """The tenant controller: Profiles in, namespaces and their objects out."""
    namespace_verbs = ["get", "list", "watch", "create", "patch"]
    if policy.offboarding.retention_days is not None:
        namespace_verbs.append("delete")  # only ever after the retention period
    bindable = [c.CLUSTERROLE_ADMIN, c.CLUSTERROLE_EDIT, c.CLUSTERROLE_VIEW]
    if policy.platform.flavor == Flavor.OPENSHIFT:
        bindable.append(c.SCC_NONROOT_CLUSTERROLE)
    rules = [
        rule(c.API_GROUP, [c.POLICY_PLURAL], READ),
        rule(c.API_GROUP, [f"{c.POLICY_PLURAL}/status"], ["get", "patch", "update"]),
        # delete: offboarding an OpenShift User (or `kftenancy offboard`) deletes its Profile.
        rule(
            c.KUBEFLOW_GROUP,
            [c.PROFILE_PLURAL],
            ["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            c.KUBEFLOW_GROUP,
            [f"{c.PROFILE_PLURAL}/status", f"{c.PROFILE_PLURAL}/finalizers"],
            ["get", "patch", "update"],
        ),
        rule("", ["namespaces"], namespace_verbs),
        rule("", ["serviceaccounts", "resourcequotas", "limitranges"], MANAGE),
        rule(RBAC_GROUP, ["rolebindings"], MANAGE),
        # Creating a RoleBinding to a ClusterRole needs `bind` on it (escalation check).
        rule(RBAC_GROUP, ["clusterroles"], ["bind"], resourceNames=bindable),
        rule("networking.k8s.io", ["networkpolicies"], MANAGE),
        rule("", ["events"], ["create", "patch"]),
        rule("events.k8s.io", ["events"], ["create", "patch"]),
        # kopf: resource discovery and peering between controller replicas.
        rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
        rule("kopf.dev", ["clusterkopfpeerings"], ["get", "list", "watch", "patch"]),
        # Leader election: one active controller replica holds this Lease.
        rule("coordination.k8s.io", ["leases"], ["get", "create", "patch"]),
    ]
    if policy.mesh.flavor != MeshFlavor.NONE:
        rules.append(
            rule("security.istio.io", ["authorizationpolicies", "requestauthentications"], MANAGE)
        )
    if policy.mesh.flavor == MeshFlavor.OSSM:
        rules.append(rule("maistra.io", ["servicemeshmembers"], MANAGE))
    if policy.platform.flavor == Flavor.OPENSHIFT:
        # The controller watches OpenShift Users wherever that API is served (onboarding
        # acts on them only with `openshiftUsers`); a refused watch would stop it.
        rules.append(rule("user.openshift.io", ["users"], READ))
    return rules


# Tenant kinds the controller lists and watches (by our labels) whatever the policy, so
# that objects of a kind the policy no longer renders (a mesh flavor change, queues
# turned off) are still found and pruned: read and delete, never create or patch.
# Keep in step with `kftenancy.controllers.tenant.KNOWN_KINDS` (a unit test checks).
OBSERVED_KINDS: tuple[tuple[str, str], ...] = (
    ("security.istio.io", "authorizationpolicies"),
    ("maistra.io", "servicemeshmembers"),
    (c.KUEUE_GROUP, "clusterqueues"),
    (c.KUEUE_GROUP, "localqueues"),
)


def _observe_rules(policy: TenancyPolicySpec) -> list[Rule]:
    return [rule(group, [plural], [*READ, "delete"]) for group, plural in OBSERVED_KINDS]


def _capacity_rules(policy: TenancyPolicySpec) -> list[Rule]:
    """Warm GPU headroom: observe demand; placeholders live in the kftenancy namespace."""
    if not (policy.gpu.enabled and policy.gpu.pools):
        return []
    return [
        rule("", ["pods", "nodes"], READ),
        rule("apps", ["deployments"], MANAGE),
        # The tenant-visible GPU status ConfigMap in each tenant namespace.
        rule("", ["configmaps"], MANAGE),
    ]


def _queue_rules(policy: TenancyPolicySpec) -> list[Rule]:
    """Fair GPU queues: each tenant's Kueue ClusterQueue/LocalQueue, the pools' flavors;
    workloads read for `status` and the tenant's GPU status."""
    if not (policy.gpu.enabled and policy.gpu.queues.enabled and policy.gpu.pools):
        return []
    return [
        rule(c.KUEUE_GROUP, ["clusterqueues", "localqueues", "resourceflavors"], MANAGE),
        rule(c.KUEUE_GROUP, ["workloads"], READ),
    ]


def controller_rules(policy: TenancyPolicySpec) -> list[Rule]:
    """What the tenant controller reads and writes, area by area."""
    return [
        *_tenant_rules(policy),
        *_observe_rules(policy),
        *_capacity_rules(policy),
        *_queue_rules(policy),
    ]


def webhook_rules(policy: TenancyPolicySpec) -> list[Rule]:
    """The admission webhook decides from the request and the target namespace only."""
    return [
        rule(c.API_GROUP, [c.POLICY_PLURAL], READ),
        rule("", ["namespaces"], READ),
        # Pods get the web identity of their ServiceAccount's role annotation.
        rule("", ["serviceaccounts"], READ),
    ]


def gateway_rules(policy: TenancyPolicySpec) -> list[Rule]:
    """The gateway authenticates (TokenReview), authorizes (SubjectAccessReview), onboards."""
    # (The gateway reads its policy from a file, never the TenancyPolicy object.)
    rules = [
        rule("authentication.k8s.io", ["tokenreviews"], ["create"]),
        rule("authorization.k8s.io", ["subjectaccessreviews"], ["create"]),
    ]
    if OnboardingSource.GATEWAY in policy.identity.onboarding:
        # ensure_profile: get, then create (never update: an existing Profile is kept).
        rules.append(rule(c.KUBEFLOW_GROUP, [c.PROFILE_PLURAL], ["get", "create"]))
        # kftenancy.kube (used by ensure_profile) finds custom kinds from the CRD list
        rules.append(rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list"]))
    return rules


def component_rules(policy: TenancyPolicySpec) -> dict[str, list[Rule]]:
    """Component name (its ServiceAccount and ClusterRole name) → its ClusterRole rules."""
    return {
        c.COMPONENT_CONTROLLER: controller_rules(policy),
        c.COMPONENT_WEBHOOK: webhook_rules(policy),
        c.COMPONENT_GATEWAY: gateway_rules(policy),
    }


def component_identity(
    policy: TenancyPolicySpec, name: str, rules: list[Rule]
) -> list[dict[str, Any]]:
    """ServiceAccount + ClusterRole + ClusterRoleBinding of one component."""
    labels = platform_labels(name.removeprefix("kftenancy-"))
    ns = policy.platform.namespace
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(name, labels, ns)},
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
        obj
        for name, rules in component_rules(policy).items()
        for obj in component_identity(policy, name, rules)
    ]
