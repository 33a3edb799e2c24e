"""Errors of the local control plane."""

from __future__ import annotations

from kftenancy.errors import KftenancyError


class ControlPlaneError(KftenancyError):
    """The local control plane could not be built, started or reached; the message says
    why (with the end of the relevant log) and what to do."""
