"""`kftenancy render` / `kftenancy crd`: output, and exit 2 with field and value on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from manifest_schemas import validate_manifest
from typer.testing import CliRunner

from kftenancy.cli import app
from kftenancy.crds import all_crds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policy.yaml"
DEMO_USERS = ["Alice.Smith@Example.com", "alice.smith@other.org", "CN=Bob,OU=ML,DC=corp"]
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_demo_users_render_complete_valid_distinct_workspaces() -> None:
    args = ["render", "--policy", str(EXAMPLE)]
    for user in DEMO_USERS:
        args += ["--user", user]
    code, out, err = _run(*args)
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    for doc in docs:
        validate_manifest(doc)
    namespaces = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    profiles = [d for d in docs if d["kind"] == "Profile"]
    assert len(set(namespaces)) == 3
    assert sorted(p["spec"]["owner"]["name"] for p in profiles) == sorted(DEMO_USERS)
    # The example policy turns the data lake on: editors carry their own tenant's role.
    editors = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "default-editor"
    ]
    arns = {e["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] for e in editors}
    assert arns == {f"arn:aws:iam::123456789012:role/kubeflow-{ns}" for ns in namespaces}


def test_profile_file_and_json_output(tmp_path: Path) -> None:
    profile = tmp_path / "profiles.yaml"
    profile.write_text(
        "apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata: {name: team-a}\n"
        "spec:\n  owner: {kind: User, name: lead@example.com}\n"
        "  contributors: [{kind: Group, name: ml, role: edit}]\n---\n"
        "apiVersion: kubeflow.org/v1beta1\nkind: Profile\nmetadata: {name: team-b}\n"
        "spec: {owner: {kind: User, name: b@example.com}}\n"
    )
    code, out, err = _run(
        "render", "--policy", str(EXAMPLE), "--profile", str(profile), "-o", "json"
    )
    assert code == 0, err
    items = json.loads(out)["items"]
    assert {i["metadata"]["labels"]["kftenancy.dev/tenant"] for i in items} == {"team-a", "team-b"}
    assert any(i["metadata"]["name"] == "group-ml-clusterrole-edit" for i in items)


def test_platform_flag_renders_platform_objects() -> None:
    code, out, err = _run(
        "render", "--policy", str(ROOT / "examples" / "policy-kubernetes.yaml"), "--platform"
    )
    assert code == 0, err
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out)}
    assert ("CustomResourceDefinition", "profiles.kubeflow.org") in kinds
    assert ("ClusterRole", "kftenancy-controller") in kinds


def test_crd_command_prints_the_shipped_crds() -> None:
    code, out, _ = _run("crd")
    assert code == 0
    assert list(yaml.safe_load_all(out)) == all_crds()


def test_crd_dir_writes_files(tmp_path: Path) -> None:
    code, _, _ = _run("crd", "--dir", str(tmp_path / "crds"))
    assert code == 0
    assert {p.name for p in (tmp_path / "crds").iterdir()} == {
        "tenancypolicies.kftenancy.dev.yaml",
        "profiles.kubeflow.org.yaml",
    }


@pytest.mark.parametrize(
    ("policy_text", "expected"),
    [
        ("mesh: {flavor: linkerd}\n", ["mesh.flavor", "'linkerd'", "'ossm'"]),
        ("naming: {prefix: Upper}\n", ["naming.prefix", "'Upper'", "lowercase"]),
        ("resources: {quota: {cpu: lots}}\n", ["resources.quota", "'lots'", "quantity"]),
        (
            "dataLake: {tokenExpirationSeconds: 60}\n",
            ["dataLake.tokenExpirationSeconds", "60", "600"],
        ),
        (
            "platform: {kubeflowProfileController: true, kubeflowInstalled: false}\n",
            ["platform", "kubeflowInstalled"],
        ),
        ("mesh: [unclosed\n", ["not valid YAML", "line"]),
        ("- just\n- a list\n", ["must be a mapping", "list"]),
    ],
)
def test_bad_policy_exits_2_naming_field_and_value(
    tmp_path: Path, policy_text: str, expected: list[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text)
    code, out, err = _run("render", "--policy", str(path), "--user", "alice")
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert str(path) in err
    for text in expected:
        assert text in err, (text, err)


@pytest.mark.parametrize(
    ("profile_text", "expected"),
    [
        ("apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata: {name: a}\nspec: {owner: {kind: Robot, name: x}}\n",
         ["spec.owner.kind", "'Robot'", "'User' or 'Group'"]),
        ("apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata: {name: A_B}\nspec: {owner: {kind: User, name: x}}\n",
         ["metadata.name", "'A_B'", "DNS-1123"]),
        ("apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata: {name: a}\n"
         "spec: {owner: {kind: User, name: x}, contributors: [{kind: User, name: y, role: admin}]}\n",
         ["spec.contributors[0].role", "'admin'", "'edit' or 'view'"]),
        ("apiVersion: kubeflow.org/v1\nkind: Profile\nmetadata: {name: a, annotations: {kftenancy.dev/contributors: 'nope'}}\n"
         "spec: {owner: {kind: User, name: x}}\n",
         ["kftenancy.dev/contributors", "not valid JSON", "'nope'"]),
        ("apiVersion: v1\nkind: Profile\nmetadata: {name: a}\n", ["apiVersion", "'v1'", "kubeflow.org/v1"]),
    ],
)  # fmt: skip
def test_bad_profile_exits_2_naming_field_and_value(
    tmp_path: Path, profile_text: str, expected: list[str]
) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(profile_text)
    code, _, err = _run("render", "--policy", str(EXAMPLE), "--profile", str(path))
    assert code == 2
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)


def test_blank_user_id_and_missing_file_exit_2(tmp_path: Path) -> None:
    code, _, err = _run("render", "--policy", str(EXAMPLE), "--user", "  ")
    assert code == 2 and "user id" in err and "empty" in err
    code, _, err = _run("render", "--policy", str(tmp_path / "missing.yaml"), "--user", "a")
    assert code == 2 and "missing.yaml" in err and "cannot read" in err


def test_nothing_to_render_is_a_usage_error() -> None:
    code, _, err = _run("render", "--policy", str(EXAMPLE))
    assert code == 2 and "--user" in err


def test_iam_flag_prints_each_tenants_role_documents() -> None:
    code, out, err = _run(
        "render", "--policy", str(EXAMPLE), "--user", "alice", "--iam", "-o", "json"
    )
    assert code == 0, err
    [docs] = json.loads(out)["items"]
    assert docs["profile"] == "alice"
    assert docs["roleArn"] == "arn:aws:iam::123456789012:role/kubeflow-alice"
    sub = docs["trustPolicy"]["Statement"][0]["Condition"]["StringEquals"]["oidc.example.com:sub"]
    assert sub == ["system:serviceaccount:alice:default-editor"]
    code, _, err = _run(
        "render",
        "--policy",
        str(ROOT / "examples" / "policy-kubernetes.yaml"),
        "--user",
        "a",
        "--iam",
    )
    assert code == 2 and "dataLake.enabled" in err


def test_profile_list_from_stdin_as_kubectl_prints_it() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "Profile",
                "metadata": {"name": n},
                "spec": {"owner": {"kind": "User", "name": f"{n}@example.com"}},
            }
            for n in ("one", "two")
        ],
    }
    result = runner.invoke(
        app, ["render", "--policy", str(EXAMPLE), "--profile", "-"], input=json.dumps(listing)
    )
    assert result.exit_code == 0, result.stderr
    namespaces = [
        d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Namespace"
    ]
    assert namespaces == ["one", "two"]
