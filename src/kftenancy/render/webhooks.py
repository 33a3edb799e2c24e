"""The Mutating- and ValidatingWebhookConfiguration of kftenancy's admission webhook.

Each webhook is as narrow as the rule behind it, so the API server only calls us when
an answer can matter, and a webhook outage only blocks what must be blocked:

| webhook                              | operations     | failurePolicy | why                                |
| ------------------------------------ | -------------- | ------------- | ---------------------------------- |
| namespaces.mutate.kftenancy.dev      | CREATE, UPDATE | Ignore        | the controller re-applies tenant   |
|                                      |                |               | annotations; pods are still judged |
| serviceaccounts.mutate.kftenancy.dev | CREATE, UPDATE | Ignore        | the controller applies them too;   |
|                                      |                |               | missing = no credentials, not more |
| pods.mutate.kftenancy.dev            | CREATE         | Ignore        | missing toleration/credentials     |
|                                      |                |               | fail closed (no GPU, no S3 access) |
| namespaces.validate.kftenancy.dev    | CREATE, UPDATE | Fail          | the tenant label grants GPU access |
| pods.validate.kftenancy.dev          | CREATE, UPDATE | Fail          | the GPU isolation rule itself      |

Exempt namespaces: a namespaceSelector can only match exact values, so the exact names
(kube-system, kftenancy's and Kubeflow's namespaces, the mesh namespaces and every
`isolation.exemptNamespaces` entry without wildcards) go into a
`kubernetes.io/metadata.name NotIn` selector, and the fnmatch patterns (`kube-*`,
`openshift-*`, …) become one CEL `matchConditions` regex on the namespace name
(matchConditions are GA since Kubernetes 1.30). The webhook applies `policy.is_exempt`
itself as well, so a namespace newly exempted by a policy change is left alone even
before this configuration is rendered and applied again (which it must be for the
reverse: a namespace no longer exempt). Further matchConditions keep the Fail webhooks off the hot path: the namespace
validator only sees changes of the tenant label by someone other than kftenancy, the pod
validator only pods with a toleration whose key is empty or the GPU taint's key (a
superset of the tolerations that can tolerate the taint).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kftenancy import constants as c
from kftenancy.policy import InjectionMode, MeshFlavor, TenancyPolicySpec

CONFIGURATION_NAME = "kftenancy"
MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
MUTATE_TIMEOUT_SECONDS = 3
VALIDATE_TIMEOUT_SECONDS = 5
_NO_LABEL = "<none>"  # never a valid label value, so it cannot collide with one


def default_controller_user(policy: TenancyPolicySpec) -> str:
    """kftenancy's own identity: the controller's ServiceAccount in the platform namespace."""
    return f"system:serviceaccount:{policy.platform.namespace}:{c.COMPONENT_CONTROLLER}"


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where the API server reaches the webhook: a Service (in-cluster) or a URL.

    ca_bundle: PEM of the CA that signed the serving certificate (None when cert-manager's
    CA injector fills it in, named by inject_ca_from = "<namespace>/<Certificate>").
    """

    url: str | None = None
    service_name: str = c.COMPONENT_WEBHOOK
    service_namespace: str | None = None  # default: the policy's platform namespace
    service_port: int = 443
    ca_bundle: bytes | None = None
    inject_ca_from: str | None = None


def exempt_names(policy: TenancyPolicySpec) -> tuple[list[str], list[str]]:
    """(exact namespace names, fnmatch patterns) the webhooks never see."""
    exact = {"kube-system", policy.platform.namespace, policy.platform.kubeflow_namespace}
    if policy.mesh.flavor != MeshFlavor.NONE:
        exact |= {policy.mesh.control_plane_ref.namespace, policy.mesh.ingress_gateway.namespace}
    patterns = []
    for entry in policy.isolation.exempt_namespaces:
        if any(ch in entry for ch in "*?["):
            patterns.append(entry)
        else:
            exact.add(entry)
    return sorted(exact), patterns


def glob_to_re2(pattern: str) -> str:
    """An fnmatch pattern as an RE2 regex without backslashes (safe in a CEL string)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            safe = "".join(b for b in body if b.isalnum() or b == "-")
            out.append(f"[{'^' if negate else ''}{safe}]")
            i = end
        elif ch.isalnum() or ch == "-":
            out.append(ch)
        elif ch not in "'\\":
            out.append(f"[{ch}]")
        i += 1
    return "".join(out)


def _cel_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_cel_str(v) for v in values) + "]"


def _label(var: str) -> str:
    """CEL: the tenant label of `var` (object/oldObject), or a sentinel when absent."""
    guard = f"{var} != null && has({var}.metadata.labels)"
    return (
        f"({guard} && '{c.LABEL_TENANT}' in {var}.metadata.labels"
        f" ? {var}.metadata.labels['{c.LABEL_TENANT}'] : '{_NO_LABEL}')"
    )


def _client_config(
    policy: TenancyPolicySpec, endpoint: WebhookEndpoint, path: str
) -> dict[str, Any]:
    config: dict[str, Any]
    if endpoint.url is not None:
        config = {"url": endpoint.url.rstrip("/") + path}
    else:
        config = {
            "service": {
                "name": endpoint.service_name,
                "namespace": endpoint.service_namespace or policy.platform.namespace,
                "port": endpoint.service_port,
                "path": path,
            }
        }
    if endpoint.ca_bundle is not None:
        config["caBundle"] = base64.b64encode(endpoint.ca_bundle).decode()
    return config


def _webhook(
    policy: TenancyPolicySpec,
    endpoint: WebhookEndpoint,
    *,
    name: str,
    path: str,
    resource: str,
    operations: list[str],
    failure_policy: str,
    timeout: int,
    tenant: bool | None,
    conditions: list[tuple[str, str]],
    namespaced: bool,
) -> dict[str, Any]:
    exact, patterns = exempt_names(policy)
    expressions: list[dict[str, Any]] = [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": exact}
    ]
    if tenant is not None:
        op = "Exists" if tenant else "DoesNotExist"
        expressions.append({"key": c.LABEL_TENANT, "operator": op})
    match: list[dict[str, str]] = []
    if patterns:
        subject = "request.namespace" if namespaced else "object.metadata.name"
        regex = "^(" + "|".join(glob_to_re2(p) for p in patterns) + ")$"
        match.append({"name": "not-exempt", "expression": f"!{subject}.matches('{regex}')"})
    match += [{"name": n, "expression": e} for n, e in conditions]
    hook: dict[str, Any] = {
        "name": name,
        "clientConfig": _client_config(policy, endpoint, path),
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": [resource],
                "scope": "Namespaced" if namespaced else "Cluster",
            }
        ],
        "namespaceSelector": {"matchExpressions": expressions},
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": timeout,
        "admissionReviewVersions": ["v1"],
    }
    if match:
        hook["matchConditions"] = match
    return hook


def _metadata(endpoint: WebhookEndpoint) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": CONFIGURATION_NAME,
        "labels": {
            c.LABEL_MANAGED_BY: c.MANAGED_BY,
            c.LABEL_COMPONENT: "webhook",
            c.LABEL_PART_OF: c.MANAGED_BY,
        },
    }
    if endpoint.inject_ca_from:
        meta["annotations"] = {"cert-manager.io/inject-ca-from": endpoint.inject_ca_from}
    return meta


def webhook_configurations(
    policy: TenancyPolicySpec,
    endpoint: WebhookEndpoint | None = None,
    controller_users: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """[MutatingWebhookConfiguration, ValidatingWebhookConfiguration] for `policy`."""
    endpoint = endpoint or WebhookEndpoint()
    users = list(controller_users) or [default_controller_user(policy)]
    lake = policy.data_lake
    injects = lake.enabled and lake.injection == InjectionMode.KFTENANCY
    mutating: list[dict[str, Any]] = []
    validating: list[dict[str, Any]] = []

    def mutate(name: str, resource: str, operations: list[str], **kw: Any) -> dict[str, Any]:
        return _webhook(
            policy,
            endpoint,
            name=name,
            path=MUTATE_PATH,
            resource=resource,
            operations=operations,
            failure_policy="Ignore",
            timeout=MUTATE_TIMEOUT_SECONDS,
            **kw,
        )

    if policy.gpu.enabled:
        mutating.append(
            mutate(
                "namespaces.mutate.kftenancy.dev",
                "namespaces",
                ["CREATE", "UPDATE"],
                tenant=None,
                conditions=[],
                namespaced=False,
            )
        )
    if lake.enabled:
        mutating.append(
            mutate(
                "serviceaccounts.mutate.kftenancy.dev",
                "serviceaccounts",
                ["CREATE", "UPDATE"],
                tenant=True,
                conditions=[
                    (
                        "data-lake-account",
                        f"object.metadata.name in {_cel_list(lake.service_accounts)}",
                    )
                ],
                namespaced=True,
            )
        )
    if policy.gpu.enabled or injects:
        pods = mutate(
            "pods.mutate.kftenancy.dev",
            "pods",
            ["CREATE"],
            tenant=None if injects else True,
            conditions=[],
            namespaced=True,
        )
        # Sidecars added by later webhooks (e.g. Istio) get the web identity too.
        pods["reinvocationPolicy"] = "IfNeeded"
        mutating.append(pods)
    for hook in mutating:
        hook.setdefault("reinvocationPolicy", "Never")
    validating.append(
        _webhook(
            policy,
            endpoint,
            name="namespaces.validate.kftenancy.dev",
            path=VALIDATE_PATH,
            resource="namespaces",
            operations=["CREATE", "UPDATE"],
            failure_policy="Fail",
            timeout=VALIDATE_TIMEOUT_SECONDS,
            tenant=None,
            namespaced=False,
            conditions=[
                ("tenant-label-changed", f"{_label('object')} != {_label('oldObject')}"),
                ("not-kftenancy", f"!(request.userInfo.username in {_cel_list(users)})"),
            ],
        )
    )
    if policy.gpu.enabled:
        key = policy.gpu.taint.key
        validating.append(
            _webhook(
                policy,
                endpoint,
                name="pods.validate.kftenancy.dev",
                path=VALIDATE_PATH,
                resource="pods",
                operations=["CREATE", "UPDATE"],
                failure_policy="Fail",
                timeout=VALIDATE_TIMEOUT_SECONDS,
                tenant=False,
                namespaced=True,
                conditions=[
                    (
                        "may-tolerate-gpu-taint",
                        "has(object.spec.tolerations) && object.spec.tolerations.exists(t, "
                        f"!has(t.key) || t.key == '' || t.key == {_cel_str(key)})",
                    )
                ],
            )
        )
    out = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": _metadata(endpoint),
            "webhooks": mutating,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": _metadata(endpoint),
            "webhooks": validating,
        },
    ]
    return out


def platform_webhooks(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    """The configurations as installed in-cluster (part of `platform_objects`): the
    `kftenancy-webhook` Service in the platform namespace, its CA injected by
    cert-manager from the Certificate of the same name."""
    endpoint = WebhookEndpoint(
        inject_ca_from=f"{policy.platform.namespace}/{c.COMPONENT_WEBHOOK}",
    )
    return webhook_configurations(policy, endpoint)
