"""The lab's Kueue wiring and kwok stages, on plain data."""

from __future__ import annotations

from pathlib import Path

import yaml

from kftenancy.lab.kueue import kueue_config, webhook_configurations
from kftenancy.lab.stages import KEEP_RUNNING_ANNOTATION, lab_stages

HOOKS = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mutating-webhook-configuration}
webhooks:
- name: mjob.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate-batch-v1-job}}
  rules: [{apiGroups: [batch], apiVersions: [v1], operations: [CREATE], resources: [jobs]}]
- name: mpod.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
- name: mclusterqueue.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate-cq}}
  rules: [{apiGroups: [kueue.x-k8s.io], apiVersions: [v1beta2], operations: [CREATE],
           resources: [clusterqueues]}]
"""


def test_only_kueue_and_enabled_integration_webhooks_are_registered_on_loopback(
    tmp_path: Path,
) -> None:
    (tmp_path / "webhooks.yaml").write_text(HOOKS)
    [config] = webhook_configurations(tmp_path, 9443, b"CA")
    assert [h["name"] for h in config["webhooks"]] == ["mjob.kb.io", "mclusterqueue.kb.io"]
    assert config["webhooks"][0]["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate-batch-v1-job",
        "caBundle": "Q0E=",
    }


def test_kueue_config_serves_webhooks_on_loopback_with_our_certificate() -> None:
    config = yaml.safe_load(
        kueue_config(webhook_port=1, health_port=2, metrics_port=3, cert_dir=Path("/certs"))
    )
    assert config["webhook"] == {"port": 1, "host": "127.0.0.1", "certDir": "/certs"}
    assert config["internalCertManagement"] == {"enable": False}
    assert config["integrations"]["frameworks"] == ["batch/job"]


def test_keep_running_pods_are_left_out_of_the_fast_complete_stage() -> None:
    stage = {
        "metadata": {"name": "pod-complete"},
        "spec": {"selector": {"matchExpressions": [{"key": ".status.phase"}]}},
    }
    [out] = lab_stages([stage])
    assert out["spec"]["selector"]["matchExpressions"][-1] == {
        "key": f'.metadata.annotations["{KEEP_RUNNING_ANNOTATION}"]',
        "operator": "DoesNotExist",
    }
    assert len(stage["spec"]["selector"]["matchExpressions"]) == 1  # input untouched
