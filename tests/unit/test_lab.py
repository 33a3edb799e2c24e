"""Pure parts of the local control plane: flags, certificates, manifests, state."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from kftenancy.certs import CertificateAuthority
from kftenancy.lab.binaries import parse_print_dir
from kftenancy.lab.cluster import admission_plugins, apiserver_args, user_file_stem
from kftenancy.lab.kubeconfig import build_kubeconfig
from kftenancy.lab.nodes import KWOK_NODE_ANNOTATION, gpu_node_manifest
from kftenancy.lab.state import LabState, ProcessRecord

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_pod_toleration_restriction_is_on_and_service_account_plugin_off_without_kcm() -> None:
    enabled, disabled = admission_plugins(controller_manager=False, enable=(), disable=())
    assert enabled == ["PodTolerationRestriction"]
    assert disabled == ["ServiceAccount"]
    enabled, disabled = admission_plugins(controller_manager=True, enable=(), disable=())
    assert disabled == []


def test_disabling_pod_toleration_restriction_removes_it_from_enabled() -> None:
    enabled, disabled = admission_plugins(
        controller_manager=True, enable=("NodeRestriction",), disable=("PodTolerationRestriction",)
    )
    assert enabled == ["NodeRestriction"]
    assert disabled == ["PodTolerationRestriction"]


def test_apiserver_issuer_is_https_without_trailing_slash_and_jwks_under_it() -> None:
    args = apiserver_args(
        port=6443,
        etcd_url="http://127.0.0.1:2379",
        pki=Path("/p"),
        issuer="https://127.0.0.1:6443",
        enable_admission_plugins=["PodTolerationRestriction"],
        disable_admission_plugins=[],
        cert_dir=Path("/c"),
    )
    assert "--service-account-issuer=https://127.0.0.1:6443" in args
    assert "--service-account-jwks-uri=https://127.0.0.1:6443/openid/v1/jwks" in args
    assert "--bind-address=127.0.0.1" in args
    assert "--authorization-mode=RBAC" in args
    assert not any(a.startswith("--disable-admission-plugins") for a in args)


def test_client_certificate_carries_user_in_cn_and_groups_in_o() -> None:
    ca = CertificateAuthority.create("test-ca", NOW)
    pair = ca.issue("alice@example.com", NOW, organizations=["team-a", "team-b"], client=True)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice@example.com"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["team-a", "team-b"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca.cert)


def test_serving_certificate_has_ip_and_dns_sans() -> None:
    ca = CertificateAuthority.create("test-ca", NOW)
    cert = x509.load_pem_x509_certificate(
        ca.issue("srv", NOW, server_hosts=["127.0.0.1", "localhost"]).cert_pem
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc


def test_a_certificate_must_have_a_purpose() -> None:
    ca = CertificateAuthority.create("test-ca", NOW)
    with pytest.raises(ValueError, match="serving, for clients"):
        ca.issue("nothing", NOW)


def test_kubeconfig_embeds_credentials() -> None:
    cfg = build_kubeconfig(
        server="https://127.0.0.1:1",
        ca_pem=b"CA",
        cert_pem=b"CERT",
        key_pem=b"KEY",
        user="u",
        context="c",
    )
    assert cfg["current-context"] == "c"
    assert base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(cfg["users"][0]["user"]["client-key-data"]) == b"KEY"


def test_gpu_node_gets_seed_gpu_taint_capacity_and_kwok_annotation() -> None:
    node = gpu_node_manifest("gpu-1", gpus=2, labels={"pool": "a100"})
    assert node["metadata"]["annotations"][KWOK_NODE_ANNOTATION] == "fake"
    assert node["spec"]["taints"] == [{"key": "workload", "value": "ai-ml", "effect": "NoSchedule"}]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["metadata"]["labels"]["pool"] == "a100"
    assert gpu_node_manifest("plain", taints=[])["spec"]["taints"] == []


def test_negative_gpu_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="gpus must be >= 0, got -1"):
        gpu_node_manifest("bad", gpus=-1)


def test_print_dir_output_is_parsed() -> None:
    out = "etcd /c/bin/v3.6.16/etcd\nkwok-stages /c/bin/v0.8.0/kwok-stages.yaml\n"
    assert parse_print_dir(out) == {
        "etcd": Path("/c/bin/v3.6.16/etcd"),
        "kwok-stages": Path("/c/bin/v0.8.0/kwok-stages.yaml"),
    }


@given(st.text(min_size=1, max_size=80), st.lists(st.text(max_size=20), max_size=4))
def test_user_file_stem_is_a_safe_file_name_and_distinguishes_identities(
    user: str, groups: list[str]
) -> None:
    stem = user_file_stem(user, groups)
    assert "/" not in stem and stem not in (".", "..") and len(stem) <= 53
    assert stem != user_file_stem(user + "x", groups)
    assert stem == user_file_stem(user, list(reversed(groups)))


def test_lab_state_round_trips_and_exports_kubeconfig() -> None:
    state = LabState(
        server="https://127.0.0.1:1",
        issuer="https://127.0.0.1:1",
        admin_kubeconfig="/s/admin.kubeconfig",
        ca_file="/s/ca.crt",
        workdir="/s",
        started_at="2026-01-02T03:04:05+00:00",
        startup_seconds=3.2,
        processes={"etcd": ProcessRecord(pid=7, executable="/b/etcd", log_file="/s/etcd.log")},
        gpu_nodes=["gpu-node-1"],
    )
    assert LabState.from_json(state.to_json()) == state
    assert state.env()["KUBECONFIG"] == "/s/admin.kubeconfig"
    assert state.env()["KFTENANCY_KUBECONFIG"] == "/s/admin.kubeconfig"
