"""The OLM bundle (`deploy/olm/`): ClusterServiceVersion, CRDs, bundle metadata.

Permissions come from `kftenancy.render.rbac.component_rules` (the chart's ClusterRoles
are the same rules), the webhooks from `webhook_configurations` (as OLM
`webhookdefinitions`: OLM issues and rotates their certificate and mounts it at
`/tmp/k8s-webhook-server/serving-certs`). OLM's webhook definitions have no
namespaceSelector or matchConditions, so under OLM the API server calls the webhook for
exempt namespaces too and the webhook applies the exemptions itself
(`policy.is_exempt`); see docs/install.md.

The gateway's serving certificate comes from OpenShift's service CA (the
`service.beta.openshift.io/serving-cert-secret-name` annotation on its Service).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kftenancy import constants as c
from kftenancy.crds import crd_file_name
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.platform import crds as policy_crds
from kftenancy.render.rbac import component_rules
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations

PACKAGE = "kftenancy"
CHANNEL = "alpha"
IMAGE = "ghcr.io/kftenancy/kftenancy"
OLM_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
# A plain mark (OperatorHub shows it next to the name).
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="12" fill="#1f4e79"/>'
    '<path d="M16 44V20h6v10l10-10h8L29 31l12 13h-8l-11-11v11z" fill="#fff"/></svg>'
)

_POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _env(pairs: dict[str, str]) -> list[dict[str, Any]]:
    """POD_NAMESPACE (the install namespace, from the downward API) first, so that values
    can refer to it as $(POD_NAMESPACE)."""
    own = {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    return [own, *({"name": k, "value": v} for k, v in pairs.items())]


def _probe(port: str, path: str, period: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTPS"}, "periodSeconds": period}


def _deployment(
    name: str,
    component: str,
    image: str,
    env: dict[str, str],
    port: tuple[str, int],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    replicas: int = 2,
) -> dict[str, Any]:
    selector = {"app.kubernetes.io/name": "kftenancy", "app.kubernetes.io/component": component}
    container = {
        "name": component,
        "image": image,
        "args": ["run", component],
        "env": _env(env),
        "ports": [{"name": port[0], "containerPort": port[1], "protocol": "TCP"}],
        "livenessProbe": _probe(port[0], "/healthz", 20),
        "readinessProbe": _probe(port[0], "/readyz", 5),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    return {
        "name": name,
        "label": selector,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": _POD_SECURITY,
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": selector},
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def deployments(policy: TenancyPolicySpec, image: str) -> list[dict[str, Any]]:
    fd = policy.identity.front_door
    tmp = {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
    return [
        _deployment(
            c.COMPONENT_CONTROLLER,
            "controller",
            image,
            {
                "KFTENANCY_POLICY_NAME": c.DEFAULT_POLICY_NAME,
                "KFTENANCY_METRICS_HOST": "0.0.0.0",
                "KFTENANCY_METRICS_PORT": "8080",
                "KFTENANCY_LEADER_ELECTION": "true",
                "KFTENANCY_LEASE_NAMESPACE": "$(POD_NAMESPACE)",
                "KFTENANCY_EVENT_NAMESPACE": "$(POD_NAMESPACE)",
                "KFTENANCY_APPLY_PLATFORM": "false",
            },
            ("metrics", 8080),
            [tmp],
            [{"name": "tmp", "mountPath": "/tmp"}],
        ),
        _deployment(
            c.COMPONENT_WEBHOOK,
            "webhook",
            image,
            {
                "KFTENANCY_WEBHOOK_TLS_CERT_FILE": f"{OLM_CERT_DIR}/tls.crt",
                "KFTENANCY_WEBHOOK_TLS_KEY_FILE": f"{OLM_CERT_DIR}/tls.key",
                "KFTENANCY_WEBHOOK_PORT": "8443",
                # the controller's identity in the namespace OLM installed it into
                "KFTENANCY_CONTROLLER_USERS": (
                    f"system:serviceaccount:$(POD_NAMESPACE):{c.COMPONENT_CONTROLLER}"
                ),
                "KFTENANCY_POLICY_NAME": c.DEFAULT_POLICY_NAME,
            },
            ("https", 8443),
            [],  # OLM adds the webhook certificate volume and mount
            [],
        ),
        _deployment(
            c.COMPONENT_GATEWAY,
            "gateway",
            image,
            {
                "KFTENANCY_GATEWAY_MODE": "ext-authz",
                "KFTENANCY_GATEWAY_PORT": str(fd.port),
                "KFTENANCY_TLS_CERT": "/tls/tls.crt",
                "KFTENANCY_TLS_KEY": "/tls/tls.key",
                "KFTENANCY_POLICY": "/etc/kftenancy/policy.yaml",
            },
            ("https", fd.port),
            [
                {"name": "tls", "secret": {"secretName": f"{fd.service}-tls"}},
                {"name": "policy", "configMap": {"name": "kftenancy-policy"}},
            ],
            [
                {"name": "tls", "mountPath": "/tls", "readOnly": True},
                {"name": "policy", "mountPath": "/etc/kftenancy", "readOnly": True},
            ],
        ),
    ]


def webhook_definitions(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    out = []
    for config in webhook_configurations(policy, WebhookEndpoint()):
        kind = (
            "MutatingAdmissionWebhook"
            if config["kind"] == "MutatingWebhookConfiguration"
            else "ValidatingAdmissionWebhook"
        )
        for hook in config["webhooks"]:
            d = {
                "type": kind,
                "generateName": hook["name"],
                "deploymentName": c.COMPONENT_WEBHOOK,
                "containerPort": 443,
                "targetPort": 8443,
                "webhookPath": hook["clientConfig"]["service"]["path"],
                "admissionReviewVersions": hook["admissionReviewVersions"],
                "sideEffects": hook["sideEffects"],
                "failurePolicy": hook["failurePolicy"],
                "matchPolicy": hook["matchPolicy"],
                "timeoutSeconds": hook["timeoutSeconds"],
                "rules": hook["rules"],
            }
            if "reinvocationPolicy" in hook:
                d["reinvocationPolicy"] = hook["reinvocationPolicy"]
            out.append(d)
    return out


def _crd_description(crd: dict[str, Any]) -> dict[str, Any]:
    spec = crd["spec"]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    return {
        "name": crd["metadata"]["name"],
        "kind": spec["names"]["kind"],
        "version": storage,
        "displayName": spec["names"]["kind"],
        "description": (
            "The kftenancy policy: everything that varies between installations (one per cluster)."
            if spec["names"]["kind"] == c.POLICY_KIND
            else "A Kubeflow tenant: one namespace, one owner."
        ),
    }


def cluster_service_version(
    spec: dict[str, Any], version: str, image: str, replaces: str | None = None
) -> dict[str, Any]:
    policy = load_policy(spec)
    owned = [_crd_description(crd) for crd in policy_crds(policy)]
    required = []
    if policy.platform.kubeflow_installed:
        required.append(
            {
                "name": f"{c.PROFILE_PLURAL}.{c.KUBEFLOW_GROUP}",
                "kind": c.PROFILE_KIND,
                "version": "v1",
                "displayName": "Profile",
                "description": "Kubeflow's Profile (from the Kubeflow install).",
            }
        )
    example = {
        "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
        "kind": c.POLICY_KIND,
        "metadata": {"name": c.DEFAULT_POLICY_NAME},
        "spec": spec,
    }
    csv: dict[str, Any] = {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": f"{PACKAGE}.v{version}",
            "annotations": {
                "alm-examples": json.dumps([example], sort_keys=True),
                "capabilities": "Seamless Upgrades",
                "categories": "AI/Machine Learning, Security",
                "containerImage": image,
                "operatorframework.io/suggested-namespace": policy.platform.namespace,
                "operators.operatorframework.io/internal-objects": json.dumps([]),
                "repository": "https://kftenancy.dev",
                "support": "kftenancy",
            },
        },
        "spec": {
            "displayName": "kftenancy",
            "description": (
                "Safe multi-tenant Kubeflow: one TenancyPolicy drives tenant namespaces, "
                "RBAC, quotas, mesh policies, GPU isolation, data-lake identities and the "
                "front door. Uninstalling never deletes tenant namespaces."
            ),
            "version": version,
            "maturity": "alpha",
            "icon": [
                {
                    "base64data": base64.b64encode(ICON_SVG.encode()).decode(),
                    "mediatype": "image/svg+xml",
                }
            ],
            "minKubeVersion": "1.30.0",
            "keywords": ["kubeflow", "multi-tenancy", "gpu", "istio"],
            "provider": {"name": "kftenancy"},
            "maintainers": [
                {"name": "kftenancy maintainers", "email": "maintainers@kftenancy.dev"}
            ],
            "links": [{"name": "Documentation", "url": "https://kftenancy.dev/docs/install"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "customresourcedefinitions": {
                "owned": owned,
                **({"required": required} if required else {}),
            },
            "install": {
                "strategy": "deployment",
                "spec": {
                    "clusterPermissions": [
                        {"serviceAccountName": name, "rules": rules}
                        for name, rules in component_rules(policy).items()
                    ],
                    "deployments": deployments(policy, image),
                },
            },
            "webhookdefinitions": webhook_definitions(policy),
        },
    }
    if replaces:
        csv["spec"]["replaces"] = replaces
    return csv


def bundle_files(spec: dict[str, Any], version: str, image: str | None = None) -> dict[str, str]:
    """deploy/olm/ files (path → text): manifests/ (CSV, CRDs, gateway Service and policy
    ConfigMap) and metadata/annotations.yaml."""
    import yaml

    from kftenancy.cli.render import crd_file_text

    image = image or f"{IMAGE}:{version}"
    policy = load_policy(spec)
    header = "# Generated by `kftenancy olm`. Do not edit.\n"

    def dump(obj: dict[str, Any]) -> str:
        return header + yaml.safe_dump(obj, sort_keys=False, width=100)

    fd = policy.identity.front_door
    files = {
        f"manifests/{PACKAGE}.clusterserviceversion.yaml": dump(
            cluster_service_version(spec, version, image)
        ),
        f"manifests/{fd.service}.service.yaml": dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": fd.service,
                    "annotations": {
                        "service.beta.openshift.io/serving-cert-secret-name": f"{fd.service}-tls"
                    },
                },
                "spec": {
                    "selector": {
                        "app.kubernetes.io/name": "kftenancy",
                        "app.kubernetes.io/component": "gateway",
                    },
                    "ports": [{"name": "https", "port": fd.port, "targetPort": "https"}],
                },
            }
        ),
        "manifests/kftenancy-policy.configmap.yaml": dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kftenancy-policy"},
                "data": {
                    "policy.yaml": yaml.safe_dump(
                        {
                            "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
                            "kind": c.POLICY_KIND,
                            "metadata": {"name": c.DEFAULT_POLICY_NAME},
                            "spec": spec,
                        },
                        sort_keys=False,
                    )
                },
            }
        ),
        "metadata/annotations.yaml": header
        + yaml.safe_dump(
            {
                "annotations": {
                    "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
                    "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
                    "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
                    "operators.operatorframework.io.bundle.package.v1": PACKAGE,
                    "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
                    "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
                }
            },
            sort_keys=False,
        ),
    }
    for crd in policy_crds(policy):
        files[f"manifests/{crd_file_name(crd)}"] = crd_file_text(crd)
    return files
