"""The checks `kftenancy doctor` runs: pure functions of a `Snapshot`.

Each returns at least one finding (OK when nothing is wrong), and a fix with every
warning and error. The registry (`CHECKS`, in order of dependency: the policy first,
then what depends on it) is where an area adds its check: one `Check(...)` line.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from kftenancy import constants as c
from kftenancy.doctor.model import Check, Finding, Obj, Read, Snapshot, error, ok, warning
from kftenancy.policy import Flavor, MeshFlavor, TenancyPolicySpec
from kftenancy.render.gateway import PROVIDER_NAME, ext_authz_provider
from kftenancy.render.platform import crds as expected_crds
from kftenancy.render.rbac import component_rules
from kftenancy.render.webhooks import CONFIGURATION_NAME, webhook_configurations

CRD = Read("apiextensions.k8s.io/v1", "CustomResourceDefinition")
MUTATING = Read("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
VALIDATING = Read("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")
CONFIGMAP = Read("v1", "ConfigMap")
SMCP = Read("maistra.io/v2", "ServiceMeshControlPlane")
AUTHZ_POLICY = Read("security.istio.io/v1", "AuthorizationPolicy")
SECURITY_POLICY = Read("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy")
NODE = Read("v1", "Node")
CLUSTER_ROLE_BINDING = Read("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")
PROFILE = Read(f"{c.KUBEFLOW_GROUP}/v1", c.PROFILE_KIND)
CLUSTER_ROLE = Read("rbac.authorization.k8s.io/v1", "ClusterRole")

EXPIRY_WARNING = timedelta(days=14)
FIX_CRDS = (
    "install this version's CRDs: `helm upgrade kftenancy deploy/helm/kftenancy` "
    "(Helm does not upgrade CRDs: first `kubectl apply --server-side -f deploy/crds/`), "
    "or on OLM approve the pending InstallPlan"
)
FIX_PLATFORM = (
    "re-apply the platform objects: `helm upgrade kftenancy deploy/helm/kftenancy` or "
    "`kftenancy render --policy policy.yaml --platform | kubectl apply --server-side -f -`"
)


def _policy(snap: Snapshot) -> TenancyPolicySpec:
    assert snap.policy is not None  # run_checks only calls checks that need it with one
    return snap.policy


# ---------------------------------------------------------------------------- policy


def check_policy(snap: Snapshot) -> list[Finding]:
    name = "policy"
    if snap.policy is None:
        return [
            error(
                name,
                snap.policy_error or f"no TenancyPolicy {c.DEFAULT_POLICY_NAME!r}",
                "create it from values.yaml (`helm upgrade`), or "
                "`kubectl apply -f examples/policy.yaml`; the other checks need it",
                f"{c.POLICY_KIND}/{c.DEFAULT_POLICY_NAME}",
            )
        ]
    return [ok(name, f"TenancyPolicy {c.DEFAULT_POLICY_NAME!r} is valid")]


# ---------------------------------------------------------------------------- CRDs


def _served_versions(crd: Obj) -> set[str]:
    return {v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")}


def _established(crd: Obj) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(x.get("type") == "Established" and x.get("status") == "True" for x in conditions)


def _schemas(crd: Obj) -> dict[str, Any]:
    return {
        v["name"]: (v.get("schema") or {}).get("openAPIV3Schema")
        for v in (crd.get("spec") or {}).get("versions") or []
    }


def check_crds(snap: Snapshot) -> list[Finding]:
    name = "crds"
    policy = _policy(snap)
    installed = {o["metadata"]["name"]: o for o in snap.of(CRD.api_version, CRD.kind)}
    out: list[Finding] = []
    wanted = expected_crds(policy)
    profile_crd_name = f"{c.PROFILE_PLURAL}.{c.KUBEFLOW_GROUP}"
    for crd in wanted:
        crd_name = crd["metadata"]["name"]
        ref = f"CustomResourceDefinition/{crd_name}"
        have = installed.get(crd_name)
        if have is None:
            out.append(error(name, f"CRD {crd_name} is not installed", FIX_CRDS, ref))
            continue
        missing = _served_versions(crd) - _served_versions(have)
        if missing:
            out.append(
                error(
                    name,
                    f"CRD {crd_name} does not serve version(s) {sorted(missing)} "
                    f"(serves {sorted(_served_versions(have))})",
                    FIX_CRDS,
                    ref,
                )
            )
        elif not _established(have):
            out.append(
                error(
                    name,
                    f"CRD {crd_name} is not Established",
                    f"`kubectl describe crd {crd_name}`: fix the condition it reports",
                    ref,
                )
            )
        elif _schemas(have) != _schemas(crd):
            out.append(
                warning(
                    name,
                    f"CRD {crd_name} has a schema other than this kftenancy version's "
                    "(an older or newer install)",
                    FIX_CRDS,
                    ref,
                )
            )
        else:
            out.append(ok(name, f"CRD {crd_name} serves {sorted(_served_versions(have))}"))
    if policy.platform.kubeflow_installed:
        have = installed.get(profile_crd_name)
        if have is None or "v1" not in _served_versions(have):
            out.append(
                error(
                    name,
                    f"platform.kubeflowInstalled is true but {profile_crd_name} (v1) is not served",
                    "install Kubeflow's profile controller CRDs, or set "
                    "platform.kubeflowInstalled: false so kftenancy ships the Profile CRD",
                    f"CustomResourceDefinition/{profile_crd_name}",
                )
            )
        else:
            out.append(ok(name, f"Kubeflow's CRD {profile_crd_name} serves v1"))
    return out


# ---------------------------------------------------------------------------- RBAC


def _grants(rules: Any) -> set[tuple[str, str, str, str]]:
    """Rules as single grants (group, resource, verb, name or "*"), so that the same
    permissions split or merged differently compare equal."""
    out = set()
    for r in rules or []:
        names = r.get("resourceNames") or ["*"]
        for g in r.get("apiGroups") or []:
            for res in r.get("resources") or []:
                for verb in r.get("verbs") or []:
                    out |= {(g, res, verb, n) for n in names}
    return out


def _describe(grants: set[tuple[str, str, str, str]]) -> str:
    return "; ".join(
        f"{verb} {g + '/' if g else ''}{res}{'' if n == '*' else ' ' + n}"
        for g, res, verb, n in sorted(grants)
    )


def check_rbac(snap: Snapshot) -> list[Finding]:
    """Each component's ClusterRole grants exactly what this policy needs (a policy
    edited without regenerating the chart leaves RBAC behind)."""
    name = "rbac"
    policy = _policy(snap)
    roles = {o["metadata"]["name"]: o for o in snap.of(*_av(CLUSTER_ROLE))}
    fix = (
        "regenerate the chart from this policy (`kftenancy chart --policy policy.yaml --dir "
        "CHART`) and `helm upgrade`, or apply `kftenancy render --policy policy.yaml --platform`"
    )
    out: list[Finding] = []
    for component, rules in component_rules(policy).items():
        ref = f"ClusterRole/{component}"
        have = roles.get(component)
        if have is None:
            out.append(
                error(name, f"no ClusterRole {component}: the component cannot run", fix, ref)
            )
            continue
        want, got = _grants(rules), _grants(have.get("rules"))
        if want - got:
            lacking = _describe(want - got)
            out.append(
                error(
                    name,
                    f"ClusterRole {component} lacks what this policy needs: {lacking}",
                    fix,
                    ref,
                )
            )
        elif got - want:
            extra = _describe(got - want)
            out.append(
                warning(
                    name,
                    f"ClusterRole {component} grants more than this policy needs: {extra}",
                    fix,
                    ref,
                )
            )
    if not out:
        out.append(ok(name, "each component's ClusterRole is exactly what this policy needs"))
    return out


# ---------------------------------------------------------------------------- webhooks


def _pem_certs(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _expiry(
    name: str, what: str, cert: x509.Certificate, now: datetime, fix: str, ref: str
) -> Finding | None:
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        return error(name, f"{what} expired at {not_after.isoformat()}", fix, ref)
    if cert.not_valid_before_utc > now:
        return error(name, f"{what} is not valid before {cert.not_valid_before_utc}", fix, ref)
    if not_after - now < EXPIRY_WARNING:
        return warning(name, f"{what} expires soon ({not_after.isoformat()})", fix, ref)
    return None


def _issued_by(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return cert in cas


def _endpoint_key(config: dict[str, Any]) -> str:
    """The key the shell stores a webhook endpoint's serving certificate under."""
    if config.get("url"):
        return str(config["url"])
    svc = config.get("service") or {}
    return f"service:{svc.get('namespace')}/{svc.get('name')}"


def check_webhooks(snap: Snapshot) -> list[Finding]:
    name = "webhooks"
    policy = _policy(snap)
    out: list[Finding] = []
    rotate = (
        "renew the certificate: with cert-manager check `kubectl get certificate -n "
        f"{policy.platform.namespace}`; self-managed, restart the webhook Deployment "
        "(it issues a new serving pair and re-publishes the caBundle)"
    )
    for want in webhook_configurations(policy):
        kind = want["kind"]
        ref = f"{kind}/{CONFIGURATION_NAME}"
        have = snap.named(want["apiVersion"], kind, CONFIGURATION_NAME)
        if have is None:
            out.append(
                error(name, f"{kind} {CONFIGURATION_NAME!r} is not registered", FIX_PLATFORM, ref)
            )
            continue
        hooks = {h["name"]: h for h in have.get("webhooks") or []}
        missing = sorted({h["name"] for h in want["webhooks"]} - set(hooks))
        if missing:
            out.append(
                error(
                    name,
                    f"{kind} {CONFIGURATION_NAME!r} lacks webhook(s) {missing}",
                    FIX_PLATFORM,
                    ref,
                )
            )
        problems = 0
        injected = ((have.get("metadata") or {}).get("annotations") or {}).get(
            "cert-manager.io/inject-ca-from"
        )
        for hook_name, hook in sorted(hooks.items()):
            config = hook.get("clientConfig") or {}
            bundle = config.get("caBundle")
            cas = _pem_certs(base64.b64decode(bundle)) if bundle else []
            if not cas:
                why = (
                    f"cert-manager has not injected the CA from {injected} (is its cainjector "
                    "running, is the Certificate Ready?)"
                    if injected
                    else "no caBundle: the API server cannot verify the webhook"
                )
                out.append(error(name, f"{hook_name}: {why}", rotate, ref))
                problems += 1
                continue
            for ca in cas:
                found = _expiry(name, f"{hook_name}: the caBundle CA", ca, snap.now, rotate, ref)
                if found:
                    out.append(found)
                    problems += 1
            serving = (snap.facts.get("webhook_serving") or {}).get(_endpoint_key(config))
            if serving is None:
                continue
            if "error" in serving:
                out.append(
                    error(
                        name,
                        f"{hook_name}: cannot read the serving certificate: {serving['error']}",
                        "check that the webhook runs and its Service/URL answers on TLS",
                        ref,
                    )
                )
                problems += 1
                continue
            certs = _pem_certs(serving["pem"].encode())
            if not certs:
                continue
            cert = certs[0]
            found = _expiry(
                name, f"{hook_name}: the serving certificate", cert, snap.now, rotate, ref
            )
            if found:
                out.append(found)
                problems += 1
            elif not _issued_by(cert, cas):
                out.append(
                    error(
                        name,
                        f"{hook_name}: the serving certificate is not signed by the caBundle CA "
                        "(every admission call fails TLS)",
                        rotate,
                        ref,
                    )
                )
                problems += 1
        if not missing and not problems:
            out.append(
                ok(name, f"{kind} {CONFIGURATION_NAME!r}: {len(hooks)} webhook(s), CA valid")
            )
    return out


# ---------------------------------------------------------------------------- mesh


def _providers(entries: Any) -> dict[str, Any]:
    return {str(p.get("name")): p for p in entries or [] if isinstance(p, dict)}


def check_mesh(snap: Snapshot) -> list[Finding]:
    name = "mesh"
    policy = _policy(snap)
    mesh = policy.mesh
    want = ext_authz_provider(policy)
    ref_cp = mesh.control_plane_ref
    fix_provider = (
        f"add the `{PROVIDER_NAME}` extension provider to the mesh config "
        "(`kftenancy render --policy policy.yaml --gateway` prints it)"
    )
    out: list[Finding] = []
    if mesh.flavor == MeshFlavor.NONE:
        ref = policy.identity.front_door.gateway_api
        if ref is None:
            return [ok(name, "no mesh: run the gateway with `--mode proxy` in front of Kubeflow")]
        if not snap.served(SECURITY_POLICY.api_version, SECURITY_POLICY.kind):
            return [
                error(
                    name,
                    "Envoy Gateway's SecurityPolicy kind is not served",
                    "install Envoy Gateway, or unset identity.frontDoor.gatewayApi",
                )
            ]
        if snap.named(*_av(SECURITY_POLICY), "kftenancy-ext-authz", ref.namespace) is None:
            return [
                error(
                    name,
                    f"no SecurityPolicy kftenancy-ext-authz in {ref.namespace}: Gateway {ref.name} "
                    "does not call the kftenancy gateway",
                    FIX_PLATFORM,
                    f"SecurityPolicy/{ref.namespace}/kftenancy-ext-authz",
                )
            ]
        return [ok(name, f"Gateway {ref.namespace}/{ref.name} calls the kftenancy gateway")]
    if not snap.served(AUTHZ_POLICY.api_version, AUTHZ_POLICY.kind):
        return [
            error(
                name,
                f"mesh.flavor is {mesh.flavor} but Istio's AuthorizationPolicy kind is not served",
                "install the mesh (Istio / OpenShift Service Mesh), or set mesh.flavor: none",
            )
        ]
    providers: dict[str, Any] = {}
    where = ""
    if mesh.flavor == MeshFlavor.OSSM:
        where = f"ServiceMeshControlPlane {ref_cp.namespace}/{ref_cp.name}"
        smcp = snap.named(*_av(SMCP), ref_cp.name, ref_cp.namespace)
        if smcp is None:
            return [
                error(
                    name,
                    f"no {where} (mesh.controlPlaneRef)",
                    "install OpenShift Service Mesh's control plane, or fix mesh.controlPlaneRef",
                    f"ServiceMeshControlPlane/{ref_cp.namespace}/{ref_cp.name}",
                )
            ]
        meshcfg = ((smcp.get("spec") or {}).get("meshConfig") or {}).get("extensionProviders")
        providers = _providers(meshcfg)
    else:
        cm_name = f"istio-{mesh.revision}" if mesh.revision else "istio"
        where = f"ConfigMap {ref_cp.namespace}/{cm_name}"
        cm = snap.named(*_av(CONFIGMAP), cm_name, ref_cp.namespace)
        if cm is None:
            return [
                error(
                    name,
                    f"no mesh config {where}",
                    "install Istio (its istiod writes this ConfigMap), or fix mesh.controlPlaneRef",
                    f"ConfigMap/{ref_cp.namespace}/{cm_name}",
                )
            ]
        try:
            parsed = yaml.safe_load((cm.get("data") or {}).get("mesh") or "") or {}
        except yaml.YAMLError as err:
            return [error(name, f"{where}: data.mesh is not YAML: {err}", fix_provider)]
        providers = _providers(parsed.get("extensionProviders") if isinstance(parsed, dict) else [])
    have = providers.get(PROVIDER_NAME)
    if have is None:
        out.append(
            error(
                name,
                f"{where} has no extension provider {PROVIDER_NAME!r}: the CUSTOM policy on the "
                "ingress gateway refuses every request",
                fix_provider,
            )
        )
    elif have != want:
        out.append(
            warning(
                name,
                f"{where}: provider {PROVIDER_NAME!r} differs from this policy's "
                f"({json.dumps(have, sort_keys=True)})",
                fix_provider,
            )
        )
    gw_ns = mesh.ingress_gateway.namespace
    if snap.named(*_av(AUTHZ_POLICY), "kftenancy-ext-authz", gw_ns) is None:
        out.append(
            error(
                name,
                f"no CUSTOM AuthorizationPolicy kftenancy-ext-authz in {gw_ns}: requests reach "
                "Kubeflow without the kftenancy gateway's check",
                "run the controller (it applies it with the platform objects), or " + FIX_PLATFORM,
                f"AuthorizationPolicy/{gw_ns}/kftenancy-ext-authz",
            )
        )
    if not out:
        out.append(ok(name, f"{where} routes checks to {PROVIDER_NAME}; CUSTOM policy in place"))
    return out


def _av(read: Read) -> tuple[str, str]:
    return read.api_version, read.kind


# ---------------------------------------------------------------------------- PodTolerationRestriction


def check_toleration_restriction(snap: Snapshot) -> list[Finding]:
    name = "pod-toleration-restriction"
    policy = _policy(snap)
    state = snap.facts.get("pod_toleration_restriction")
    if state is None:
        detail = snap.facts.get("pod_toleration_restriction_error", "no answer")
        return [
            warning(
                name,
                f"cannot tell whether PodTolerationRestriction is on: {detail}",
                f"make sure namespace {policy.platform.namespace} exists with its `default` "
                "ServiceAccount (doctor dry-runs a pod there)",
            )
        ]
    if state:
        return [ok(name, "PodTolerationRestriction is on: namespace toleration annotations apply")]
    if policy.platform.flavor == Flavor.OPENSHIFT:
        return [
            warning(
                name,
                "PodTolerationRestriction is off, which OpenShift normally enables",
                "check the API server's admission configuration; kftenancy's pod webhooks "
                "still enforce GPU isolation",
            )
        ]
    return [
        ok(
            name,
            "PodTolerationRestriction is off: the namespace annotations are inert and the "
            "kftenancy webhook enforces GPU isolation itself",
        )
    ]


# ---------------------------------------------------------------------------- GPU nodes


def _gpus(node: Obj, resource: str) -> int:
    status = node.get("status") or {}
    raw = (status.get("capacity") or {}).get(resource) or (status.get("allocatable") or {}).get(
        resource
    )
    try:
        return int(str(raw or "0"))
    except ValueError:
        return 0


def check_gpu_nodes(snap: Snapshot) -> list[Finding]:
    name = "gpu-nodes"
    policy = _policy(snap)
    gpu = policy.gpu
    if not gpu.enabled:
        return [ok(name, "gpu.enabled is false")]
    taint = gpu.taint
    nodes = [n for n in snap.of(*_av(NODE)) if _gpus(n, gpu.resource_name) > 0]
    if not nodes:
        return [ok(name, f"no node offers {gpu.resource_name} (yet)")]
    out: list[Finding] = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        node_name = node["metadata"]["name"]
        ref = f"Node/{node_name}"
        taints = (node.get("spec") or {}).get("taints") or []
        if not any(
            t.get("key") == taint.key
            and t.get("value", "") == taint.value
            and t.get("effect") == taint.effect
            for t in taints
        ):
            out.append(
                error(
                    name,
                    f"GPU node {node_name} lacks the taint {taint.key}={taint.value}:{taint.effect}: "
                    "pods of any namespace can land on it",
                    f"`kubectl taint node {node_name} {taint.key}={taint.value}:{taint.effect}` "
                    "and add the taint to its MachineSet/node pool template",
                    ref,
                )
            )
        labels = (node.get("metadata") or {}).get("labels") or {}
        if gpu.pools and not any(
            all(labels.get(k) == v for k, v in pool.node_selector.items())
            and labels.get("cluster-api/accelerator") == pool.accelerator
            for pool in gpu.pools
        ):
            wanted = "; ".join(
                ",".join(
                    f"{k}={v}"
                    for k, v in {
                        **pool.node_selector,
                        "cluster-api/accelerator": pool.accelerator,
                    }.items()
                )
                for pool in gpu.pools
            )
            out.append(
                error(
                    name,
                    f"GPU node {node_name} matches no gpu.pools entry (labels wanted: {wanted}): "
                    "its capacity is not counted and the autoscaler cannot scale its pool",
                    f"label it (`kubectl label node {node_name} ...`) and its MachineSet "
                    "template, or add a pool for it to the policy",
                    ref,
                )
            )
    if not out:
        out.append(ok(name, f"{len(nodes)} GPU node(s) tainted and labelled"))
    return out


# ---------------------------------------------------------------------------- issuer discovery


def check_issuer_discovery(snap: Snapshot) -> list[Finding]:
    name = "issuer-discovery"
    policy = _policy(snap)
    if not policy.data_lake.enabled:
        return [ok(name, "dataLake is off: STS does not need the issuer discovery")]
    out: list[Finding] = []
    doc = snap.facts.get("issuer_discovery") or {}
    if "error" in doc or "issuer" not in doc:
        return [
            error(
                name,
                f"the API server serves no issuer discovery document: {doc.get('error', doc)}",
                "start kube-apiserver with --service-account-issuer (https URL) and "
                "--service-account-jwks-uri",
            )
        ]
    issuer = str(doc["issuer"])
    want = policy.data_lake.issuer_host_path
    if issuer.removeprefix("https://").rstrip("/") != want.rstrip("/"):
        out.append(
            error(
                name,
                f"dataLake.issuerHostPath is {want!r} but the cluster's issuer is {issuer!r}: "
                "STS will refuse every tenant token",
                f"set dataLake.issuerHostPath: {issuer.removeprefix('https://')!r} and register "
                "that issuer as the IAM OIDC provider",
            )
        )
    public = any(
        (b.get("roleRef") or {}).get("name") == "system:service-account-issuer-discovery"
        and any(
            s.get("kind") == "Group" and s.get("name") == "system:unauthenticated"
            for s in b.get("subjects") or []
        )
        for b in snap.of(*_av(CLUSTER_ROLE_BINDING))
    )
    if not public:
        out.append(
            warning(
                name,
                "the issuer discovery and JWKS are readable by service accounts only: an STS "
                "that fetches them from the API server cannot verify tokens",
                "publish them (e.g. an S3-hosted discovery document), or `kubectl create "
                "clusterrolebinding service-account-issuer-discovery-public "
                "--clusterrole=system:service-account-issuer-discovery "
                "--group=system:unauthenticated`",
            )
        )
    if not out:
        out.append(ok(name, f"issuer {issuer} is published and matches the policy"))
    return out


# ---------------------------------------------------------------------------- tenants


def check_tenants(snap: Snapshot) -> list[Finding]:
    name = "tenants"
    if not snap.served(*_av(PROFILE)):
        return [error(name, "the Profile kind (kubeflow.org/v1) is not served", FIX_CRDS)]
    profiles = snap.of(*_av(PROFILE))
    out: list[Finding] = []
    for p in sorted(profiles, key=lambda p: str(p["metadata"]["name"])):
        if (p.get("metadata") or {}).get("deletionTimestamp"):
            continue
        p_name = p["metadata"]["name"]
        ready = next(
            (
                x
                for x in (p.get("status") or {}).get("conditions") or []
                if x.get("type") == "Ready"
            ),
            None,
        )
        if ready is None or ready.get("status") != "True":
            why = (
                f"{ready.get('reason', '')}: {ready.get('message', '')}"
                if ready
                else "no Ready condition (is the controller running?)"
            )
            out.append(
                error(
                    name,
                    f"tenant {p_name} is not Ready ({why})",
                    f"`kubectl describe profile {p_name}` shows the Events; `kftenancy plan` "
                    "shows what the controller would change",
                    f"Profile/{p_name}",
                )
            )
    if not out:
        out.append(ok(name, f"{len(profiles)} tenant(s), all Ready"))
    return out


PRIORITY_CLASS = Read("scheduling.k8s.io/v1", "PriorityClass")
AUTOSCALER_DEPLOYMENT = Read("apps/v1", "Deployment", "kube-system")
CLUSTER_AUTOSCALER = Read("autoscaling.openshift.io/v1", "ClusterAutoscaler")
KUEUE_KINDS = tuple(Read(c.KUEUE_API, k) for k in ("ClusterQueue", "LocalQueue", "ResourceFlavor"))


def check_gpu_capacity(snap: Snapshot) -> list[Finding]:
    """Placeholder priority vs the autoscaler cutoff, the autoscaler's GPU limits, Kueue."""
    from kftenancy.capacity.doctor import GPUCluster, gpu_capacity_findings

    args: list[str] | None = None
    for dep in snap.of(*_av(AUTOSCALER_DEPLOYMENT)):
        for container in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get(
            "containers"
        ) or []:
            if "cluster-autoscaler" in str(container.get("image", "")) + str(container.get("name")):
                args = [
                    *(args or []),
                    *(container.get("command") or []),
                    *(container.get("args") or []),
                ]
    cluster = GPUCluster(
        priority_classes=snap.of(*_av(PRIORITY_CLASS)),
        autoscaler_args=args,
        cluster_autoscalers=snap.of(*_av(CLUSTER_AUTOSCALER)),
        served_kinds=frozenset(
            (r.api_version, r.kind) for r in KUEUE_KINDS if snap.served(r.api_version, r.kind)
        ),
    )
    return gpu_capacity_findings(_policy(snap), cluster)


def _capacity_reads(policy: TenancyPolicySpec | None) -> tuple[Read, ...]:
    if policy is None or not (policy.gpu.enabled and policy.gpu.pools):
        return ()
    reads = [PRIORITY_CLASS, AUTOSCALER_DEPLOYMENT, CLUSTER_AUTOSCALER]
    return (*reads, *KUEUE_KINDS) if policy.gpu.queues.enabled else tuple(reads)


def _mesh_reads(policy: TenancyPolicySpec | None) -> tuple[Read, ...]:
    """The mesh objects, listed only where the policy says they are (not every ConfigMap)."""
    if policy is None:
        return ()
    mesh = policy.mesh
    reads = [Read(*_av(AUTHZ_POLICY), mesh.ingress_gateway.namespace)]
    if mesh.flavor == MeshFlavor.OSSM:
        reads.append(Read(*_av(SMCP), mesh.control_plane_ref.namespace))
    elif mesh.flavor == MeshFlavor.ISTIO:
        reads.append(Read(*_av(CONFIGMAP), mesh.control_plane_ref.namespace))
    gateway_api = policy.identity.front_door.gateway_api
    if gateway_api is not None:
        reads.append(Read(*_av(SECURITY_POLICY), gateway_api.namespace))
    return tuple(reads)


CHECKS: tuple[Check, ...] = (
    Check("policy", "TenancyPolicy present and valid", (), check_policy, needs_policy=False),
    Check("crds", "CRDs installed, versions served", (CRD,), check_crds),
    Check("rbac", "component ClusterRoles match the policy", (CLUSTER_ROLE,), check_rbac),
    Check(
        "webhooks", "webhook registration and certificates", (MUTATING, VALIDATING), check_webhooks
    ),
    Check("mesh", "mesh / Gateway API and the authorization provider", _mesh_reads, check_mesh),
    Check(
        "pod-toleration-restriction", "PodTolerationRestriction", (), check_toleration_restriction
    ),
    Check("gpu-nodes", "GPU nodes' taints and labels", (NODE,), check_gpu_nodes),
    Check(
        "gpu-capacity",
        "warm headroom priority, autoscaler GPU limits, Kueue",
        _capacity_reads,
        check_gpu_capacity,
    ),
    Check(
        "issuer-discovery",
        "service-account issuer discovery (STS)",
        (CLUSTER_ROLE_BINDING,),
        check_issuer_discovery,
    ),
    Check("tenants", "tenants Ready", (PROFILE,), check_tenants, needs_policy=False),
)
