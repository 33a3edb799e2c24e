"""Object metadata every rendered manifest shares: our ownership labels."""

from __future__ import annotations

from typing import Any

from kftenancy import constants as c


def tenant_labels(tenant: str, **extra: str) -> dict[str, str]:
    """Labels that mark an object as kftenancy's and name the tenant it belongs to."""
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_TENANT: tenant, **extra}


def platform_labels(component: str) -> dict[str, str]:
    """Labels that mark a platform-level object as kftenancy's (no tenant)."""
    return {
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.MANAGED_BY,
        c.LABEL_COMPONENT: component,
    }


def metadata(
    name: str,
    labels: dict[str, str],
    namespace: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A metadata block; namespace and annotations only when given."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
