"""ServiceAccount rule: the tenant's own role and web-identity annotations."""

from __future__ import annotations

from typing import Any

from admission_support import (
    CONTROLLER,
    OTHER_NS,
    TENANT_NS,
    admission_review,
    context,
    lake_policy,
    mutated,
    policy,
    run,
)

from kftenancy import constants as c
from kftenancy.admission import Phase


def service_account(ns: str, name: str = "default-editor", **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def test_tenant_data_lake_account_gets_its_own_role_and_token_settings() -> None:
    pol = lake_policy(region="eu-west-1")
    out = mutated(pol, service_account(TENANT_NS), user=CONTROLLER)
    assert out["metadata"]["annotations"] == {
        c.ANN_ROLE_ARN: "arn:aws:iam::123456789012:role/kubeflow-alice",
        c.ANN_AUDIENCE: "sts.amazonaws.com",
        c.ANN_TOKEN_EXPIRATION: "86400",
        c.ANN_STS_REGIONAL: "true",
    }


def test_role_template_and_settings_come_from_the_policy() -> None:
    pol = lake_policy(
        roleArnTemplate="arn:aws:iam::999:role/{profile}-lake",
        audience="seaweed",
        tokenExpirationSeconds=3600,
        stsRegionalEndpoints=False,
        serviceAccounts=["default-editor", "pipeline-runner"],
    )
    out = mutated(pol, service_account(TENANT_NS, "pipeline-runner"))
    assert out["metadata"]["annotations"] == {
        c.ANN_ROLE_ARN: "arn:aws:iam::999:role/alice-lake",
        c.ANN_AUDIENCE: "seaweed",
        c.ANN_TOKEN_EXPIRATION: "3600",
        c.ANN_STS_REGIONAL: "false",
    }


def test_a_changed_role_is_reset_and_other_annotations_kept() -> None:
    sa = service_account(TENANT_NS, **{c.ANN_ROLE_ARN: "arn:aws:iam::1:role/everyone", "note": "x"})
    outcome = run(lake_policy(), admission_review(sa), Phase.MUTATE)
    assert any(c.ANN_ROLE_ARN in w for w in outcome.decision.warnings)
    out = mutated(lake_policy(), sa)
    assert out["metadata"]["annotations"][c.ANN_ROLE_ARN].endswith("role/kubeflow-alice")
    assert out["metadata"]["annotations"]["note"] == "x"


def test_untouched_outside_scope() -> None:
    cases = [
        (policy(), service_account(TENANT_NS)),  # data lake off
        (lake_policy(), service_account(OTHER_NS)),  # not a tenant
        (lake_policy(), service_account(TENANT_NS, "default")),  # not a data-lake account
        (lake_policy(), service_account("kube-system")),  # exempt
        (lake_policy(), service_account("unknown-ns")),  # namespace not known
    ]
    for pol, sa in cases:
        out = run(pol, admission_review(sa), Phase.MUTATE, context())
        assert out.response["response"] == {
            "uid": out.response["response"]["uid"],
            "allowed": True,
        }, sa


def test_annotations_match_what_the_controller_renders() -> None:
    from kftenancy.profile import parse_profile
    from kftenancy.render.tenant import web_identity_annotations as rendered

    pol = lake_policy(roleArnTemplate="arn:aws:iam::1:role/{profile}-{namespace}")
    profile = parse_profile(
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": TENANT_NS},
            "spec": {"owner": {"kind": "User", "name": "alice"}},
        }
    )
    out = mutated(pol, service_account(TENANT_NS))
    assert out["metadata"]["annotations"] == rendered(pol, profile)
