"""Everything one tenant (one Profile) should have: `tenant_objects(policy, profile)`.

Pure: plain dicts out, no I/O. Names, labels and annotations follow upstream Kubeflow's
profile-controller and KFAM where they exist, so the dashboard and access management
keep working. Every object carries `app.kubernetes.io/managed-by: kftenancy` and
`kftenancy.dev/tenant: <profile>`, which is how the controller finds and prunes them.

When `platform.kubeflowProfileController` is true, upstream's profile-controller owns the
Namespace, `namespaceAdmin`, the `default-editor`/`default-viewer` ServiceAccounts and
RoleBindings, `ns-owner-access-istio` and `kf-resource-quota`; they are left out here
(the admission webhook still sets the namespace's tolerations and the ServiceAccounts'
web-identity annotations).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kftenancy import constants as c
from kftenancy.naming import label_part
from kftenancy.policy import Flavor, MeshFlavor, TenancyPolicySpec
from kftenancy.profile import Contributor, Profile
from kftenancy.render.iam import role_arn
from kftenancy.render.meta import metadata, tenant_labels
from kftenancy.render.queues import tenant_queues
from kftenancy.render.tolerations import default_tolerations_annotation

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API = f"{RBAC_GROUP}/v1"
ISTIO_API = "security.istio.io/v1"
SCC_BINDING = "kftenancy-scc-nonroot"
NP_SAME_NAMESPACE = "allow-same-namespace"
NP_INGRESS_GATEWAY = "allow-from-ingress-gateway"
NP_KUBEFLOW = "allow-from-kubeflow-namespace"
NP_SERVERLESS = "allow-from-serving-system-namespace"
AUTHZ_SERVERLESS = "allow-from-serving-system-namespace"
REQUEST_AUTHN = "kftenancy-identity"
_ROLE_CLUSTERROLE = {"edit": c.CLUSTERROLE_EDIT, "view": c.CLUSTERROLE_VIEW}

# Every (apiVersion, kind) `tenant_objects` can produce under any policy: the controller
# lists these by our labels to prune objects whose kind a policy change stopped rendering.
TENANT_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    (RBAC_API, "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    (ISTIO_API, "AuthorizationPolicy"),
    (ISTIO_API, "RequestAuthentication"),
    ("maistra.io/v1", "ServiceMeshMember"),
    (c.KUEUE_API, "ClusterQueue"),
    (c.KUEUE_API, "LocalQueue"),
)


def _gateway_principal(policy: TenancyPolicySpec) -> str:
    gw = policy.mesh.ingress_gateway
    return f"{policy.mesh.trust_domain}/ns/{gw.namespace}/sa/{gw.service_account}"


def _kubeflow_principal(policy: TenancyPolicySpec, service_account: str) -> str:
    ns = policy.platform.kubeflow_namespace
    return f"{policy.mesh.trust_domain}/ns/{ns}/sa/{service_account}"


def _forwarder_principals(policy: TenancyPolicySpec) -> list[str]:
    """The ingress gateway and the Kubeflow apps that forward the user header (KFP UI)."""
    return [
        _gateway_principal(policy),
        *(_kubeflow_principal(policy, sa) for sa in policy.mesh.header_forwarders),
    ]


def _header_key(header: str) -> str:
    return f"request.headers[{header}]"


def namespace(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """The tenant namespace: owner annotation, Kubeflow labels, tolerations, mesh label."""
    labels = tenant_labels(profile.name, **c.KUBEFLOW_NAMESPACE_LABELS)
    if policy.mesh.flavor == MeshFlavor.ISTIO:
        if policy.mesh.revision:
            labels["istio.io/rev"] = policy.mesh.revision
        else:
            labels["istio-injection"] = "enabled"
    annotations = {c.ANN_OWNER: profile.owner.name}
    if policy.gpu.enabled:
        annotations[c.ANN_DEFAULT_TOLERATIONS] = default_tolerations_annotation(policy)
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": metadata(profile.name, labels, annotations=annotations),
    }


def service_mesh_member(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """OpenShift Service Mesh membership (`default` is the only name OSSM accepts)."""
    ref = policy.mesh.control_plane_ref
    return {
        "apiVersion": "maistra.io/v1",
        "kind": "ServiceMeshMember",
        "metadata": metadata("default", tenant_labels(profile.name), profile.name),
        "spec": {"controlPlaneRef": {"name": ref.name, "namespace": ref.namespace}},
    }


def web_identity_annotations(policy: TenancyPolicySpec, profile: Profile) -> dict[str, str]:
    """ServiceAccount annotations of the pod-identity-webhook convention (data lake on)."""
    lake = policy.data_lake
    annotations = {
        c.ANN_ROLE_ARN: role_arn(policy, profile),
        c.ANN_AUDIENCE: lake.audience,
        c.ANN_STS_REGIONAL: "true" if lake.sts_regional_endpoints else "false",
        c.ANN_TOKEN_EXPIRATION: str(lake.token_expiration_seconds),
    }
    return annotations


def service_account(policy: TenancyPolicySpec, profile: Profile, name: str) -> dict[str, Any]:
    annotations = None
    if policy.data_lake.enabled and name in policy.data_lake.service_accounts:
        annotations = web_identity_annotations(policy, profile)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, tenant_labels(profile.name), profile.name, annotations),
    }


def _subject(kind: str, name: str) -> dict[str, str]:
    return {"apiGroup": RBAC_GROUP, "kind": kind, "name": name}


def _sa_subject(name: str, ns: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


def role_binding(
    profile: Profile,
    name: str,
    cluster_role: str,
    subjects: list[dict[str, str]],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": metadata(name, tenant_labels(profile.name), profile.name, annotations),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": subjects,
    }


def contributor_object_name(contributor: Contributor) -> str:
    """KFAM's naming (`user-<name>-clusterrole-<role>`), made injective for any name."""
    return (
        f"{contributor.kind.lower()}-{label_part(contributor.name)}-clusterrole-{contributor.role}"
    )


def _contributor_annotations(contributor: Contributor) -> dict[str, str]:
    return {c.ANN_BINDING_USER: contributor.name, c.ANN_BINDING_ROLE: contributor.role}


def contributor_binding(profile: Profile, contributor: Contributor) -> dict[str, Any]:
    return role_binding(
        profile,
        contributor_object_name(contributor),
        _ROLE_CLUSTERROLE[contributor.role],
        [_subject(contributor.kind, contributor.name)],
        _contributor_annotations(contributor),
    )


def authorization_policy(
    profile: Profile,
    name: str,
    rules: list[dict[str, Any]],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": ISTIO_API,
        "kind": "AuthorizationPolicy",
        "metadata": metadata(name, tenant_labels(profile.name), profile.name, annotations),
        "spec": {"action": "ALLOW", "rules": rules},
    }


def _probe_rule(policy: TenancyPolicySpec) -> dict[str, Any]:
    return {"to": [{"operation": {"paths": list(policy.serverless.probe_paths)}}]}


def _gateway_rule(policy: TenancyPolicySpec, kind: str, name: str) -> dict[str, Any]:
    """A rule admitting requests for one user or group, only from the ingress gateway
    (and the Kubeflow apps in `mesh.headerForwarders`, which pass the user's header on).

    Users: the user header must equal prefix + user id (upstream Kubeflow's rule).
    Groups: with the gateway's identity token on, the verified token's `groups` claim
    must contain the group (Istio matches list claims element-wise; the tenant then
    gets the `kftenancy-identity` RequestAuthentication). Without it, the comma-joined
    groups header is matched as a whole or by `*` prefix/suffix, so the group must be the
    only, first or last entry; a group in the middle of a longer list is not matched
    (fails closed; Kubernetes API access still comes from the group's RoleBinding).
    """
    ident = policy.identity
    source: dict[str, Any] = {"principals": _forwarder_principals(policy)}
    if kind == "User":
        when = {"key": _header_key(ident.user_header), "values": [ident.user_prefix + name]}
    elif ident.identity_token.enabled:
        source["requestPrincipals"] = [f"{ident.identity_token.issuer}/*"]
        when = {"key": "request.auth.claims[groups]", "values": [name]}
    else:
        when = {
            "key": _header_key(ident.groups_header),
            "values": [name, f"{name},*", f"*,{name}"],
        }
    return {"from": [{"source": source}], "when": [when]}


def owner_authorization_policy(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """`ns-owner-access-istio`, as upstream: the owner through the gateway (or the KFP UI),
    the namespace itself, the probe paths, and notebook culling's GET */api/kernels."""
    owner = profile.owner
    same_namespace = {"from": [{"source": {"namespaces": [profile.name]}}]}
    rules = [_gateway_rule(policy, owner.kind, owner.name), same_namespace, _probe_rule(policy)]
    if policy.mesh.notebook_culler:
        rules.append(
            {
                "from": [
                    {
                        "source": {
                            "principals": [_kubeflow_principal(policy, policy.mesh.notebook_culler)]
                        }
                    }
                ],
                "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}],
            }
        )
    return authorization_policy(
        profile,
        c.AUTHZ_OWNER,
        rules,
        {c.ANN_BINDING_USER: owner.name, c.ANN_BINDING_ROLE: "admin"},
    )


def contributor_authorization_policy(
    policy: TenancyPolicySpec, profile: Profile, contributor: Contributor
) -> dict[str, Any]:
    """One ALLOW policy per contributor (KFAM's shape), only through the gateway."""
    return authorization_policy(
        profile,
        contributor_object_name(contributor),
        [_gateway_rule(policy, contributor.kind, contributor.name)],
        _contributor_annotations(contributor),
    )


def needs_identity_token(policy: TenancyPolicySpec, profile: Profile) -> bool:
    """True when a group is matched through the identity token's claims."""
    kinds = [profile.owner.kind, *(k.kind for k in profile.contributors)]
    return policy.identity.identity_token.enabled and "Group" in kinds


def identity_request_authentication(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """`kftenancy-identity`: Istio verifies the gateway-signed identity JWT in this tenant.

    Only rendered where a group is matched by claim: a RequestAuthentication rejects
    requests whose token is invalid, so it is kept to tenants that need it.
    """
    token = policy.identity.identity_token
    return {
        "apiVersion": ISTIO_API,
        "kind": "RequestAuthentication",
        "metadata": metadata(REQUEST_AUTHN, tenant_labels(profile.name), profile.name),
        "spec": {
            "jwtRules": [
                {
                    "issuer": token.issuer,
                    "audiences": [token.audience],
                    "jwksUri": f"{token.issuer.rstrip('/')}/.well-known/jwks.json",
                    "fromHeaders": [{"name": token.header}],
                    "forwardOriginalToken": True,
                }
            ]
        },
    }


def serverless_authorization_policy(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """Knative/KServe system traffic (activator, ingress) and the activator's probes.

    Narrower than the seed's allow-all: sources must be in the Knative system namespaces
    (mesh identity), and anyone else reaches only the probe paths.
    """
    from_system = {"from": [{"source": {"namespaces": list(policy.serverless.system_namespaces)}}]}
    return authorization_policy(profile, AUTHZ_SERVERLESS, [from_system, _probe_rule(policy)])


def network_policy(profile: Profile, name: str, peers: list[dict[str, Any]]) -> dict[str, Any]:
    """Ingress from `peers` to every pod of the tenant (any one selecting NP isolates)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, tenant_labels(profile.name), profile.name),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers}],
        },
    }


def _namespaces_named(names: Iterable[str]) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}
        ]
    }


def network_policies(policy: TenancyPolicySpec, profile: Profile) -> list[dict[str, Any]]:
    gw = policy.mesh.ingress_gateway
    out = [
        network_policy(profile, NP_SAME_NAMESPACE, [{"podSelector": {}}]),
        network_policy(
            profile,
            NP_INGRESS_GATEWAY,
            [
                {
                    "namespaceSelector": _namespaces_named([gw.namespace]),
                    "podSelector": {"matchLabels": dict(gw.labels)},
                }
            ],
        ),
        network_policy(
            profile,
            NP_KUBEFLOW,
            [{"namespaceSelector": _namespaces_named([policy.platform.kubeflow_namespace])}],
        ),
    ]
    if policy.serverless.enabled:
        peers: list[dict[str, Any]] = [
            {"namespaceSelector": {"matchLabels": {label: "true"}}}
            for label in policy.serverless.system_namespace_labels
        ]
        if policy.serverless.system_namespaces:
            peers.append(
                {"namespaceSelector": _namespaces_named(policy.serverless.system_namespaces)}
            )
        out.append(network_policy(profile, NP_SERVERLESS, peers))
    return out


def quota_hard(policy: TenancyPolicySpec, profile: Profile) -> dict[str, str]:
    """The policy's default quota, each key overridden by the Profile's resourceQuotaSpec."""
    hard = dict(policy.resources.quota)
    if profile.resource_quota_spec is not None:
        hard.update({k: str(v) for k, v in profile.resource_quota_spec.hard.items()})
    return hard


def resource_quota(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any] | None:
    hard = quota_hard(policy, profile)
    if not hard:
        return None
    spec: dict[str, Any] = {"hard": hard}
    rqs = profile.resource_quota_spec
    if rqs is not None and rqs.scopes:
        spec["scopes"] = list(rqs.scopes)
    if rqs is not None and rqs.scope_selector:
        spec["scopeSelector"] = rqs.scope_selector
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(c.QUOTA_NAME, tenant_labels(profile.name), profile.name),
        "spec": spec,
    }


def limit_range(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any] | None:
    """Default container requests (and limits) so that the quota admits bare pods."""
    lr = policy.resources.limit_range
    limit: dict[str, Any] = {"type": "Container"}
    if lr.default_request:
        limit["defaultRequest"] = dict(lr.default_request)
    if lr.default:
        limit["default"] = dict(lr.default)
    if len(limit) == 1:
        return None
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata(c.LIMITRANGE_NAME, tenant_labels(profile.name), profile.name),
        "spec": {"limits": [limit]},
    }


def tenant_objects(policy: TenancyPolicySpec, profile: Profile) -> list[dict[str, Any]]:
    """Every object the tenant of `profile` should have, in a safe apply order.

    The Namespace comes first and namespaced objects after it; the order is otherwise
    stable, so that two renders of the same inputs are equal.
    """
    ns = profile.name
    upstream_owns = policy.platform.kubeflow_profile_controller
    mesh = policy.mesh.flavor
    out: list[dict[str, Any]] = []
    if not upstream_owns:
        out.append(namespace(policy, profile))
    if mesh == MeshFlavor.OSSM:
        out.append(service_mesh_member(policy, profile))
    if not upstream_owns:
        out += [service_account(policy, profile, sa) for sa in (c.SA_EDITOR, c.SA_VIEWER)]
        owner = profile.owner
        out.append(
            role_binding(
                profile,
                c.ROLEBINDING_ADMIN,
                c.CLUSTERROLE_ADMIN,
                [_subject(owner.kind, owner.name)],
                {c.ANN_BINDING_USER: owner.name, c.ANN_BINDING_ROLE: "admin"},
            )
        )
        out.append(
            role_binding(profile, c.SA_EDITOR, c.CLUSTERROLE_EDIT, [_sa_subject(c.SA_EDITOR, ns)])
        )
        out.append(
            role_binding(profile, c.SA_VIEWER, c.CLUSTERROLE_VIEW, [_sa_subject(c.SA_VIEWER, ns)])
        )
    out += [contributor_binding(profile, k) for k in profile.contributors]
    if policy.platform.flavor == Flavor.OPENSHIFT:
        out.append(
            role_binding(
                profile,
                SCC_BINDING,
                c.SCC_NONROOT_CLUSTERROLE,
                [_sa_subject("default", ns), _sa_subject(c.SA_EDITOR, ns)],
            )
        )
    if mesh != MeshFlavor.NONE:
        if not upstream_owns:
            out.append(owner_authorization_policy(policy, profile))
        out += [contributor_authorization_policy(policy, profile, k) for k in profile.contributors]
        if needs_identity_token(policy, profile):
            out.append(identity_request_authentication(policy, profile))
        if policy.serverless.enabled:
            out.append(serverless_authorization_policy(policy, profile))
    out += network_policies(policy, profile)
    if not upstream_owns:
        quota = resource_quota(policy, profile)
        if quota is not None:
            out.append(quota)
    lr = limit_range(policy, profile)
    if lr is not None:
        out.append(lr)
    out += tenant_queues(policy, profile, quota_hard(policy, profile))
    return out
