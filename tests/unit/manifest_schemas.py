"""Validate rendered manifests against real schemas (test helper, not a test module).

Core kinds: the Kubernetes 1.37 OpenAPI schemas (`kubernetes-validate`, strict: unknown
fields are errors). Custom kinds: the openAPIV3Schema of the CRDs we ship (third-party
fixtures and our own), made strict the way the API server's pruning would silently drop
a field: any property a schema does not declare is an error unless the schema preserves
unknown fields.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from kftenancy.crds import all_crds

K8S_VERSION = "1.37.0"


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def thirdparty_crds() -> list[dict[str, Any]]:
    folder = resources.files("kftenancy") / "data" / "crds" / "thirdparty"
    return [
        yaml.safe_load(f.read_text())
        for f in sorted(folder.iterdir(), key=lambda p: p.name)
        if f.name.endswith(".yaml")
    ]


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → strict JSON schema, for every CRD version we ship."""
    out = {}
    for crd in [*thirdparty_crds(), *all_crds()]:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            # The API server always knows these three, whatever the CRD schema says.
            schema.setdefault("properties", {}).update(
                apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
            )
            out[(f"{group}/{version['name']}", kind)] = schema
    return out


def validate_manifest(obj: dict[str, Any]) -> None:
    """Raise if `obj` is not a valid manifest of its kind (core or shipped CRD)."""
    key = (obj["apiVersion"], obj["kind"])
    schema = crd_schemas().get(key)
    if schema is not None:
        jsonschema.validate(obj, schema)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
