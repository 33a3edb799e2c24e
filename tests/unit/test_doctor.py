"""The doctor's pure checks on plain snapshots (the lab test covers the shell)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509

from kftenancy.certs import CertificateAuthority
from kftenancy.doctor import CHECKS, Check, Finding, Severity, Snapshot, failed, run_checks
from kftenancy.doctor.checks import (
    check_crds,
    check_gpu_nodes,
    check_tenants,
    check_toleration_restriction,
    check_webhooks,
)
from kftenancy.lab.nodes import gpu_node_manifest
from kftenancy.policy import load_policy
from kftenancy.render.platform import crds
from kftenancy.render.webhooks import WebhookEndpoint, webhook_configurations

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
POLICY = load_policy({"platform": {"kubeflowInstalled": False}})
URL = "https://127.0.0.1:1"
CRD_KEY = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")


def _established(crd: dict[str, Any]) -> dict[str, Any]:
    return {**crd, "status": {"conditions": [{"type": "Established", "status": "True"}]}}


def severities(findings: list[Finding]) -> set[Severity]:
    return {f.severity for f in findings}


def test_current_crds_pass_and_an_old_schema_warns() -> None:
    installed = [_established(c) for c in crds(POLICY)]
    assert severities(check_crds(Snapshot(POLICY, NOW, {CRD_KEY: installed}))) == {Severity.OK}
    old = [dict(c) for c in installed]
    old[0] = {
        **old[0],
        "spec": {
            **old[0]["spec"],
            "versions": [
                {**old[0]["spec"]["versions"][0], "schema": {"openAPIV3Schema": {"type": "object"}}}
            ],
        },
    }
    [warn, _] = check_crds(Snapshot(POLICY, NOW, {CRD_KEY: old}))
    assert warn.severity == Severity.WARNING and warn.fix and "deploy/crds" in warn.fix


def test_missing_crd_is_an_error_with_the_fix() -> None:
    findings = check_crds(Snapshot(POLICY, NOW, {CRD_KEY: []}))
    assert failed(findings) and all(f.fix for f in findings)


def _configs(ca: CertificateAuthority) -> dict[tuple[str, str], list[dict[str, Any]]]:
    endpoint = WebhookEndpoint(url=URL, ca_bundle=ca.cert_pem)
    return {(o["apiVersion"], o["kind"]): [o] for o in webhook_configurations(POLICY, endpoint)}


def test_webhook_ca_expiring_soon_warns_and_expired_fails() -> None:
    ca = CertificateAuthority.create("ca", NOW)
    expires = x509.load_pem_x509_certificate(ca.cert_pem).not_valid_after_utc
    assert severities(check_webhooks(Snapshot(POLICY, NOW, _configs(ca)))) == {Severity.OK}
    soon = check_webhooks(Snapshot(POLICY, expires - dt.timedelta(days=2), _configs(ca)))
    assert severities(soon) == {Severity.WARNING} and all("soon" in f.message for f in soon)
    late = check_webhooks(Snapshot(POLICY, expires + dt.timedelta(days=1), _configs(ca)))
    assert failed(late) and all("expired" in f.message for f in late)


def test_serving_certificate_from_another_ca_fails() -> None:
    ca, other = CertificateAuthority.create("ca", NOW), CertificateAuthority.create("x", NOW)
    pair = other.issue("webhook", NOW, server_hosts=["127.0.0.1"])
    facts = {"webhook_serving": {URL + "/mutate": {"pem": pair.cert_pem.decode()}}}
    found = check_webhooks(Snapshot(POLICY, NOW, _configs(ca), facts))
    assert any("not signed by the caBundle CA" in f.message for f in found)
    good = ca.issue("webhook", NOW, server_hosts=["127.0.0.1"])
    facts = {"webhook_serving": {URL + "/mutate": {"pem": good.cert_pem.decode()}}}
    assert not failed(check_webhooks(Snapshot(POLICY, NOW, _configs(ca), facts)))


def test_cert_manager_annotation_without_injected_ca_fails() -> None:
    endpoint = WebhookEndpoint(inject_ca_from="kftenancy/kftenancy-webhook")
    objs = {(o["apiVersion"], o["kind"]): [o] for o in webhook_configurations(POLICY, endpoint)}
    found = check_webhooks(Snapshot(POLICY, NOW, objs))
    assert failed(found) and any("cainjector" in f.message for f in found)


def test_gpu_node_needs_taint_and_pool_labels() -> None:
    policy = load_policy({"gpu": {"pools": [{"name": "t4"}]}})
    labels = {"workload": "ai-ml", "cluster-api/accelerator": "nvidia-t4"}
    good = gpu_node_manifest("good", labels=labels)
    bare = gpu_node_manifest("bare", taints=[])
    cpu = gpu_node_manifest("cpu", gpus=0, taints=[])
    key = ("v1", "Node")
    found = check_gpu_nodes(Snapshot(policy, NOW, {key: [good, bare, cpu]}))
    assert {f.object for f in found if f.severity == Severity.ERROR} == {"Node/bare"}
    assert len([f for f in found if f.object == "Node/bare"]) == 2  # taint and labels
    assert not failed(check_gpu_nodes(Snapshot(policy, NOW, {key: [good, cpu]})))


def test_toleration_restriction_unknown_warns_off_upstream_is_fine() -> None:
    assert check_toleration_restriction(Snapshot(POLICY, NOW))[0].severity == Severity.WARNING
    upstream = load_policy({"platform": {"flavor": "kubernetes"}})
    facts = {"pod_toleration_restriction": False}
    assert (
        check_toleration_restriction(Snapshot(upstream, NOW, {}, facts))[0].severity == Severity.OK
    )
    ocp = Snapshot(POLICY, NOW, {}, facts)
    assert check_toleration_restriction(ocp)[0].severity == Severity.WARNING


def test_terminating_tenants_are_not_reported_and_unready_ones_are() -> None:
    key = ("kubeflow.org/v1", "Profile")
    ready = {
        "metadata": {"name": "a"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    gone = {"metadata": {"name": "b", "deletionTimestamp": "x"}}
    stuck = {
        "metadata": {"name": "c"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Conflict", "message": "taken"}
            ]
        },
    }
    found = check_tenants(Snapshot(POLICY, NOW, {key: [ready, gone, stuck]}))
    assert [(f.object, f.severity) for f in found] == [("Profile/c", Severity.ERROR)]
    assert "Conflict: taken" in found[0].message


def test_without_a_policy_only_policy_and_tenants_run() -> None:
    s = Snapshot(policy=None, now=NOW, policy_error="no TenancyPolicy")
    assert {f.check for f in run_checks(CHECKS, s)} == {"policy", "tenants"}
    extra = Check("extra", "an area's check", (), lambda _: [Finding("extra", Severity.OK, "fine")])
    assert [f.check for f in run_checks((extra,), Snapshot(POLICY, NOW))] == ["extra"]


def test_cluster_roles_must_match_the_policy() -> None:
    from kftenancy.doctor.checks import check_rbac
    from kftenancy.render.rbac import component_identities

    key = ("rbac.authorization.k8s.io/v1", "ClusterRole")
    roles = [o for o in component_identities(POLICY) if o["kind"] == "ClusterRole"]
    assert severities(check_rbac(Snapshot(POLICY, NOW, {key: roles}))) == {Severity.OK}
    retention = load_policy(
        {"platform": {"kubeflowInstalled": False}, "offboarding": {"retentionDays": 7}}
    )
    [behind] = check_rbac(Snapshot(retention, NOW, {key: roles}))
    assert behind.severity == Severity.ERROR and "delete" in behind.message
    wider = [o for o in component_identities(retention) if o["kind"] == "ClusterRole"]
    [more] = check_rbac(Snapshot(POLICY, NOW, {key: wider}))
    assert more.severity == Severity.WARNING and "more than" in more.message
    assert failed(check_rbac(Snapshot(POLICY, NOW, {key: []})))
