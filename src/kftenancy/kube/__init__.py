"""The one Kubernetes API client wrapper (lightkube, async, server-side apply of plain dicts)."""

from kftenancy.kube.client import ApiError, Fenced, Kube, UnknownKind, WriteCounter, owned_selector

__all__ = ["ApiError", "Fenced", "Kube", "UnknownKind", "WriteCounter", "owned_selector"]
