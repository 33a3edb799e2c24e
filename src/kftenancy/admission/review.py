"""AdmissionReview v1: parse a request into a typed value, build the response.

Parsing never raises: anything the API server would never send (not JSON, no uid, an
object that is not a mapping) becomes a `Malformed` value, and `respond` turns every
outcome into a well-formed AdmissionReview answer with a reason — never an exception,
never an HTTP 500.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kftenancy.admission.patch import Patch, diff

REVIEW_API_VERSION = "admission.k8s.io/v1"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of `AdmissionReview.request` the rules use."""

    uid: str
    kind: str  # request.kind.kind, e.g. "Pod"
    group: str
    resource: str  # request.resource.resource, e.g. "pods"
    sub_resource: str
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    namespace: str
    name: str
    user: UserInfo
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool = False


@dataclass(frozen=True)
class Malformed:
    """A body that is not a usable AdmissionReview v1; `uid` when one could be read."""

    reason: str
    uid: str = ""


@dataclass(frozen=True)
class Decision:
    """What a rule decided. `code` is a short, stable reason used as a metrics label."""

    allowed: bool
    message: str = ""
    code: str = ""
    patch: Patch = field(default_factory=list)
    warnings: tuple[str, ...] = ()


def allow(*warnings: str) -> Decision:
    return Decision(allowed=True, warnings=tuple(warnings))


def deny(code: str, message: str) -> Decision:
    return Decision(allowed=False, message=message, code=code)


def mutate(before: Mapping[str, Any], after: Mapping[str, Any], *warnings: str) -> Decision:
    """Allow, with the JSON patch that turns `before` into `after` (empty when equal)."""
    return Decision(allowed=True, patch=diff(before, after), warnings=tuple(warnings))


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _obj(data: Mapping[str, Any], key: str) -> tuple[dict[str, Any] | None, str]:
    value = data.get(key)
    if value is None:
        return None, ""
    if not isinstance(value, dict):
        return None, f"request.{key} is {type(value).__name__}, not an object"
    meta = value.get("metadata", {})
    if not isinstance(meta, dict):
        return None, f"request.{key}.metadata is {type(meta).__name__}, not an object"
    return value, ""


def parse_review(body: Any) -> AdmissionRequest | Malformed:
    """Read an AdmissionReview v1 (already JSON-decoded) into an `AdmissionRequest`."""
    if not isinstance(body, dict):
        return Malformed(f"body is {type(body).__name__}, not an AdmissionReview object")
    request = body.get("request")
    if not isinstance(request, dict):
        return Malformed("AdmissionReview has no request object")
    uid = _str(request, "uid")
    if not uid:
        return Malformed("request.uid is missing")
    api_version = body.get("apiVersion")
    if api_version != REVIEW_API_VERSION:
        return Malformed(
            f"apiVersion {api_version!r} is not supported (only {REVIEW_API_VERSION})", uid
        )
    kind = request.get("kind")
    resource = request.get("resource")
    if not isinstance(kind, dict) or not isinstance(resource, dict):
        return Malformed("request.kind and request.resource must be objects", uid)
    user = request.get("userInfo") or {}
    if not isinstance(user, dict):
        return Malformed("request.userInfo is not an object", uid)
    groups = user.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return Malformed("request.userInfo.groups is not a list of strings", uid)
    obj, err = _obj(request, "object")
    if err:
        return Malformed(err, uid)
    old, err = _obj(request, "oldObject")
    if err:
        return Malformed(err, uid)
    operation = _str(request, "operation")
    if operation in ("CREATE", "UPDATE") and obj is None:
        return Malformed(f"request.object is missing for {operation}", uid)
    return AdmissionRequest(
        uid=uid,
        kind=_str(kind, "kind"),
        group=_str(resource, "group"),
        resource=_str(resource, "resource"),
        sub_resource=_str(request, "subResource"),
        operation=operation,
        namespace=_str(request, "namespace"),
        name=_str(request, "name"),
        user=UserInfo(_str(user, "username"), tuple(groups)),
        object=obj,
        old_object=old,
        dry_run=request.get("dryRun") is True,
    )


def decode_body(raw: bytes) -> Any:
    """JSON-decode a request body; undecodable input becomes a `Malformed`."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Malformed(f"body is not JSON: {exc}")


def respond(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview v1 answer for `decision` (patch base64-encoded JSONPatch)."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:
        raw = json.dumps(decision.patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(raw).decode()
    if not decision.allowed:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message,
        }
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}
