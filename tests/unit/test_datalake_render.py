"""The data lake's per-tenant storage documents: AWS IAM limits, the S3-compatible
(SeaweedFS) configuration, role names, shared datasets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from admission_support import context, lake_policy, mutated, pod
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.admission.serviceaccounts import web_identity_annotations
from kftenancy.errors import KftenancyError
from kftenancy.naming import profile_name
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.iam import (
    MANAGED_POLICY_MAX,
    ROLE_NAME_MAX,
    TRUST_POLICY_MAX,
    aws_limit_problems,
    iam_documents,
    policy_size,
    role_arn_for,
    role_name_for,
)
from kftenancy.render.seaweedfs import config_bytes, seaweedfs_iam_config, tenants_in

KEY = b"k" * 32


def s3_policy(**data_lake: Any) -> TenancyPolicySpec:
    return load_policy(
        {
            "dataLake": {
                "enabled": True,
                "provider": "s3compatible",
                "issuerUrl": "https://127.0.0.1:6443",
                "endpoint": "http://127.0.0.1:8333",
                **data_lake,
            }
        }
    )


def tenants(policy: TenancyPolicySpec, n: int) -> list[str]:
    """n realistic tenant names, some of them as long as a namespace name can be."""
    ids = [f"user{i}.{'x' * (i % 60)}@example-corporation.com" for i in range(n)]
    return [profile_name(policy, u) for u in ids]


def test_200_tenants_fit_every_documented_aws_limit() -> None:
    policy = load_policy(
        {
            "dataLake": {
                "enabled": True,
                "serviceAccounts": ["default-editor", "pipeline-runner", "ml-pipeline-ui"],
                "sharedDatasets": [
                    {"bucket": "public-datasets", "prefix": "imagenet/"},
                    {"bucket": "reference-data"},
                ],
            }
        }
    )
    names = tenants(policy, 200)
    assert max(len(n) for n in names) == 63  # the longest a namespace can be
    docs = [iam_documents(policy, n) for n in names]
    assert [p for d in docs for p in aws_limit_problems(d)] == []
    assert len({d["roleName"].lower() for d in docs}) == 200  # IAM names ignore case
    worst_trust = max(policy_size(d["trustPolicy"]) for d in docs)
    worst_permissions = max(policy_size(d["permissionPolicy"]) for d in docs)
    assert worst_trust < TRUST_POLICY_MAX / 2 and worst_permissions < MANAGED_POLICY_MAX / 4
    # The seed's shared role with every tenant's subject appended breaks the trust limit.
    shared = {
        **docs[0]["trustPolicy"],
        "Statement": [
            {
                **docs[0]["trustPolicy"]["Statement"][0],
                "Condition": {
                    "StringLike": {
                        "oidc.example.com:sub": [
                            f"system:serviceaccount:{n}:default-editor" for n in names[:40]
                        ]
                    }
                },
            }
        ],
    }
    assert policy_size(shared) > TRUST_POLICY_MAX


def test_limit_checker_names_what_breaks() -> None:
    policy = lake_policy()
    docs = iam_documents(policy, "alice")
    docs["roleName"] = "r" * 65
    docs["trustPolicy"] = {"Statement": ["x" * TRUST_POLICY_MAX]}
    problems = aws_limit_problems(docs)
    assert any("role name" in p and "65 > 64" in p for p in problems)
    assert any("trust policy" in p for p in problems)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63))
def test_role_names_stay_within_64_characters_and_distinct(namespace: str) -> None:
    policy = lake_policy()
    name = role_name_for(policy, namespace)
    assert len(name) <= ROLE_NAME_MAX
    assert role_arn_for(policy, namespace).endswith(f":role/{name}")
    if len(f"kubeflow-{namespace}") <= ROLE_NAME_MAX:
        assert name == f"kubeflow-{namespace}"
    else:
        assert name != role_name_for(
            policy, namespace[:-1] + ("a" if namespace[-1] != "a" else "b")
        )


def test_the_webhook_annotates_the_same_role_the_documents_describe() -> None:
    policy = lake_policy()
    long_ns = "n" * 63
    assert (
        web_identity_annotations(policy, long_ns)[c.ANN_ROLE_ARN]
        == iam_documents(policy, long_ns)["roleArn"]
    )


def test_shared_datasets_are_read_only() -> None:
    policy = lake_policy(sharedDatasets=[{"bucket": "public", "prefix": "imagenet/"}])
    statements = iam_documents(policy, "alice")["permissionPolicy"]["Statement"]
    shared = [s for s in statements if "public" in json.dumps(s["Resource"])]
    assert {a for s in shared for a in s["Action"]} == {"s3:ListBucket", "s3:GetObject"}
    assert [s["Resource"] for s in shared] == [
        ["arn:aws:s3:::public"],
        ["arn:aws:s3:::public/imagenet/*"],
    ]
    assert shared[0]["Condition"] == {"StringLike": {"s3:prefix": ["imagenet/", "imagenet/*"]}}


def test_aws_refuses_credentials_shorter_than_sts_allows() -> None:
    with pytest.raises(ValidationError, match=r"sessionDurationSeconds 60 is below AWS STS"):
        lake_policy(sessionDurationSeconds=60)
    assert s3_policy(sessionDurationSeconds=5).data_lake.session_duration_seconds == 5


# ------------------------------------------------------------------- SeaweedFS


def test_seaweedfs_config_has_one_provider_and_a_role_and_policy_per_tenant() -> None:
    policy = s3_policy(sessionDurationSeconds=600, audience="sts.kftenancy.test")
    config = seaweedfs_iam_config(policy, ["bob", "alice", "alice"], signing_key=KEY)
    assert config["sts"]["tokenDuration"] == config["sts"]["maxSessionLength"] == "600s"
    [provider] = config["providers"]
    assert provider["name"] == "kubernetes" and provider["type"] == "oidc"
    assert provider["config"] == {
        "issuer": "https://127.0.0.1:6443",
        "clientId": "sts.kftenancy.test",
        "jwksUri": "https://127.0.0.1:6443/openid/v1/jwks",
    }
    assert config["policy"] == {"defaultEffect": "Deny"}
    assert tenants_in(config) == {
        "kubeflow-alice": "arn:aws:iam::123456789012:role/kubeflow-alice",
        "kubeflow-bob": "arn:aws:iam::123456789012:role/kubeflow-bob",
    }
    assert [p["name"] for p in config["policies"]] == ["kubeflow-alice", "kubeflow-bob"]
    assert config_bytes(config) == config_bytes(
        seaweedfs_iam_config(policy, ["alice", "bob"], signing_key=KEY)
    )


def test_no_seaweedfs_role_lacks_its_subject_condition() -> None:
    policy = s3_policy(serviceAccounts=["default-editor", "pipeline-runner"])
    names = tenants(policy, 200)
    config = seaweedfs_iam_config(policy, names, signing_key=KEY)
    assert len(config["roles"]) == 200
    for role in config["roles"]:
        tenant = next(n for n in names if role_name_for(policy, n) == role["roleName"])
        [statement] = role["trustPolicy"]["Statement"]
        assert statement["Effect"] == "Allow"
        assert statement["Principal"] == {"Federated": "kubernetes"}
        # SeaweedFS evaluates oidc:sub only; any other key (or none) would fail closed or
        # admit every service account of the issuer.
        assert statement["Condition"] == {
            "StringEquals": {
                "oidc:sub": [
                    f"system:serviceaccount:{tenant}:default-editor",
                    f"system:serviceaccount:{tenant}:pipeline-runner",
                ]
            }
        }
        assert "*" not in json.dumps(role["trustPolicy"])
        assert role["attachedPolicies"] == [role["roleName"]]


def test_seaweedfs_config_refuses_a_weak_key_and_colliding_roles() -> None:
    with pytest.raises(KftenancyError, match="at least 32"):
        seaweedfs_iam_config(s3_policy(), ["alice"], signing_key=b"short")
    shared = s3_policy(roleArnTemplate="arn:aws:iam::123456789012:role/everyone")
    with pytest.raises(KftenancyError, match=r"same role 'everyone'"):
        seaweedfs_iam_config(shared, ["alice", "bob"], signing_key=KEY)


def test_pods_of_an_s3_compatible_lake_get_its_endpoint() -> None:
    policy = s3_policy()
    ctx = context(
        service_accounts={("alice", "default-editor"): web_identity_annotations(policy, "alice")}
    )
    out = mutated(policy, pod("alice", service_account="default-editor"), ctx)
    env = {e["name"]: e["value"] for e in out["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/kubeflow-alice"


# ------------------------------------------------------------------- the shell's pure parts


def profile(name: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": meta}


def test_offboarding_tenants_leave_the_storage_configuration() -> None:
    from kftenancy.controllers.datalake import active_tenants, storage_configuration

    profiles = [profile("bob"), profile("alice"), profile("carol", deleting=True)]
    assert active_tenants(profiles) == ["bob", "alice"]
    config = json.loads(
        storage_configuration(s3_policy(), active_tenants(profiles), signing_key=KEY)
    )
    assert sorted(tenants_in(config)) == ["kubeflow-alice", "kubeflow-bob"]
    with pytest.raises(KftenancyError, match="signing key"):
        storage_configuration(s3_policy(), ["alice"], signing_key=None)
    bundle = json.loads(storage_configuration(lake_policy(), ["bob", "alice"], signing_key=None))
    assert [r["roleName"] for r in bundle["roles"]] == ["kubeflow-alice", "kubeflow-bob"]
    assert bundle["roles"][0]["trustPolicy"]["Statement"][0]["Condition"]["StringEquals"]


async def test_file_applier_writes_atomically_then_runs_the_command(tmp_path: Any) -> None:
    from kftenancy.controllers.datalake import file_applier

    target = tmp_path / "iam.json"
    marker = tmp_path / "reloaded"
    await file_applier(target, f"touch {marker}")(b'{"roles": []}\n')
    assert target.read_bytes() == b'{"roles": []}\n'
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert marker.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(KftenancyError, match=r"reload command 'false' exited with 1"):
        await file_applier(target, "false")(b"{}")


def test_datalake_rows_show_prefix_role_and_what_is_applied() -> None:
    from kftenancy.cli.datalake import applied_roles, datalake_rows

    policy = s3_policy()
    config = seaweedfs_iam_config(policy, ["alice"], signing_key=KEY)
    rows = datalake_rows(
        policy, [profile("alice"), profile("bob", deleting=True)], applied_roles(config)
    )
    assert rows == [
        {
            "tenant": "alice",
            "bucket": "datalake",
            "prefix": "alice/",
            "role": "arn:aws:iam::123456789012:role/kubeflow-alice",
            "state": "active",
            "applied": True,
        },
        {
            "tenant": "bob",
            "bucket": "datalake",
            "prefix": "bob/",
            "role": "arn:aws:iam::123456789012:role/kubeflow-bob",
            "state": "offboarding",
            "applied": False,
        },
    ]


def test_seaweedfs_is_started_with_no_fixed_port_and_loopback_only(tmp_path: Any) -> None:
    from kftenancy.lab.seaweedfs import PORT_NAMES, weed_args

    ports = {name: 20000 + i for i, name in enumerate(PORT_NAMES)}
    args = weed_args(
        tmp_path / "weed", data_dir=tmp_path, ports=ports, iam_config=tmp_path, s3_config=tmp_path
    )
    assert "-ip.bind=127.0.0.1" in args and "-master.telemetry=false" in args
    # The Iceberg (8181) and Lance (9101) catalogs have fixed default ports: off.
    assert "-s3.port.iceberg=0" in args and "-s3.port.lance=0" in args
    assert "-webdav=false" in args
    for flag in ("-s3.port=20006", "-s3.port.grpc=20007", "-filer.port.grpc=20005"):
        assert flag in args


def test_publish_patches_set_one_secret_key_and_roll_only_on_change() -> None:
    import hashlib

    from kftenancy.controllers.datalake import restart_patch, secret_patch

    assert secret_patch("iam.json", b"{}\n") == {"data": {"iam.json": "e30K"}}
    digest = hashlib.sha256(b'{"roles": []}\n').hexdigest()[:16]
    assert restart_patch(b'{"roles": []}\n') == {
        "spec": {"template": {"metadata": {"annotations": {c.ANN_DATALAKE_CONFIG_DIGEST: digest}}}}
    }  # the same content again: the same template, no new rollout
    assert restart_patch(b'{"roles": [1]}\n') != restart_patch(b'{"roles": []}\n')


def test_publish_refuses_a_configuration_larger_than_a_secret_holds() -> None:
    from kftenancy.controllers.datalake import SECRET_MAX_BYTES, secret_patch

    secret_patch("iam.json", b"x" * SECRET_MAX_BYTES)
    with pytest.raises(KftenancyError, match=r"1,048,577 bytes; a Secret holds at most 1,048,576"):
        secret_patch("iam.json", b"x" * (SECRET_MAX_BYTES + 1))


@pytest.mark.parametrize("ref", ["seaweedfs-s3", "deployment/", "pod/x", "deployment/a/b"])
def test_publish_restart_needs_a_workload_kind_and_name(ref: str) -> None:
    from kftenancy.controllers.datalake import parse_workload

    with pytest.raises(KftenancyError, match=r"expected KIND/NAME .*deployment/seaweedfs-s3"):
        parse_workload(ref)


def test_publish_restart_names_map_to_their_api() -> None:
    from kftenancy.controllers.datalake import parse_workload

    assert parse_workload("deployment/seaweedfs-s3") == ("apps/v1", "Deployment", "seaweedfs-s3")
    assert parse_workload("StatefulSet/seaweedfs-filer") == (
        "apps/v1",
        "StatefulSet",
        "seaweedfs-filer",
    )
