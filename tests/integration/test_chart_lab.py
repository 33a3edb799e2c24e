"""The Helm chart with the real Helm and the real API server: lint, template, schemas,
server-side dry-run of every rendered object; the controller's data-lake values (off by
default; on: its env, mounts and the publish Role; refused combinations), and an install
on the lab whose controller publishes the storage configuration."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from helm_support import CHART, KUBE_VERSION, ROOT, chart_for_policy, helm, template

from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from manifest_schemas import validate_manifest

POLICY: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "policy-kubernetes.yaml").read_text())[
    "spec"
]
SEAWEEDFS_LAKE = {
    "enabled": True,
    "provider": "s3compatible",
    "issuerUrl": "https://kubernetes.default.svc",
    "endpoint": "http://seaweedfs-s3.storage:8333",
}
AWS_LAKE = {"enabled": True, "provider": "aws", "injection": "platform"}
# A SeaweedFS in namespace storage: the IAM file published to its Secret, its S3 rolled.
SEAWEEDFS_VALUES = (
    "controller.dataLake.enabled=true",
    "controller.dataLake.signingKeySecret.name=datalake-signing",
    "controller.dataLake.publish.namespace=storage",
    "controller.dataLake.publish.secret=seaweedfs-iam",
    "controller.dataLake.publish.restart=deployment/seaweedfs-s3",
)
# AWS: your hook (from a ConfigMap) applies the role bundle, kept on a volume of yours.
AWS_VALUES = (
    "controller.dataLake.enabled=true",
    "controller.dataLake.configFile=roles.json",
    "controller.dataLake.reloadCommand=python3 /etc/kftenancy/hooks/apply_roles.py "
    "/var/lib/kftenancy/datalake/roles.json",
    "controller.dataLake.hooksConfigMap=kftenancy-hooks",
    "controller.dataLake.volume.persistentVolumeClaim.claimName=kftenancy-datalake",
)


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped chart and two regenerated for a policy with a data lake."""
    return {
        "shipped": CHART,
        "seaweedfs": chart_for_policy(
            tmp_path_factory.mktemp("seaweedfs"), {**POLICY, "dataLake": SEAWEEDFS_LAKE}
        ),
        "aws": chart_for_policy(tmp_path_factory.mktemp("aws"), {**POLICY, "dataLake": AWS_LAKE}),
    }


def controller_of(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, container) of the controller Deployment."""
    [d] = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == CONTROLLER]
    pod = d["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def data_lake_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "DATALAKE" in e["name"]}


CONTROLLER = "kftenancy-controller"
PUBLISH = "kftenancy-datalake-publish"
RBAC_GROUP = "rbac.authorization.k8s.io"
MODES = [
    ("certificates.mode=cert-manager", "serviceMonitor.enabled=true"),
    ("certificates.mode=chart", "serviceMonitor.enabled=false"),
]


@pytest.mark.parametrize("sets", MODES)
def test_helm_lint_strict_passes(sets: tuple[str, ...], tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART), "-n", "kftenancy", "--kube-version", "1.36.3"]
    for s in sets:
        args += ["--set", s]
    done = helm(*args, home=tmp_path)
    assert "0 chart(s) failed" in done.stdout


def test_template_refuses_a_policy_the_chart_was_not_generated_from(tmp_path: Path) -> None:
    # (helm lint downgrades a template's `fail` to INFO by design; install/template fail.)
    done = helm(
        "template",
        str(CHART),
        "--kube-version",
        "1.36.3",
        "-n",
        "kftenancy",
        "--set",
        "policy.gpu.enabled=false",
        home=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "kftenancy chart --policy" in done.stdout + done.stderr


def test_lint_refuses_a_value_the_model_refuses(tmp_path: Path) -> None:
    done = helm(
        "lint",
        str(CHART),
        "-n",
        "kftenancy",
        "--set",
        "policy.gpu.taint.effect=Sometimes",
        home=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "/policy/gpu/taint/effect" in done.stdout + done.stderr


@pytest_asyncio.fixture(loop_scope="session")
async def kube(cluster: LocalCluster) -> Any:
    k = Kube.from_kubeconfig(str(cluster.admin_kubeconfig))
    await k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kftenancy"}})
    await k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
    yield k
    await k.close()


@pytest.mark.parametrize("sets", MODES)
@pytest.mark.asyncio(loop_scope="session")
async def test_every_rendered_object_is_valid_and_accepted_by_the_api_server(
    sets: tuple[str, ...], kube: Kube, tmp_path: Path
) -> None:
    objs = template(tmp_path, *sets)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ClusterRole"} <= kinds
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} <= kinds
    for obj in objs:
        validate_manifest(obj)
        await kube.apply(obj, dry_run=True)
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) == 3
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        assert d["spec"]["replicas"] >= 2
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "podAntiAffinity" in pod["affinity"]
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["livenessProbe"] and container["readinessProbe"]
        assert pod["serviceAccountName"] == d["metadata"]["name"]


@pytest.mark.parametrize("chart", ["shipped", "seaweedfs"])
def test_by_default_the_controller_gets_no_data_lake_env_mounts_or_rbac(
    chart: str, charts: dict[str, Path], tmp_path: Path
) -> None:
    # (also where the policy has a data lake: the controller's sync is a chart value of its own)
    objs = template(tmp_path, chart=charts[chart])
    pod, container = controller_of(objs)
    assert data_lake_env(container) == {}
    assert [m["name"] for m in container["volumeMounts"]] == ["tls", "tmp"]
    assert [v["name"] for v in pod["volumes"]] == ["tls", "tmp"]
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")]


def test_seaweedfs_values_wire_the_controller_and_grant_only_the_publish(
    charts: dict[str, Path], tmp_path: Path
) -> None:
    objs = template(tmp_path, *SEAWEEDFS_VALUES, chart=charts["seaweedfs"])
    pod, container = controller_of(objs)
    config = "/var/lib/kftenancy/datalake/config.json"
    assert data_lake_env(container) == {
        "KFTENANCY_DATALAKE_CONFIG": config,
        "KFTENANCY_DATALAKE_RELOAD_COMMAND": f"kftenancy datalake publish {config} "
        "--namespace storage --secret seaweedfs-iam --restart deployment/seaweedfs-s3",
        "KFTENANCY_DATALAKE_SIGNING_KEY_FILE": "/etc/kftenancy/datalake-key/signing-key",
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["datalake"] == {"name": "datalake", "mountPath": "/var/lib/kftenancy/datalake"}
    assert mounts["datalake-key"] == {
        "name": "datalake-key",
        "mountPath": "/etc/kftenancy/datalake-key",
        "readOnly": True,
    }
    assert "hooks" not in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["datalake"] == {"name": "datalake", "emptyDir": {"sizeLimit": "64Mi"}}
    assert volumes["datalake-key"]["secret"] == {
        "secretName": "datalake-signing",
        "items": [{"key": "signing-key", "path": "signing-key"}],
        "defaultMode": 0o440,
    }
    [role] = [o for o in objs if o["kind"] == "Role"]
    assert role["metadata"] == {**role["metadata"], "name": PUBLISH, "namespace": "storage"}
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["seaweedfs-iam"],
         "verbs": ["patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["seaweedfs-s3"],
         "verbs": ["patch"]},
    ]  # fmt: skip
    [binding] = [o for o in objs if o["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == "storage"
    assert binding["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": "Role", "name": PUBLISH}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": CONTROLLER, "namespace": "kftenancy"}
    ]
    args = ["lint", "--strict", str(charts["seaweedfs"]), "-n", "kftenancy"]
    for v in SEAWEEDFS_VALUES:
        args += ["--set", v]
    assert "0 chart(s) failed" in helm(*args, home=tmp_path).stdout


def test_aws_values_run_your_hook_from_a_configmap_on_your_volume(
    charts: dict[str, Path], tmp_path: Path
) -> None:
    objs = template(tmp_path, *AWS_VALUES, chart=charts["aws"])
    pod, container = controller_of(objs)
    assert data_lake_env(container) == {
        "KFTENANCY_DATALAKE_CONFIG": "/var/lib/kftenancy/datalake/roles.json",
        "KFTENANCY_DATALAKE_RELOAD_COMMAND": "python3 /etc/kftenancy/hooks/apply_roles.py "
        "/var/lib/kftenancy/datalake/roles.json",
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "tls": "/tls",
        "tmp": "/tmp",
        "datalake": "/var/lib/kftenancy/datalake",
        "hooks": "/etc/kftenancy/hooks",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["datalake"] == {
        "name": "datalake",
        "persistentVolumeClaim": {"claimName": "kftenancy-datalake"},
    }
    assert volumes["hooks"]["configMap"] == {"name": "kftenancy-hooks", "defaultMode": 0o555}
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")]  # no publish: no RBAC


@pytest.mark.parametrize(
    ("chart", "sets", "message"),
    [
        ("shipped", ["controller.dataLake.reloadCommand=/hooks/reload"],
         "controller.dataLake.reloadCommand is set but controller.dataLake.enabled is false"),
        ("shipped", ["controller.dataLake.publish.secret=seaweedfs-iam"],
         "controller.dataLake.publish.secret is set but controller.dataLake.enabled is false"),
        ("shipped", ["controller.dataLake.enabled=true"],
         "the policy's dataLake.enabled is false"),
        ("seaweedfs", ["controller.dataLake.enabled=true"],
         "controller.dataLake.signingKeySecret.name is empty: the policy's dataLake.provider "
         "is s3compatible"),
        ("seaweedfs", [*SEAWEEDFS_VALUES, "controller.dataLake.publish.namespace="],
         "controller.dataLake.publish.namespace is empty"),
        ("seaweedfs", [*SEAWEEDFS_VALUES[:3]], 'publish.namespace is "storage" but there is '
         "nothing to publish"),
        ("seaweedfs", [*SEAWEEDFS_VALUES, "controller.dataLake.reloadCommand=/hooks/reload"],
         "controller.dataLake.reloadCommand and controller.dataLake.publish are both set"),
        ("aws", [*AWS_VALUES, "controller.dataLake.signingKeySecret.name=datalake-signing"],
         "the policy's dataLake.provider is aws"),
        # shapes: values.schema.json, naming the value's path
        ("seaweedfs", [*SEAWEEDFS_VALUES, "controller.dataLake.publish.restart=pod/seaweedfs"],
         "/controller/dataLake/publish/restart"),
        ("aws", [*AWS_VALUES, "controller.dataLake.configFile=../../etc/passwd"],
         "/controller/dataLake/configFile"),
        ("aws", [*AWS_VALUES, "controller.dataLake.reloadcommand=typo"],
         "additional properties 'reloadcommand' not allowed"),
    ],
)  # fmt: skip
def test_data_lake_values_that_do_not_fit_together_are_refused_with_the_fix(
    chart: str, sets: list[str], message: str, charts: dict[str, Path], tmp_path: Path
) -> None:
    args = ["template", "kftenancy", str(charts[chart]), "-n", "kftenancy"]
    args += ["--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    done = helm(*args, home=tmp_path, check=False)
    assert done.returncode != 0, done.stdout[:500]
    assert message in done.stderr, done.stderr


@pytest.mark.asyncio(loop_scope="session")
async def test_data_lake_objects_are_valid_and_accepted_by_the_api_server(
    charts: dict[str, Path], kube: Kube, tmp_path: Path
) -> None:
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "storage"}})
    for chart, values in (("seaweedfs", SEAWEEDFS_VALUES), ("aws", AWS_VALUES)):
        for obj in template(tmp_path, *values, chart=charts[chart]):
            validate_manifest(obj)
            await kube.apply(obj, dry_run=True)
