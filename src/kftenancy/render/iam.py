"""Per-tenant IAM documents for the data lake: `iam_documents(policy, profile)`.

Unlike the seed (one role trusted by `system:serviceaccount:*:*`), every tenant maps to
its own role, trusted only by the tenant's listed ServiceAccounts and the configured
audience, and allowed only the tenant's prefix of the bucket. One role per tenant also
avoids IAM's 2,048-character trust-policy limit that a shared role hits at ~30 profiles.
"""

from __future__ import annotations

from typing import Any

from kftenancy.errors import KftenancyError
from kftenancy.policy import TenancyPolicySpec
from kftenancy.profile import Profile

IAM_VERSION = "2012-10-17"


def _fill(template: str, profile: Profile) -> str:
    # The namespace name equals the Profile name; both placeholders are offered.
    return template.replace("{namespace}", profile.name).replace("{profile}", profile.name)


def role_arn(policy: TenancyPolicySpec, profile: Profile) -> str:
    """The tenant's role ARN from `dataLake.roleArnTemplate`."""
    return _fill(policy.data_lake.role_arn_template, profile)


def tenant_prefix(policy: TenancyPolicySpec, profile: Profile) -> str:
    """The tenant's key prefix in the data-lake bucket."""
    return _fill(policy.data_lake.prefix_template, profile)


def service_account_subjects(policy: TenancyPolicySpec, profile: Profile) -> list[str]:
    return [
        f"system:serviceaccount:{profile.name}:{sa}" for sa in policy.data_lake.service_accounts
    ]


def trust_policy(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """Who may assume the tenant's role: its own ServiceAccounts, with our audience."""
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


def permission_policy(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """What the role may do: list, read and write only under the tenant's prefix."""
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
        ],
    }


def iam_documents(policy: TenancyPolicySpec, profile: Profile) -> dict[str, Any]:
    """The tenant's role ARN with its trust and permission policy documents.

    Raises KftenancyError when the data lake is off (there is no role to describe).
    """
    if not policy.data_lake.enabled:
        raise KftenancyError("dataLake.enabled is false: there are no IAM documents to render")
    return {
        "roleArn": role_arn(policy, profile),
        "trustPolicy": trust_policy(policy, profile),
        "permissionPolicy": permission_policy(policy, profile),
    }
