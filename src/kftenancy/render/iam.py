"""Per-tenant IAM documents for the data lake: `iam_documents(policy, profile)`.

Unlike the seed (one role trusted by `system:serviceaccount:*:*`), every tenant maps to
its own role, trusted only by the tenant's listed ServiceAccounts with the configured
audience and issuer, and allowed only the tenant's prefix of the bucket (plus the
policy's shared read-only datasets). One role per tenant also avoids IAM's
2,048-character trust-policy limit that a shared role hits at ~30 profiles.

Two dialects of the trust policy: AWS IAM's (condition keys `<issuer-host>:aud` and
`<issuer-host>:sub`, `Federated` = the OIDC provider's ARN) and the S3-compatible one
SeaweedFS's STS evaluates (`oidc:sub`, `Federated` = the provider's name; the audience is
checked by the provider itself). Both always carry the subject condition: a trust policy
without one admits every service account of the issuer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kftenancy.errors import KftenancyError
from kftenancy.policy import TenancyPolicySpec
from kftenancy.profile import Profile

IAM_VERSION = "2012-10-17"

# AWS IAM quotas (IAM User Guide, "IAM and AWS STS quotas"); IAM does not count white
# space in policy sizes.
ROLE_NAME_MAX = 64
TRUST_POLICY_MAX = 2048  # default quota (can be raised to 4,096)
MANAGED_POLICY_MAX = 6144
INLINE_ROLE_POLICIES_MAX = 10240  # all inline policies of one role together


def _fill(template: str, namespace: str) -> str:
    # The namespace name equals the Profile name; both placeholders are offered.
    return template.replace("{namespace}", namespace).replace("{profile}", namespace)


def _shorten(name: str) -> str:
    """A role name within IAM's 64 characters: long names keep a readable start and get a
    digest of the whole name, so they stay unique and stable."""
    if len(name) <= ROLE_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: ROLE_NAME_MAX - 9].rstrip('-')}-{digest}"


def role_arn_for(policy: TenancyPolicySpec, namespace: str) -> str:
    """The tenant's role ARN from `dataLake.roleArnTemplate` (the role name kept within
    IAM's 64 characters). The one place the webhook, the renderer and the applier use."""
    arn = _fill(policy.data_lake.role_arn_template, namespace)
    head, sep, name = arn.rpartition("/")
    return f"{head}{sep}{_shorten(name)}"


def role_name_for(policy: TenancyPolicySpec, namespace: str) -> str:
    """The role's name: the last path element of its ARN."""
    return role_arn_for(policy, namespace).rpartition("/")[2]


def role_arn(policy: TenancyPolicySpec, profile: Profile) -> str:
    return role_arn_for(policy, profile.name)


def tenant_prefix(policy: TenancyPolicySpec, profile: Profile | str) -> str:
    """The tenant's key prefix in the data-lake bucket."""
    name = profile if isinstance(profile, str) else profile.name
    return _fill(policy.data_lake.prefix_template, name)


def service_account_subjects(policy: TenancyPolicySpec, profile: Profile | str) -> list[str]:
    name = profile if isinstance(profile, str) else profile.name
    return [f"system:serviceaccount:{name}:{sa}" for sa in policy.data_lake.service_accounts]


def trust_policy(policy: TenancyPolicySpec, profile: Profile | str) -> dict[str, Any]:
    """AWS: who may assume the tenant's role: its own ServiceAccounts, with our audience,
    tokens of the cluster's issuer (its IAM OIDC provider)."""
    lake = policy.data_lake
    issuer = lake.issuer_host_path
    return {
        "Version": IAM_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": lake.oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{issuer}:aud": lake.audience,
                        f"{issuer}:sub": service_account_subjects(policy, profile),
                    }
                },
            }
        ],
    }


def s3compatible_trust_policy(policy: TenancyPolicySpec, profile: Profile | str) -> dict[str, Any]:
    """SeaweedFS's STS: the same trust in its dialect. Conditions must use `oidc:sub`
    (`<issuer-host>:sub` and `oidc:aud` fail closed there); `Federated` is the provider's
    name; the provider checks issuer, signature, expiry and audience (its clientId)."""
    lake = policy.data_lake
    return {
        "Version": IAM_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": lake.identity_provider_name},
                "Action": ["sts:AssumeRoleWithWebIdentity"],
                "Condition": {
                    "StringEquals": {"oidc:sub": service_account_subjects(policy, profile)}
                },
            }
        ],
    }


def _shared_statements(policy: TenancyPolicySpec) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for i, ds in enumerate(policy.data_lake.shared_datasets):
        listing: dict[str, Any] = {
            "Sid": f"ListShared{i}",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{ds.bucket}"],
        }
        if ds.prefix:
            listing["Condition"] = {"StringLike": {"s3:prefix": [ds.prefix, f"{ds.prefix}*"]}}
        statements.append(listing)
        statements.append(
            {
                "Sid": f"ReadShared{i}",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{ds.bucket}/{ds.prefix}*"],
            }
        )
    return statements


def permission_policy(policy: TenancyPolicySpec, profile: Profile | str) -> dict[str, Any]:
    """What the role may do: list, read and write only under the tenant's prefix; read the
    shared datasets."""
    bucket = policy.data_lake.bucket
    prefix = tenant_prefix(policy, profile)
    return {
        "Version": IAM_VERSION,
        "Statement": [
            {
                "Sid": "ListTenantPrefix",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
            },
            {
                "Sid": "ReadWriteTenantObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
            },
            *_shared_statements(policy),
        ],
    }


def iam_documents(policy: TenancyPolicySpec, profile: Profile | str) -> dict[str, Any]:
    """The tenant's role (name, ARN) with its AWS trust policy, its S3-compatible trust
    policy and its permission policy.

    Raises KftenancyError when the data lake is off (there is no role to describe).
    """
    if not policy.data_lake.enabled:
        raise KftenancyError("dataLake.enabled is false: there are no IAM documents to render")
    name = profile if isinstance(profile, str) else profile.name
    return {
        "roleName": role_name_for(policy, name),
        "roleArn": role_arn_for(policy, name),
        "bucket": policy.data_lake.bucket,
        "prefix": tenant_prefix(policy, name),
        "maxSessionDuration": max(3600, policy.data_lake.session_duration_seconds),
        "trustPolicy": trust_policy(policy, name),
        "s3CompatibleTrustPolicy": s3compatible_trust_policy(policy, name),
        "permissionPolicy": permission_policy(policy, name),
    }


def policy_size(document: Mapping[str, Any]) -> int:
    """A policy's size as IAM counts it (white space outside strings not counted)."""
    return len(json.dumps(document, separators=(",", ":")))


def aws_limit_problems(documents: Mapping[str, Any]) -> list[str]:
    """Which of AWS IAM's documented limits `iam_documents(...)` output breaks (empty: none)."""
    problems = []
    name = str(documents["roleName"])
    if len(name) > ROLE_NAME_MAX:
        problems.append(f"role name {name!r} is {len(name)} > {ROLE_NAME_MAX} characters")
    trust = policy_size(documents["trustPolicy"])
    if trust > TRUST_POLICY_MAX:
        problems.append(f"{name}: trust policy is {trust} > {TRUST_POLICY_MAX} characters")
    permissions = policy_size(documents["permissionPolicy"])
    if permissions > MANAGED_POLICY_MAX:
        problems.append(
            f"{name}: permission policy is {permissions} > {MANAGED_POLICY_MAX} characters"
        )
    return problems
