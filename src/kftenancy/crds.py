"""CustomResourceDefinitions generated from the pydantic models (never written by hand).

`policy_crd()` is the TenancyPolicy CRD (from `kftenancy.policy.TenancyPolicySpec`),
`profile_crd()` the Kubeflow Profile CRD (kubeflow.org v1 and v1beta1, from
`kftenancy.profile.ProfileSpec`, so it keeps `spec.contributors` that upstream's CRD
prunes). Copies are committed under `deploy/crds/` (`kftenancy crd --dir deploy/crds`
rewrites them) and a test proves they match.

The JSON schema pydantic emits is turned into a Kubernetes *structural* schema: `$ref`s
inlined, `Optional[X]` → `X` + `nullable` (not for enums defaulting to None: see `_convert`), `int | str` → `x-kubernetes-int-or-string`,
free-form dicts → `x-kubernetes-preserve-unknown-fields`, titles dropped, defaults moved
into the description (the model, not the API server, applies defaults).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from pydantic import BaseModel

from kftenancy import constants as c
from kftenancy.policy import TenancyPolicySpec
from kftenancy.profile import ProfileSpec

_KEEP = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern")


class SchemaConversionError(Exception):
    """The model uses a construct a structural schema cannot express (a bug, not input)."""


def _default_note(default: Any) -> str | None:
    if default is None or default == [] or default == {}:
        return None
    text = json.dumps(default, sort_keys=True)
    return f"Default: {text}." if len(text) <= 120 else None


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    description = node.get("description")
    note = _default_note(node["default"]) if "default" in node else None
    if "$ref" in node:
        out = _convert(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    elif "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        types = sorted(str(o.get("type")) for o in options)
        if types == ["integer", "string"] and all(len(o) == 1 for o in options):
            out = {"x-kubernetes-int-or-string": True}
        elif len(options) == 1:
            out = _convert(options[0], defs)
        else:
            raise SchemaConversionError(f"cannot express anyOf {node['anyOf']!r}")
        # kube-apiserver checks a null against `enum` even when the field is nullable (and
        # refuses it), but prunes a null from a field that is not nullable: for an enum
        # whose default is None, "null" and "unset" mean the same, so leave nullable off.
        if nullable and not ("enum" in out and node.get("default") is None):
            out["nullable"] = True
    else:
        out = _convert_typed(node, defs)
    text = " ".join(t for t in (description or out.get("description"), note) if t)
    if text:
        out["description"] = text
    return out


def _convert_typed(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    kind = node.get("type")
    if kind is None and "const" in node:
        kind = "string"
    if kind is None:
        raise SchemaConversionError(f"schema without a type: {node!r}")
    out: dict[str, Any] = {"type": kind}
    if "description" in node:
        out["description"] = node["description"]
    if "enum" in node:
        out["enum"] = list(node["enum"])
    elif "const" in node:
        out["enum"] = [node["const"]]
    for key in _KEEP:
        if key in node:
            out[key] = node[key]
    if kind == "array":
        out["items"] = _convert(node.get("items", {"type": "string"}), defs)
    if kind == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props:
            out["properties"] = {k: _convert(v, defs) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        elif isinstance(extra, dict):
            out["additionalProperties"] = _convert(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI v3 structural schema of a pydantic model (camelCase field names)."""
    return copy.deepcopy(_structural_schema(model))


@cache
def _structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Generating a schema takes milliseconds; models are fixed at import time.
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}))


def _conditions_status() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {"type": "integer"},
            "conditions": {"type": "array", "items": condition},
        },
    }


def _root_schema(spec: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "openAPIV3Schema": {
            "type": "object",
            "description": description,
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": spec,
                "status": _conditions_status(),
            },
        }
    }


def _crd_labels() -> dict[str, str]:
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_PART_OF: c.MANAGED_BY}


def policy_crd() -> dict[str, Any]:
    """The cluster-scoped TenancyPolicy CRD (kftenancy.dev/v1alpha1)."""
    spec = structural_schema(TenancyPolicySpec)
    spec["description"] = "Everything that varies between kftenancy installations."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{c.POLICY_PLURAL}.{c.API_GROUP}", "labels": _crd_labels()},
        "spec": {
            "group": c.API_GROUP,
            "names": {
                "kind": c.POLICY_KIND,
                "listKind": f"{c.POLICY_KIND}List",
                "plural": c.POLICY_PLURAL,
                "singular": c.POLICY_SINGULAR,
                "categories": ["kftenancy"],
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": c.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                    ],
                    "schema": _root_schema(spec, "The kftenancy policy (one per cluster)."),
                }
            ],
        },
    }


def profile_crd() -> dict[str, Any]:
    """Kubeflow's cluster-scoped Profile CRD (v1 storage, v1beta1 served), with contributors.

    Installed by kftenancy only where Kubeflow is absent (`platform.kubeflowInstalled`).
    """
    spec = structural_schema(ProfileSpec)
    spec["required"] = ["owner"]
    versions: list[dict[str, Any]] = []
    for version in c.PROFILE_VERSIONS:
        versions.append(
            {
                "name": version,
                "served": True,
                "storage": version == "v1",
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Owner", "type": "string", "jsonPath": ".spec.owner.name"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": _root_schema(spec, "A Kubeflow tenant: one namespace, one owner."),
            }
        )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{c.PROFILE_PLURAL}.{c.KUBEFLOW_GROUP}", "labels": _crd_labels()},
        "spec": {
            "group": c.KUBEFLOW_GROUP,
            "names": {
                "kind": c.PROFILE_KIND,
                "listKind": f"{c.PROFILE_KIND}List",
                "plural": c.PROFILE_PLURAL,
                "singular": "profile",
            },
            "scope": "Cluster",
            "versions": versions,
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """Every CRD kftenancy ships: the policy, and Profile for clusters without Kubeflow."""
    return [policy_crd(), profile_crd()]


def crd_file_name(crd: dict[str, Any]) -> str:
    """The file a CRD is committed as under deploy/crds/ (`<plural>.<group>.yaml`)."""
    return f"{crd['metadata']['name']}.yaml"
