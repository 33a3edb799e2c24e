"""Pod rules.

Mutating (create): in a tenant namespace, add the GPU toleration when no toleration
already tolerates the GPU taint; when the pod's ServiceAccount carries a role ARN, inject
the web identity (projected token volume, its mount and the AWS_* environment in every
container and init container not listed in `eks.amazonaws.com/skip-containers`, and an
`fsGroup` when the pod runs as non-root without one). Idempotent: a pod that already has
what we add is left as is. With `dataLake.injection: platform` the platform's own
pod-identity webhook injects, and we do not add a second copy.

Validating (create/update): outside tenant namespaces, a pod may not tolerate the GPU
taint — including the catch-all `operator: Exists` with no key. On update only tolerations
the update adds are judged, so existing pods can still be updated (e.g. finalizers
removed). Unknown namespaces count as non-tenant: the check fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kftenancy import constants as c
from kftenancy.admission.context import (
    AdmissionContext,
    BadObject,
    edit_copy,
    ensure_map,
    object_list,
    string_map,
)
from kftenancy.admission.review import AdmissionRequest, Decision, allow, deny, mutate
from kftenancy.admission.tolerations import describe, tolerates
from kftenancy.policy import InjectionMode, TenancyPolicySpec

MIN_TOKEN_SECONDS = 600  # the API server's minimum for projected tokens
NOBODY_GID = 65534
TOKEN_FILE = f"{c.WEB_IDENTITY_TOKEN_DIR}/{c.WEB_IDENTITY_TOKEN_PATH}"


def _spec(pod: Mapping[str, Any]) -> dict[str, Any]:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise BadObject("spec is missing or not an object")
    return spec


def _pod_name(request: AdmissionRequest) -> str:
    meta = (request.object or {}).get("metadata") or {}
    if isinstance(meta, dict):
        for key, suffix in (("name", ""), ("generateName", "<generated>")):
            value = meta.get(key)
            if isinstance(value, str) and value:
                return value + suffix
    return request.name or "<unnamed>"


def _is_tenant(request: AdmissionRequest, ctx: AdmissionContext) -> bool:
    labels = ctx.namespace_labels.get(request.namespace)
    return labels is not None and c.LABEL_TENANT in labels


# ------------------------------------------------------------------------ mutation


def _token_seconds(annotations: Mapping[str, str], default: int) -> tuple[int, str]:
    raw = annotations.get(c.ANN_TOKEN_EXPIRATION)
    if raw is None:
        return default, ""
    try:
        value = int(raw)
    except ValueError:
        return default, f"{c.ANN_TOKEN_EXPIRATION}={raw!r} is not a number; using {default}"
    if value < MIN_TOKEN_SECONDS:
        return MIN_TOKEN_SECONDS, f"{c.ANN_TOKEN_EXPIRATION}={value} is below the minimum 600"
    return value, ""


def _runs_as_non_root(spec: Mapping[str, Any], containers: list[dict[str, Any]]) -> bool:
    def non_root(ctx: Any) -> bool:
        if not isinstance(ctx, dict):
            return False
        uid = ctx.get("runAsUser")
        return ctx.get("runAsNonRoot") is True or (isinstance(uid, int) and uid != 0)

    return non_root(spec.get("securityContext")) or any(
        non_root(ct.get("securityContext")) for ct in containers
    )


def _inject_web_identity(
    policy: TenancyPolicySpec,
    pod: dict[str, Any],
    sa_annotations: Mapping[str, str],
    warnings: list[str],
) -> None:
    lake = policy.data_lake
    spec = pod["spec"]
    seconds, problem = _token_seconds(sa_annotations, lake.token_expiration_seconds)
    if problem:
        warnings.append(f"kftenancy: {problem}")
    audience = sa_annotations.get(c.ANN_AUDIENCE) or lake.audience
    volumes = object_list(spec, "volumes", "spec")
    if not any(v.get("name") == c.WEB_IDENTITY_VOLUME for v in volumes):
        token = {
            "audience": audience,
            "expirationSeconds": seconds,
            "path": c.WEB_IDENTITY_TOKEN_PATH,
        }
        spec["volumes"] = [
            *volumes,
            {
                "name": c.WEB_IDENTITY_VOLUME,
                "projected": {"sources": [{"serviceAccountToken": token}]},
            },
        ]
    env: list[tuple[str, str]] = [
        ("AWS_ROLE_ARN", sa_annotations[c.ANN_ROLE_ARN]),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN_FILE),
    ]
    regional = sa_annotations.get(c.ANN_STS_REGIONAL)
    if regional == "true" or (regional is None and lake.sts_regional_endpoints):
        env.append(("AWS_STS_REGIONAL_ENDPOINTS", "regional"))
    if lake.region:
        env += [("AWS_REGION", lake.region), ("AWS_DEFAULT_REGION", lake.region)]
    if lake.endpoint:
        # An S3-compatible store: AWS SDKs send STS and S3 calls there.
        env.append(("AWS_ENDPOINT_URL", lake.endpoint))
    skip = {
        s.strip()
        for s in string_map(pod, "annotations").get(c.ANN_SKIP_CONTAINERS, "").split(",")
        if s.strip()
    }
    injected: list[dict[str, Any]] = []
    for field in ("initContainers", "containers"):
        for container in object_list(spec, field, "spec"):
            if container.get("name") in skip:
                continue
            injected.append(container)
            mounts = object_list(container, "volumeMounts", f"spec.{field}[]")
            if not any(m.get("mountPath") == c.WEB_IDENTITY_TOKEN_DIR for m in mounts):
                container["volumeMounts"] = [
                    *mounts,
                    {
                        "name": c.WEB_IDENTITY_VOLUME,
                        "mountPath": c.WEB_IDENTITY_TOKEN_DIR,
                        "readOnly": True,
                    },
                ]
            have = {e.get("name") for e in object_list(container, "env", f"spec.{field}[]")}
            missing = [{"name": k, "value": v} for k, v in env if k not in have]
            if missing:
                container["env"] = [*(container.get("env") or []), *missing]
    security = spec.get("securityContext")
    if _runs_as_non_root(spec, injected) and not (
        isinstance(security, dict) and security.get("fsGroup") is not None
    ):
        security = ensure_map(spec, "securityContext")
        gid = security.get("runAsGroup")
        security["fsGroup"] = gid if isinstance(gid, int) and gid != 0 else NOBODY_GID


def mutate_pod(
    policy: TenancyPolicySpec, request: AdmissionRequest, ctx: AdmissionContext
) -> Decision:
    pod = request.object
    if pod is None or request.operation != "CREATE" or policy.is_exempt(request.namespace):
        return allow()
    after = edit_copy(pod)
    spec = _spec(after)
    warnings: list[str] = []
    if policy.gpu.enabled and _is_tenant(request, ctx):
        tolerations = object_list(spec, "tolerations", "spec")
        taint = policy.gpu.taint
        if not any(tolerates(t, taint) for t in tolerations):
            spec["tolerations"] = [*tolerations, taint.toleration().manifest()]
            for t in tolerations:
                if (t.get("key") or "") == taint.key:
                    warnings.append(
                        f"kftenancy: added the GPU toleration {describe(taint.toleration().manifest())}"
                        f" next to {describe(t)}, which does not tolerate the GPU taint"
                    )
    lake = policy.data_lake
    if lake.enabled and lake.injection == InjectionMode.KFTENANCY:
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        sa = ctx.service_accounts.get((request.namespace, str(account))) or {}
        if sa.get(c.ANN_ROLE_ARN):
            _inject_web_identity(policy, after, sa, warnings)
    return mutate(pod, after, *warnings)


# ------------------------------------------------------------------------ validation


def validate_pod(
    policy: TenancyPolicySpec, request: AdmissionRequest, ctx: AdmissionContext
) -> Decision:
    pod = request.object
    if pod is None or request.operation not in ("CREATE", "UPDATE"):
        return allow()
    if not policy.gpu.enabled or policy.is_exempt(request.namespace) or _is_tenant(request, ctx):
        return allow()
    tolerations = object_list(_spec(pod), "tolerations", "spec")
    existing: list[dict[str, Any]] = []
    if request.operation == "UPDATE" and request.old_object is not None:
        existing = object_list(_spec(request.old_object), "tolerations", "spec")
    taint = policy.gpu.taint
    for t in tolerations:
        if t not in existing and tolerates(t, taint):
            return deny(
                "gpu_toleration",
                f"pod {_pod_name(request)} in namespace {request.namespace} has the toleration "
                f"{describe(t)}, which tolerates the GPU taint "
                f"{taint.key}={taint.value}:{taint.effect}; only kftenancy tenant namespaces "
                f"(label {c.LABEL_TENANT}) may run on GPU nodes. Remove the toleration "
                "or run the pod in your tenant namespace.",
            )
    return allow()
