"""Mesh and gateway configuration for the front door (pure render: policy → dicts).

- `ext_authz_provider(policy)`: the `envoyExtAuthzHttp` extension provider. Upstream
  Istio takes it in `meshConfig.extensionProviders` (`istio_mesh_config`, for the
  istio ConfigMap / IstioOperator / Helm values); OpenShift Service Mesh takes it in the
  ServiceMeshControlPlane (`spec.meshConfig.extensionProviders`, rendered as a partial
  SMCP that server-side apply merges).
- a CUSTOM AuthorizationPolicy on the ingress gateway: every request through it is
  checked by the kftenancy gateway; with the policy on the gateway *workload*, every
  port of it is covered (the seed's plain-HTTP bypass is closed).
- a DENY AuthorizationPolicy in the mesh root namespace that closes the other bypass:
  a request carrying an identity header (`kubeflow-userid`, `kubeflow-groups`, the
  identity JWT) is refused unless it comes from the ingress gateway, Kubeflow's own
  namespace (its web apps forward the header), or the Knative system namespaces (the
  activator forwards requests it received from the gateway). A workload in a tenant
  namespace can therefore not impersonate anyone by calling a service directly.
- a DestinationRule so that Envoy talks TLS to the gateway service.
- for Gateway API installations without a mesh: Envoy Gateway's `SecurityPolicy`
  (extAuth over HTTP, same check path and headers), a `BackendTLSPolicy` for TLS to the
  check service, and a `ReferenceGrant` letting the policy reference our Service.

The controller applies only `mesh_policies` (our own AuthorizationPolicies, through
`platform_objects`); `gateway_objects` adds what belongs to the installer (the mesh
config entry, the DestinationRule, the Envoy Gateway objects).

`headersToUpstreamOnAllow` lists exactly the headers the gateway sets on every allowed
check (see `kftenancy.gateway.decision.gateway_headers`): Envoy overwrites same-named
client headers with them. Client identity headers not in that list are dropped through
the check response's `x-envoy-auth-headers-to-remove`.
"""

from __future__ import annotations

from typing import Any

from kftenancy.gateway.decision import gateway_headers
from kftenancy.policy import MeshFlavor, TenancyPolicySpec
from kftenancy.render.meta import platform_labels

PROVIDER_NAME = "kftenancy-gateway"
CHECK_PATH_PREFIX = "/check"
DENY_HEADERS = ("www-authenticate", "location", "content-type", "retry-after")


def _labels(component: str) -> dict[str, str]:
    return platform_labels(component)


def service_host(policy: TenancyPolicySpec) -> str:
    fd = policy.identity.front_door
    return f"{fd.service}.{policy.platform.namespace}.svc.cluster.local"


def check_request_headers(policy: TenancyPolicySpec) -> list[str]:
    """Headers Envoy must copy into the check (besides host, method, path)."""
    tp = policy.identity.trusted_proxy
    names = [
        "authorization",
        "cookie",
        "accept",
        "x-requested-with",
        "x-forwarded-for",  # its last entry (Envoy's own) is the client flood limits charge
        tp.user_header,
        tp.email_header,
        tp.groups_header,
        tp.secret_header,
    ]
    return list(dict.fromkeys(names))


def ext_authz_provider(policy: TenancyPolicySpec) -> dict[str, Any]:
    fd = policy.identity.front_door
    return {
        "name": PROVIDER_NAME,
        "envoyExtAuthzHttp": {
            "service": service_host(policy),
            "port": fd.port,
            "timeout": policy.mesh.ext_authz_timeout,
            "pathPrefix": CHECK_PATH_PREFIX,
            "failOpen": False,
            "statusOnError": "503",
            "includeRequestHeadersInCheck": check_request_headers(policy),
            "headersToUpstreamOnAllow": list(gateway_headers(policy)),
            "headersToDownstreamOnDeny": list(DENY_HEADERS),
        },
    }


def istio_mesh_config(policy: TenancyPolicySpec) -> dict[str, Any]:
    """The `meshConfig` fragment for upstream Istio (merge into the mesh config)."""
    return {"extensionProviders": [ext_authz_provider(policy)]}


def _smcp(policy: TenancyPolicySpec) -> dict[str, Any]:
    ref = policy.mesh.control_plane_ref
    return {
        "apiVersion": "maistra.io/v2",
        "kind": "ServiceMeshControlPlane",
        "metadata": {"name": ref.name, "namespace": ref.namespace},
        "spec": {"meshConfig": {"extensionProviders": [ext_authz_provider(policy)]}},
    }


def _custom_policy(policy: TenancyPolicySpec) -> dict[str, Any]:
    gw = policy.mesh.ingress_gateway
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": "kftenancy-ext-authz",
            "namespace": gw.namespace,
            "labels": _labels("gateway"),
        },
        "spec": {
            "selector": {"matchLabels": dict(gw.labels)},
            "action": "CUSTOM",
            "provider": {"name": PROVIDER_NAME},
            "rules": [{}],
        },
    }


def trusted_header_senders(policy: TenancyPolicySpec) -> list[str]:
    """Mesh principals allowed to send requests that carry identity headers."""
    td = policy.mesh.trust_domain
    gw = policy.mesh.ingress_gateway
    senders = [
        f"{td}/ns/{gw.namespace}/sa/{gw.service_account}",
        f"{td}/ns/{policy.platform.kubeflow_namespace}/sa/*",
    ]
    if policy.serverless.enabled:
        senders += [f"{td}/ns/{ns}/sa/*" for ns in policy.serverless.system_namespaces]
    return senders


def _deny_forged_identity(policy: TenancyPolicySpec) -> dict[str, Any]:
    headers = list(dict.fromkeys([*gateway_headers(policy), policy.identity.identity_token.header]))
    rules = [
        {
            "from": [{"source": {"notPrincipals": trusted_header_senders(policy)}}],
            "when": [{"key": f"request.headers[{h}]", "values": ["*"]}],
        }
        for h in headers
    ]
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": "kftenancy-deny-forged-identity",
            "namespace": policy.mesh.control_plane_ref.namespace,
            "labels": _labels("gateway"),
        },
        "spec": {"action": "DENY", "rules": rules},
    }


def _destination_rule(policy: TenancyPolicySpec) -> dict[str, Any]:
    host = service_host(policy)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {
            "name": policy.identity.front_door.service,
            "namespace": policy.platform.namespace,
            "labels": _labels("gateway"),
        },
        "spec": {"host": host, "trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": host}}},
    }


def gateway_api_objects(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """Envoy Gateway: SecurityPolicy (extAuth), BackendTLSPolicy, ReferenceGrant."""
    ref = policy.identity.front_door.gateway_api
    if ref is None:
        return []
    fd = policy.identity.front_door
    ns = policy.platform.namespace
    security_policy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "SecurityPolicy",
        "metadata": {
            "name": "kftenancy-ext-authz",
            "namespace": ref.namespace,
            "labels": _labels("gateway"),
        },
        "spec": {
            "targetRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": ref.name}
            ],
            "extAuth": {
                "failOpen": False,
                "headersToExtAuth": check_request_headers(policy),
                "http": {
                    "backendRefs": [{"name": fd.service, "namespace": ns, "port": fd.port}],
                    "path": CHECK_PATH_PREFIX,
                    "headersToBackend": list(gateway_headers(policy)),
                },
            },
        },
    }
    backend_tls = {
        "apiVersion": "gateway.networking.k8s.io/v1alpha3",
        "kind": "BackendTLSPolicy",
        "metadata": {"name": fd.service, "namespace": ns, "labels": _labels("gateway")},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": fd.service}],
            "validation": {
                "caCertificateRefs": [
                    {"group": "", "kind": "ConfigMap", "name": f"{fd.service}-ca"}
                ],
                "hostname": f"{fd.service}.{ns}.svc",
            },
        },
    }
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "kftenancy-ext-authz", "namespace": ns, "labels": _labels("gateway")},
        "spec": {
            "from": [
                {
                    "group": "gateway.envoyproxy.io",
                    "kind": "SecurityPolicy",
                    "namespace": ref.namespace,
                }
            ],
            "to": [{"group": "", "kind": "Service", "name": fd.service}],
        },
    }
    return [security_policy, backend_tls, grant]


def mesh_policies(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The two AuthorizationPolicies (CUSTOM on the ingress gateway, DENY forged identity
    headers): kftenancy's own objects, part of `platform_objects`. The extension provider
    they name must be in the mesh config first (`ext_authz_provider`): a CUSTOM policy
    whose provider is unknown makes Istio refuse every request — closed, not open."""
    if policy.mesh.flavor == MeshFlavor.NONE:
        return []
    return [_custom_policy(policy), _deny_forged_identity(policy)]


def gateway_objects(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """Everything the front door needs in the mesh or Gateway API for this policy: the
    partial ServiceMeshControlPlane (OSSM; merge it, it is not ours), `mesh_policies`,
    the DestinationRule, and the Envoy Gateway objects. For installers (chart, GitOps);
    the controller applies only `mesh_policies` (through `platform_objects`)."""
    out: list[dict[str, Any]] = []
    if policy.mesh.flavor == MeshFlavor.OSSM:
        out.append(_smcp(policy))
    if policy.mesh.flavor != MeshFlavor.NONE:
        out += [_custom_policy(policy), _deny_forged_identity(policy), _destination_rule(policy)]
    out += gateway_api_objects(policy)
    return out
