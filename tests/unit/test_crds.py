"""Generated CRDs: structural, valid, in sync with deploy/crds/, accepting the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from manifest_schemas import K8S_VERSION, crd_schemas, thirdparty_crds, validate_manifest

from kftenancy.cli.render import crd_file_text
from kftenancy.crds import all_crds, crd_file_name, policy_crd, profile_crd
from kftenancy.policy import TenancyPolicySpec, load_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("policy*.yaml"))
_ALLOWED_KEYS = {
    "type", "description", "properties", "required", "items", "additionalProperties", "enum",
    "nullable", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
    "pattern", "format", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
}  # fmt: skip


def _walk(node: dict[str, Any], path: str = "") -> list[str]:
    """Every reason `node` is not a structural schema (empty if it is)."""
    problems = [f"{path}: {k}" for k in node if k not in _ALLOWED_KEYS]
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    for name, child in node.get("properties", {}).items():
        problems += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["metadata"]["name"])
def test_generated_crds_are_structural_and_valid(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    for version in crd["spec"]["versions"]:
        assert _walk(version["schema"]["openAPIV3Schema"]) == []
        assert version["subresources"] == {"status": {}}
    assert crd["spec"]["scope"] == "Cluster"


@pytest.mark.parametrize("crd", thirdparty_crds(), ids=lambda c: c["metadata"]["name"])
def test_thirdparty_fixture_crds_are_structural_and_valid(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    assert sum(v["storage"] for v in crd["spec"]["versions"]) == 1
    for version in crd["spec"]["versions"]:
        assert _walk(version["schema"]["openAPIV3Schema"]) == []


def test_thirdparty_fixtures_cover_every_kind_we_write_or_read() -> None:
    kinds = set(crd_schemas())
    for key in [
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("security.istio.io/v1beta1", "AuthorizationPolicy"),
        ("security.istio.io/v1", "RequestAuthentication"),
        ("security.istio.io/v1beta1", "RequestAuthentication"),
        ("maistra.io/v1", "ServiceMeshMember"),
        ("user.openshift.io/v1", "User"),
        ("user.openshift.io/v1", "Group"),
        ("serving.knative.dev/v1", "Service"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    ]:
        assert key in kinds, key


def test_committed_crds_match_the_models() -> None:
    committed = {p.name for p in DEPLOY.glob("*.yaml")}
    assert committed == {crd_file_name(c) for c in all_crds()}, (
        "run `kftenancy crd --dir deploy/crds`"
    )
    for crd in all_crds():
        path = DEPLOY / crd_file_name(crd)
        assert path.read_text() == crd_file_text(crd), f"{path} is stale: regenerate it"
        assert yaml.safe_load(path.read_text()) == crd


def test_profile_crd_serves_v1_and_v1beta1_with_contributors() -> None:
    crd = profile_crd()
    assert crd["metadata"]["name"] == "profiles.kubeflow.org"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(versions) == {"v1", "v1beta1"}
    assert versions["v1"]["storage"] and not versions["v1beta1"]["storage"]
    spec = versions["v1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["owner"]
    assert set(spec["properties"]) >= {"owner", "contributors", "resourceQuotaSpec", "plugins"}
    contributor = spec["properties"]["contributors"]["items"]
    assert contributor["properties"]["role"]["enum"] == ["edit", "view"]
    assert contributor["properties"]["kind"]["enum"] == ["User", "Group"]
    hard = spec["properties"]["resourceQuotaSpec"]["properties"]["hard"]
    assert hard["additionalProperties"] == {"x-kubernetes-int-or-string": True}


def test_policy_crd_schema_follows_the_model() -> None:
    spec = policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["properties"]) == {
        f.alias or name for name, f in TenancyPolicySpec.model_fields.items()
    }
    mesh = spec["properties"]["mesh"]["properties"]
    assert mesh["flavor"]["enum"] == ["ossm", "istio", "none"]
    assert mesh["revision"]["nullable"] is True
    token = spec["properties"]["dataLake"]["properties"]["tokenExpirationSeconds"]
    assert (token["minimum"], token["maximum"]) == (600, 604800)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_for_the_crd_and_the_model(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    validate_manifest(doc)
    load_policy(doc)


def test_crd_schema_rejects_what_the_model_rejects() -> None:
    schema = crd_schemas()[("kftenancy.dev/v1alpha1", "TenancyPolicy")]
    bad = {"apiVersion": "kftenancy.dev/v1alpha1", "kind": "TenancyPolicy",
           "metadata": {"name": "default"}, "spec": {"mesh": {"flavor": "linkerd"}}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_policy_reference_documents_every_section() -> None:
    doc = (ROOT / "docs" / "policy.md").read_text()
    for name, field in TenancyPolicySpec.model_fields.items():
        assert f"### `{field.alias or name}`" in doc, f"docs/policy.md lacks section {name}"


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"mesh": {"flavor": "istio"}, "platform": {"flavor": "kubernetes"}},
        {"mesh": {"flavor": "none"}, "identity": {"frontDoor": {"gatewayApi": {"name": "gw", "namespace": "gw"}}}},
    ],
    ids=["ossm", "istio", "gateway-api"],
)  # fmt: skip
def test_every_kind_the_installers_render_has_a_schema_we_ship(spec: dict[str, Any]) -> None:
    from kftenancy.render.gateway import gateway_objects

    for obj in gateway_objects(load_policy(spec)):
        validate_manifest(obj)


@pytest.mark.parametrize("crd", thirdparty_crds(), ids=lambda c: c["metadata"]["name"])
def test_protected_groups_carry_the_api_approval_annotation(crd: dict[str, Any]) -> None:
    # The API server rejects CRDs in *.k8s.io / *.kubernetes.io groups without it.
    group = crd["spec"]["group"]
    if group.endswith((".k8s.io", ".kubernetes.io")):
        assert crd["metadata"].get("annotations", {}).get("api-approved.kubernetes.io")


def _nullable_enums(node: Any, path: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    found = [path] if "enum" in node and node.get("nullable") else []
    for key, child in (node.get("properties") or {}).items():
        found += _nullable_enums(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _nullable_enums(node["items"], f"{path}[]")
    return found


def test_optional_enums_are_not_nullable() -> None:
    """kube-apiserver validates a null against `enum` even when nullable (and refuses it:
    found by tests/integration/test_fuzz_policy.py with `effect: null` in a toleration);
    without nullable it prunes the null, the same as the model's None."""
    schema = policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _nullable_enums(schema) == []
    tol = schema["properties"]["spec"]["properties"]["gpu"]["properties"]["allowedTolerations"]
    assert "enum" in tol["items"]["properties"]["effect"]
