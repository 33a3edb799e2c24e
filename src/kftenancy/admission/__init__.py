"""Admission rules (pure): AdmissionReview in, allowed/denied + JSON patch out.

`review(policy, body, phase, context)` is the one entry point the webhook server calls;
the per-resource rules live in `namespaces`, `serviceaccounts` and `pods`.
"""

from kftenancy.admission.context import AdmissionContext
from kftenancy.admission.dispatch import Outcome, Phase, review

__all__ = ["AdmissionContext", "Outcome", "Phase", "review"]
