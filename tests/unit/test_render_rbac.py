"""The per-component RBAC source: platform objects (and so the chart and the CSV) use it."""

from __future__ import annotations

from typing import Any

import pytest

from kftenancy import constants as c
from kftenancy.policy import load_policy
from kftenancy.render import platform_objects
from kftenancy.render.rbac import COMPONENTS, component_rules

POLICIES = [
    load_policy(None),
    load_policy(
        {
            "platform": {"flavor": "kubernetes", "kubeflowInstalled": False},
            "mesh": {"flavor": "istio"},
            "gpu": {"pools": [{"name": "t4"}]},
            "offboarding": {"retentionDays": 30},
        }
    ),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_platform_cluster_roles_are_exactly_the_rbac_source(policy: Any) -> None:
    rules = component_rules(policy)
    assert tuple(rules) == COMPONENTS
    roles = {
        o["metadata"]["name"]: o["rules"]
        for o in platform_objects(policy)
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] in COMPONENTS
    }
    assert roles == rules


@pytest.mark.parametrize("policy", POLICIES)
def test_each_component_is_bound_only_to_its_own_role(policy: Any) -> None:
    bindings = [
        o
        for o in platform_objects(policy)
        if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] in COMPONENTS
    ]
    assert len(bindings) == len(COMPONENTS)
    for b in bindings:
        name = b["metadata"]["name"]
        assert b["roleRef"]["name"] == name
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": policy.platform.namespace}
        ]


def test_no_component_may_read_secrets_or_use_wildcards() -> None:
    for policy in POLICIES:
        for name, rules in component_rules(policy).items():
            for r in rules:
                assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"], name
                assert "secrets" not in r["resources"], name
                if r["resources"] == ["clusterroles"]:
                    assert r["verbs"] == ["bind"] and r["resourceNames"], name
    assert c.COMPONENT_CONTROLLER in COMPONENTS


def test_every_kind_the_controller_watches_may_be_read_and_pruned() -> None:
    from kftenancy.controllers.tenant import KNOWN_KINDS

    for policy in [*POLICIES, load_policy({"mesh": {"flavor": "none"}})]:
        rules = component_rules(policy)[c.COMPONENT_CONTROLLER]
        for api_version, kind in KNOWN_KINDS:
            group = api_version.rpartition("/")[0]
            low = kind.lower()
            plural = low[:-1] + "ies" if low.endswith("y") else low + "s"
            # (namespaces are never pruned: deleted only after a retention period)
            verbs = ("list", "watch") if kind == "Namespace" else ("list", "watch", "delete")
            for verb in verbs:
                assert any(
                    group in r["apiGroups"] and plural in r["resources"] and verb in r["verbs"]
                    for r in rules
                ), (kind, verb)
