"""Plain AdmissionReview dicts and a patch applier for the admission unit tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch

from kftenancy import constants as c
from kftenancy.admission import AdmissionContext, Outcome, Phase, review
from kftenancy.policy import TenancyPolicySpec, load_policy

CONTROLLER = "system:serviceaccount:kftenancy:kftenancy-controller"
TENANT_NS = "alice"
OTHER_NS = "team-tools"

GPU_TOLERATION = {"key": "workload", "operator": "Equal", "value": "ai-ml", "effect": "NoSchedule"}

_RESOURCES = {"Namespace": "namespaces", "Pod": "pods", "ServiceAccount": "serviceaccounts"}


def policy(**spec: Any) -> TenancyPolicySpec:
    return load_policy(spec or None)


def lake_policy(**data_lake: Any) -> TenancyPolicySpec:
    return load_policy({"dataLake": {"enabled": True, **data_lake}})


def context(
    *,
    namespaces: dict[str, dict[str, str]] | None = None,
    service_accounts: dict[tuple[str, str], dict[str, str]] | None = None,
) -> AdmissionContext:
    labels = {TENANT_NS: {c.LABEL_TENANT: TENANT_NS}, OTHER_NS: {}}
    return AdmissionContext(
        controller_users=frozenset({CONTROLLER}),
        namespace_labels=labels if namespaces is None else namespaces,
        service_accounts=service_accounts or {},
    )


def admission_review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    user: str = "alice@example.com",
    namespace: str | None = None,
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
) -> dict[str, Any]:
    source = obj or old or {}
    kind = source.get("kind", "Pod")
    meta = source.get("metadata", {})
    ns = namespace if namespace is not None else meta.get("namespace", "")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": _RESOURCES.get(kind, "x")},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "name": meta.get("name", ""),
            "namespace": ns,
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def namespace(
    name: str, labels: dict[str, str] | None = None, **annotations: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
    meta["labels"].update(labels or {})
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def pod(
    ns: str,
    *,
    tolerations: list[dict[str, Any]] | None = None,
    service_account: str = "default",
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    security_context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "containers": containers or [{"name": "main", "image": "python:3.12"}],
    }
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if init_containers is not None:
        spec["initContainers"] = init_containers
    if security_context is not None:
        spec["securityContext"] = security_context
    meta: dict[str, Any] = {"name": "nb-0", "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def run(
    pol: TenancyPolicySpec, body: Any, phase: Phase, ctx: AdmissionContext | None = None
) -> Outcome:
    return review(pol, body, phase, ctx or context())


def patched(outcome: Outcome, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply the response's base64 JSONPatch to `obj` with an independent RFC 6902 library."""
    response = outcome.response["response"]
    assert response["allowed"], response
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


def mutated(
    pol: TenancyPolicySpec, obj: dict[str, Any], ctx: AdmissionContext | None = None, **kw: Any
) -> dict[str, Any]:
    """obj after the mutating webhook (and idempotence checked: a second pass changes nothing)."""
    once = patched(run(pol, admission_review(obj, **kw), Phase.MUTATE, ctx), obj)
    again = run(pol, admission_review(once, **kw), Phase.MUTATE, ctx)
    assert "patch" not in again.response["response"], "mutation is not idempotent"
    return once


def denial(outcome: Outcome) -> str:
    response = outcome.response["response"]
    assert response["allowed"] is False, response
    assert response["status"]["code"] == 403
    message: str = response["status"]["message"]
    return message
