"""ServiceAccount rule (mutating, create/update).

In a tenant namespace with the data lake on, the ServiceAccounts the policy names
(`dataLake.serviceAccounts`, default `default-editor`) carry the web-identity annotations
of the EKS pod-identity-webhook convention, with the tenant's own role (from
`dataLake.roleArnTemplate`) instead of the seed's one shared role. A changed or removed
value is put back; other ServiceAccounts are left alone.
"""

from __future__ import annotations

from kftenancy import constants as c
from kftenancy.admission.context import AdmissionContext, edit_copy, ensure_map, string_map
from kftenancy.admission.review import AdmissionRequest, Decision, allow, mutate
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.iam import role_arn_for


def role_arn(policy: TenancyPolicySpec, namespace: str) -> str:
    """The tenant's role; a Profile's name equals its namespace's name."""
    return role_arn_for(policy, namespace)


def web_identity_annotations(policy: TenancyPolicySpec, namespace: str) -> dict[str, str]:
    """The annotations a data-lake ServiceAccount in tenant `namespace` carries."""
    lake = policy.data_lake
    return {
        c.ANN_ROLE_ARN: role_arn(policy, namespace),
        c.ANN_AUDIENCE: lake.audience,
        c.ANN_TOKEN_EXPIRATION: str(lake.token_expiration_seconds),
        c.ANN_STS_REGIONAL: "true" if lake.sts_regional_endpoints else "false",
    }


def mutate_service_account(
    policy: TenancyPolicySpec, request: AdmissionRequest, ctx: AdmissionContext
) -> Decision:
    obj = request.object
    if obj is None or request.operation not in ("CREATE", "UPDATE"):
        return allow()
    if not policy.data_lake.enabled or policy.is_exempt(request.namespace):
        return allow()
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if name not in policy.data_lake.service_accounts:
        return allow()
    labels = ctx.namespace_labels.get(request.namespace)
    if labels is None or c.LABEL_TENANT not in labels:
        return allow()
    current = string_map(obj, "annotations")
    want = web_identity_annotations(policy, request.namespace)
    changed = sorted(k for k, v in want.items() if k in current and current[k] != v)
    after = edit_copy(obj)
    ensure_map(ensure_map(after, "metadata"), "annotations").update(want)
    warnings = (
        [f"kftenancy: reset {', '.join(changed)} on {request.namespace}/{name}"] if changed else []
    )
    return mutate(obj, after, *warnings)
