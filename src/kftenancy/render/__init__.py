"""The renderer: desired objects as plain dicts, from the policy (and a Profile).

One source of truth for the controller, `kftenancy render`/`plan`, the chart and tests.
"""

from kftenancy.render.iam import iam_documents
from kftenancy.render.platform import platform_objects
from kftenancy.render.profile import profile_for_user
from kftenancy.render.tenant import TENANT_KINDS, tenant_objects
from kftenancy.render.tolerations import default_tolerations_annotation, whitelist_annotation

__all__ = [
    "TENANT_KINDS",
    "default_tolerations_annotation",
    "iam_documents",
    "platform_objects",
    "profile_for_user",
    "tenant_objects",
    "whitelist_annotation",
]
