"""SeaweedFS's IAM configuration (`weed ... -s3.iam.config`) for every active tenant.

`seaweedfs_iam_config(policy, tenants, signing_key=...)` is the S3-compatible variant of
the per-tenant AWS documents (`render.iam`): one OIDC provider for the cluster's
service-account issuer (explicit `jwksUri`: SeaweedFS's default path,
`/.well-known/jwks.json`, is not where kube-apiserver serves its keys), a deny-by-default
policy engine, and per tenant one role (trust: its own ServiceAccounts, `oidc:sub`) with
one attached policy (its prefix, the shared datasets). Pure: the same tenants give the
same bytes, so a writer can skip unchanged configurations.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from kftenancy.errors import KftenancyError
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.iam import (
    permission_policy,
    role_arn_for,
    role_name_for,
    s3compatible_trust_policy,
)

STS_ISSUER = "kftenancy-sts"
MIN_SIGNING_KEY_BYTES = 32


def seaweedfs_iam_config(
    policy: TenancyPolicySpec, tenants: Iterable[str], *, signing_key: bytes
) -> dict[str, Any]:
    """The whole IAM configuration for `tenants` (namespace names; order does not matter).

    `signing_key` signs the STS session tokens (keep it secret and stable: a new key
    invalidates every credential handed out). Raises KftenancyError for a key that is too
    short or two tenants whose role names collide."""
    lake = policy.data_lake
    if len(signing_key) < MIN_SIGNING_KEY_BYTES:
        raise KftenancyError(
            f"the STS signing key has {len(signing_key)} bytes; SeaweedFS needs at least "
            f"{MIN_SIGNING_KEY_BYTES}"
        )
    duration = f"{lake.session_duration_seconds}s"
    roles: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for tenant in sorted(set(tenants)):
        name = role_name_for(policy, tenant)
        if name in seen:
            raise KftenancyError(
                f"tenants {seen[name]!r} and {tenant!r} map to the same role {name!r}; "
                "put {namespace} into dataLake.roleArnTemplate"
            )
        seen[name] = tenant
        roles.append(
            {
                "roleName": name,
                "roleArn": role_arn_for(policy, tenant),
                "trustPolicy": s3compatible_trust_policy(policy, tenant),
                "attachedPolicies": [name],
                "description": f"kftenancy data-lake role of tenant {tenant}",
            }
        )
        policies.append({"name": name, "document": permission_policy(policy, tenant)})
    return {
        "sts": {
            "tokenDuration": duration,
            "maxSessionLength": duration,
            "issuer": STS_ISSUER,
            # Go's []byte in JSON is base64.
            "signingKey": base64.b64encode(signing_key).decode(),
        },
        "providers": [
            {
                "name": lake.identity_provider_name,
                "type": "oidc",
                "enabled": True,
                "config": {
                    "issuer": lake.issuer,
                    "clientId": lake.audience,
                    "jwksUri": lake.jwks,
                },
            }
        ],
        "policy": {"defaultEffect": "Deny"},
        "roles": roles,
        "policies": policies,
    }


def config_bytes(config: dict[str, Any]) -> bytes:
    """The configuration as written to disk (stable: sorted keys)."""
    return (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()


def tenants_in(config: dict[str, Any]) -> dict[str, str]:
    """role name → role ARN of every role in a configuration (for status and tests)."""
    return {str(r["roleName"]): str(r["roleArn"]) for r in config.get("roles") or []}
