"""The Helm chart's generated files: in sync with the generator, one source for CRDs,
RBAC, webhooks and the policy schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kftenancy.policy import load_policy
from kftenancy.render.chart import chart_files, values_schema
from kftenancy.render.rbac import component_rules

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kftenancy"
POLICY_FILE = ROOT / "examples" / "policy-kubernetes.yaml"


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())["spec"]
    return spec


def test_committed_chart_is_what_the_generator_writes() -> None:
    for rel, text in chart_files(_spec()).items():
        assert (CHART / rel).read_text() == text, (
            f"{rel} is stale: run kftenancy chart --policy {POLICY_FILE.relative_to(ROOT)} "
            f"--dir {CHART.relative_to(ROOT)}"
        )


def test_chart_crds_are_byte_identical_to_deploy_crds() -> None:
    crds = sorted((CHART / "crds").glob("*.yaml"))
    assert crds
    for path in crds:
        assert path.read_bytes() == (ROOT / "deploy" / "crds" / path.name).read_bytes()


def test_values_policy_is_the_policy_and_valid() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["policy"] == _spec()
    load_policy(values["policy"])
    jsonschema.validate(values, values_schema())


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"gpu": {"bogus": 1}}, "bogus"),
        ({"gpu": {"taint": {"effect": "Sometimes"}}}, "Sometimes"),
        ({"offboarding": {"retentionDays": -1}}, "-1"),
    ],
)
def test_values_schema_rejects_what_the_model_rejects(patch: dict[str, Any], where: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["policy"] = {**values["policy"], **patch}
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(values, values_schema())
    assert where in str(err.value.message)
    with pytest.raises(ValueError):
        load_policy(values["policy"])


def test_generated_platform_roles_are_the_rbac_source() -> None:
    policy = load_policy(_spec())
    text = (CHART / "templates" / "platform.yaml").read_text()
    head = text.split("{{- if", 1)[0]  # the part before the webhook switch is plain YAML
    roles = {
        o["metadata"]["name"]: o["rules"]
        for o in yaml.safe_load_all(head)
        if o and o["kind"] == "ClusterRole" and "rules" in o
    }
    assert {k: v for k, v in roles.items() if k in component_rules(policy)} == component_rules(
        policy
    )


def test_schema_is_json() -> None:
    assert json.loads((CHART / "values.schema.json").read_text()) == values_schema()


def _with_data_lake(**lake: Any) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    values["controller"]["dataLake"] = {**values["controller"]["dataLake"], **lake}
    return values


def test_data_lake_values_are_off_by_default_and_their_full_shape_is_valid() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["controller"]["dataLake"]["enabled"] is False
    jsonschema.validate(
        _with_data_lake(
            enabled=True,
            configFile="iam.json",
            volume={"nfs": {"server": "nfs.storage", "path": "/exports/kftenancy"}},
            signingKeySecret={"name": "datalake-signing", "key": "signing-key"},
            publish={"namespace": "storage", "secret": "seaweedfs-iam",
                     "restart": "statefulset/seaweedfs-filer"},
            hooksConfigMap="kftenancy-hooks",
        ),
        values_schema(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("lake", "where"),
    [
        ({"configFile": "../iam.json"}, "configFile"),
        ({"configFile": ".."}, "configFile"),
        ({"publish": {"namespace": "Storage"}}, "namespace"),
        ({"publish": {"restart": "seaweedfs-s3"}}, "restart"),
        ({"publish": {"restart": "job/seaweedfs"}}, "restart"),
        ({"signingKeySecret": {"name": "key", "path": "/x"}}, "signingKeySecret"),
        ({"reloadcommand": "typo"}, "dataLake"),
    ],
)
def test_values_schema_rejects_a_misshapen_data_lake_value(
    lake: dict[str, Any], where: str
) -> None:
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(_with_data_lake(**lake), values_schema())
    assert where in "/".join(str(p) for p in err.value.absolute_path)


def test_generated_tpl_names_the_data_lake_provider_only_when_the_policy_has_one() -> None:
    off = chart_files(_spec())["templates/_generated.tpl"]
    assert '{{- define "kftenancy.dataLakeProvider" -}}\n\n{{- end }}' in off
    spec = {**_spec(), "dataLake": {"enabled": True, "provider": "s3compatible"}}
    on = chart_files(spec)["templates/_generated.tpl"]
    assert '{{- define "kftenancy.dataLakeProvider" -}}\ns3compatible\n{{- end }}' in on
