"""The Profile onboarding creates for a user: `profile_for_user(policy, user_id)`."""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c
from kftenancy.naming import profile_name
from kftenancy.policy import TenancyPolicySpec
from kftenancy.render.meta import metadata, tenant_labels


def profile_for_user(policy: TenancyPolicySpec, user_id: str) -> dict[str, Any]:
    """A kubeflow.org/v1 Profile owned by `user_id`, named by `kftenancy.naming`.

    The exact user id is kept in the `kftenancy.dev/user-id` annotation (the name may be
    hashed). No resourceQuotaSpec: the policy's quota applies until an admin sets one.
    Raises NamingError for an empty user id.
    """
    name = profile_name(policy, user_id)
    return {
        "apiVersion": f"{c.KUBEFLOW_GROUP}/{c.PROFILE_VERSIONS[0]}",
        "kind": c.PROFILE_KIND,
        "metadata": metadata(name, tenant_labels(name), annotations={c.ANN_USER_ID: user_id}),
        "spec": {"owner": {"kind": "User", "name": user_id}},
    }
