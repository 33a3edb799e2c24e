"""One pure entry point: (policy, decoded body, phase, context) → AdmissionReview answer.

Routing is by resource (group, resource), not by kind, because that is what the webhook
configuration's rules select on. Subresources and resources we have no rule for are
allowed untouched. If a rule fails unexpectedly, the validating phase denies (fail
closed) and the mutating phase allows without a patch (its failurePolicy is Ignore for
the same reason: availability over mutation); both say why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kftenancy.admission.context import AdmissionContext, BadObject
from kftenancy.admission.namespaces import mutate_namespace, validate_namespace
from kftenancy.admission.pods import mutate_pod, validate_pod
from kftenancy.admission.review import (
    AdmissionRequest,
    Decision,
    Malformed,
    allow,
    deny,
    parse_review,
    respond,
)
from kftenancy.admission.serviceaccounts import mutate_service_account
from kftenancy.policy import TenancyPolicySpec


class Phase(StrEnum):
    MUTATE = "mutate"
    VALIDATE = "validate"


Rule = Callable[[TenancyPolicySpec, AdmissionRequest, AdmissionContext], Decision]

RULES: dict[tuple[Phase, str, str], Rule] = {
    (Phase.MUTATE, "", "namespaces"): mutate_namespace,
    (Phase.VALIDATE, "", "namespaces"): validate_namespace,
    (Phase.MUTATE, "", "serviceaccounts"): mutate_service_account,
    (Phase.MUTATE, "", "pods"): mutate_pod,
    (Phase.VALIDATE, "", "pods"): validate_pod,
}


@dataclass(frozen=True)
class Outcome:
    """The answer plus what the shell records in metrics and logs."""

    response: dict[str, Any]
    decision: Decision
    kind: str
    operation: str


def decide(
    policy: TenancyPolicySpec, request: AdmissionRequest, phase: Phase, ctx: AdmissionContext
) -> Decision:
    rule = RULES.get((phase, request.group, request.resource))
    if rule is None or request.sub_resource:
        return Decision(allowed=True, code="unhandled")
    try:
        return rule(policy, request, ctx)
    except BadObject as exc:
        return deny("malformed", f"{request.kind} {request.namespace}/{request.name}: {exc}")
    except Exception as exc:  # a bug must not become an HTTP 500; see module docstring
        what = f"kftenancy could not evaluate {request.kind} {request.namespace}/{request.name}"
        return failed(phase, f"{what} ({type(exc).__name__})")


def failed(phase: Phase, what: str, code: str = "internal") -> Decision:
    """The answer when we could not decide: deny when validating, admit when mutating."""
    if phase is Phase.VALIDATE:
        return deny(code, f"{what}; denied to stay safe")
    return allow(f"{what}; admitted without changes")


def overloaded(body: Any, phase: Phase, inflight: int) -> Outcome:
    """The answer when the server is over its concurrency limit, without evaluating any
    rule: the validating rules must hold, so their requests are denied with the reason
    (what failurePolicy Fail would do after the timeout, only at once); mutations are
    admitted unchanged (what failurePolicy Ignore would do), and their second enforcer
    (the controller, the Fail pod rule) still applies."""
    request = body if isinstance(body, Malformed) else parse_review(body)
    what = f"kftenancy webhook overloaded ({inflight} requests in flight); retry"
    decision = failed(phase, what, "overloaded")
    if isinstance(request, Malformed):
        return Outcome(respond(request.uid, decision), decision, "", "")
    return Outcome(respond(request.uid, decision), decision, request.kind, request.operation)


def review(policy: TenancyPolicySpec, body: Any, phase: Phase, ctx: AdmissionContext) -> Outcome:
    """Answer one AdmissionReview (`body` already JSON-decoded, or a `Malformed`)."""
    request = body if isinstance(body, Malformed) else parse_review(body)
    if isinstance(request, Malformed):
        decision = deny("malformed", f"malformed AdmissionReview: {request.reason}")
        return Outcome(respond(request.uid, decision), decision, "", "")
    decision = decide(policy, request, phase, ctx)
    return Outcome(respond(request.uid, decision), decision, request.kind, request.operation)


def lookups(body: Any) -> tuple[str, str | None] | None:
    """(namespace, service account or None) the rules will ask the context about, so the
    shell can make sure its caches hold them before calling `review`; None if nothing."""
    request = body if isinstance(body, Malformed) else parse_review(body)
    if isinstance(request, Malformed) or request.object is None or not request.namespace:
        return None
    if request.resource == "serviceaccounts":
        return request.namespace, None
    if request.resource != "pods":
        return None
    spec = request.object.get("spec")
    account = "default"
    if isinstance(spec, dict):
        account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    return request.namespace, account
