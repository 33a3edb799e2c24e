"""The OLM bundle: in sync with the generator; its permissions are the chart's (one source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kftenancy import constants as c
from kftenancy.policy import load_policy
from kftenancy.render.chart import platform_template
from kftenancy.render.olm import bundle_files, cluster_service_version
from kftenancy.render.rbac import component_rules
from kftenancy.render.webhooks import webhook_configurations

ROOT = Path(__file__).resolve().parents[2]
OLM = ROOT / "deploy" / "olm"
SEED = ROOT / "examples" / "policy.yaml"


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SEED.read_text())["spec"]
    return spec


def test_committed_bundle_is_what_the_generator_writes() -> None:
    for rel, text in bundle_files(_spec(), "0.1.0").items():
        assert (OLM / rel).read_text() == text, (
            f"{rel} is stale: run kftenancy olm --policy examples/policy.yaml --dir deploy/olm"
        )


def test_csv_permissions_equal_the_charts_cluster_roles() -> None:
    csv = cluster_service_version(_spec(), "0.1.0", "img")
    perms = {
        p["serviceAccountName"]: p["rules"]
        for p in csv["spec"]["install"]["spec"]["clusterPermissions"]
    }
    policy = load_policy(_spec())
    assert perms == component_rules(policy)
    # the chart generated from the same policy grants exactly the same rules
    head = platform_template(policy).split("{{- if", 1)[0]
    chart_roles = {
        o["metadata"]["name"]: o["rules"]
        for o in yaml.safe_load_all(head)
        if o and o["kind"] == "ClusterRole" and o["metadata"]["name"] in perms
    }
    assert chart_roles == perms
    deployments = {d["name"] for d in csv["spec"]["install"]["spec"]["deployments"]}
    assert deployments == set(perms)  # every identity runs a Deployment of its own


def test_webhook_definitions_are_the_rendered_webhooks() -> None:
    policy = load_policy(_spec())
    csv = cluster_service_version(_spec(), "0.1.0", "img")
    defs = {d["generateName"]: d for d in csv["spec"]["webhookdefinitions"]}
    hooks = [h for cfg in webhook_configurations(policy) for h in cfg["webhooks"]]
    assert set(defs) == {h["name"] for h in hooks}
    for h in hooks:
        d = defs[h["name"]]
        assert d["rules"] == h["rules"] and d["failurePolicy"] == h["failurePolicy"]
        assert d["deploymentName"] == c.COMPONENT_WEBHOOK


def test_cluster_wide_install_mode_only() -> None:
    csv = cluster_service_version(_spec(), "0.1.0", "img")
    modes = {m["type"]: m["supported"] for m in csv["spec"]["installModes"]}
    assert modes == {
        "OwnNamespace": False,
        "SingleNamespace": False,
        "MultiNamespace": False,
        "AllNamespaces": True,
    }
