"""The Helm chart with the real Helm and the real API server: lint, template, schemas,
server-side dry-run of every rendered object; the controller's data-lake values (off by
default; on: its env, mounts and the publish Role; refused combinations), and an install
on the lab whose controller publishes the storage configuration."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from helm_support import (
    CHART,
    KUBE_VERSION,
    ROOT,
    chart_for_policy,
    eventually,
    helm,
    running_controller,
    service_account_kubeconfig,
    template,
)

from kftenancy import constants as c
from kftenancy.controllers.datalake import config_digest
from kftenancy.controllers.operator import ControllerSettings
from kftenancy.kube import ApiError, Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.policy import load_policy
from kftenancy.render import profile_for_user
from kftenancy.render.seaweedfs import tenants_in

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


# ---------------------------------------------------------------- installed on the lab


@pytest.fixture(scope="module")
def install_lab() -> Iterator[LocalCluster]:
    """A lab of its own for `helm install` (the chart's cluster-wide objects would clash
    with other tests' on the shared one); our CRDs come from the chart, as they would."""
    lab = LocalCluster(controller_manager=True)
    try:
        lab.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane could not start:\n{err}", pytrace=False)
    try:
        lab.install_crds(
            [
                d
                for d in bundled_crds()
                if d["spec"]["group"] not in ("user.openshift.io", c.API_GROUP, c.KUBEFLOW_GROUP)
            ]
        )
        yield lab
    finally:
        lab.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def install_admin(install_lab: LocalCluster) -> AsyncIterator[Kube]:
    kube = Kube.from_kubeconfig(str(install_lab.admin_kubeconfig))
    yield kube
    await kube.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _secret(ns: str, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {k: _b64(v) for k, v in data.items()},
    }


SEAWEEDFS_S3 = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "seaweedfs-s3", "namespace": "storage"},
    "spec": {
        "selector": {"matchLabels": {"app": "seaweedfs-s3"}},
        "template": {
            "metadata": {"labels": {"app": "seaweedfs-s3"}},
            "spec": {
                "containers": [{"name": "s3", "image": "registry.example.com/seaweedfs:4.48"}]
            },
        },
    },
}


async def _pod_files(admin: Kube, pod: dict[str, Any], container: dict[str, Any], root: Path,
                     names: set[str]) -> dict[str, Path]:  # fmt: skip
    """The kubelet's part, locally: mount path → a directory, for the volumes `names`;
    Secret volumes are filled from the API the way the kubelet projects them."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in container["volumeMounts"]:
        if m["name"] not in names:
            continue
        here = root / m["name"]
        here.mkdir(parents=True)
        source = volumes[m["name"]].get("secret")
        if source is not None:
            secret = await admin.get("v1", "Secret", source["secretName"], "kftenancy")
            assert secret is not None, f"the chart mounts Secret {source['secretName']}"
            for item in source["items"]:
                (here / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
        out[m["mountPath"]] = here
    return out


@pytest.mark.asyncio(loop_scope="session")
async def test_installed_chart_controller_publishes_the_seaweedfs_configuration_with_its_own_rbac(
    install_lab: LocalCluster,
    install_admin: Kube,
    charts: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab, admin, ns = install_lab, install_admin, "kftenancy"
    for name in (ns, "istio-system", "storage"):
        await admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    key = os.urandom(32).hex().encode()
    await admin.apply(_secret(ns, "datalake-signing", {"signing-key": key}))
    await admin.apply(_secret("storage", "seaweedfs-iam", {"other": b"kept"}))
    await admin.apply(_secret("storage", "unrelated", {"password": b"not yours"}))
    await admin.apply(SEAWEEDFS_S3)
    home, kc = tmp_path / "helm", install_lab.admin_kubeconfig
    values = [a for v in SEAWEEDFS_VALUES for a in ("--set", v)]
    mode = ["--set", "certificates.mode=chart", "--set", "controller.replicas=1"]
    helm("install", "kftenancy", str(charts["seaweedfs"]), "-n", ns, *mode, *values,
         home=home, kubeconfig=kc)  # fmt: skip
    try:
        installed = await admin.get("apps/v1", "Deployment", CONTROLLER, ns)
        assert installed is not None
        pod = installed["spec"]["template"]["spec"]
        [container] = pod["containers"]
        mounts = await _pod_files(admin, pod, container, tmp_path / "pod",
                                  {"datalake", "datalake-key"})  # fmt: skip

        def local(value: str) -> str:
            for path, here in mounts.items():
                value = value.replace(f"{path}/", f"{here}/")
            return value

        env = {k: local(v) for k, v in data_lake_env(container).items()}
        config = Path(env["KFTENANCY_DATALAKE_CONFIG"])
        assert config.parent == mounts["/var/lib/kftenancy/datalake"]  # the file is on the volume
        # The reload command runs `kftenancy datalake publish` as the controller's
        # ServiceAccount (in the pod: its in-cluster token), with only the chart's RBAC.
        ctl_kc = await service_account_kubeconfig(lab, admin, CONTROLLER, ns, tmp_path / "ctl")
        monkeypatch.setenv("KFTENANCY_KUBECONFIG", str(ctl_kc))
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        settings = ControllerSettings(
            kubeconfig=str(ctl_kc),
            metrics_port=0,
            leader_election=True,
            lease_namespace=ns,
            apply_platform=False,
            event_namespace=ns,
            datalake_config=env["KFTENANCY_DATALAKE_CONFIG"],
            datalake_reload_command=env["KFTENANCY_DATALAKE_RELOAD_COMMAND"],
            datalake_signing_key_file=env["KFTENANCY_DATALAKE_SIGNING_KEY_FILE"],
        )
        policy = load_policy(
            await admin.get(f"{c.API_GROUP}/{c.API_VERSION}", c.POLICY_KIND, "default")
        )
        profile = profile_for_user(policy, "dl-alice@example.com")
        tenant = profile["metadata"]["name"]

        async def published() -> dict[str, Any] | None:
            secret = await admin.get("v1", "Secret", "seaweedfs-iam", "storage")
            data = (secret or {}).get("data") or {}
            if "config.json" not in data:
                return None
            got: dict[str, Any] = json.loads(base64.b64decode(data["config.json"]))
            return got if f"kubeflow-{tenant}" in tenants_in(got) else None

        async with running_controller(settings) as ctl:
            await admin.create(profile)
            iam = await eventually(
                published, 60, f"{tenant}'s role in Secret storage/seaweedfs-iam"
            )
            assert ctl.storage is not None and ctl.storage.error is None
        content = await asyncio.to_thread(config.read_bytes)
        assert json.loads(content) == iam  # the controller's file is what was published
        assert iam["sts"]["signingKey"] == _b64(key)  # from the chart-mounted Secret
        secret = await admin.get("v1", "Secret", "seaweedfs-iam", "storage")
        assert secret is not None and secret["data"]["other"] == _b64(b"kept")
        s3 = await admin.get("apps/v1", "Deployment", "seaweedfs-s3", "storage")
        assert s3 is not None
        annotations = s3["spec"]["template"]["metadata"]["annotations"]
        assert annotations[c.ANN_DATALAKE_CONFIG_DIGEST] == config_digest(content)

        # A new leader (here: a restart) publishes the same bytes: SeaweedFS is not rolled.
        async with running_controller(settings) as ctl:
            await eventually(lambda: _applied(ctl), 60, "the new controller's first apply")
        again = await admin.get("apps/v1", "Deployment", "seaweedfs-s3", "storage")
        assert again is not None
        assert again["metadata"]["generation"] == s3["metadata"]["generation"]

        # Exactly what the Role names, and only patch: no read of any Secret there.
        as_ctl = Kube.from_kubeconfig(str(ctl_kc))
        try:
            for attempt in (
                as_ctl.get("v1", "Secret", "seaweedfs-iam", "storage"),
                as_ctl.get("v1", "Secret", "unrelated", "storage"),
                as_ctl.patch_merge("v1", "Secret", "unrelated", {"data": {}}, "storage"),
                as_ctl.list("v1", "Secret"),
            ):
                with pytest.raises(ApiError) as refused:
                    await attempt
                assert refused.value.status.code == 403
        finally:
            await as_ctl.close()

        # The publisher never creates a Secret; a missing one is named, with the fix.
        missing = await asyncio.to_thread(
            subprocess.run,
            ["kftenancy", "datalake", "publish", str(config), "-n", "storage",
             "--secret", "seaweedfs-iam-typo", "--kubeconfig", str(kc)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert missing.returncode != 0
        assert (
            "Secret storage/seaweedfs-iam-typo does not exist: create it once: "
            "kubectl -n storage create secret generic seaweedfs-iam-typo"
        ) in " ".join(missing.stderr.split()), missing.stderr

        # Turned off by an upgrade: the grant goes with it.
        helm("upgrade", "kftenancy", str(charts["seaweedfs"]), "-n", ns, *mode,
             home=home, kubeconfig=kc)  # fmt: skip
        assert await admin.get(f"{RBAC_GROUP}/v1", "Role", PUBLISH, "storage") is None
        assert await admin.get(f"{RBAC_GROUP}/v1", "RoleBinding", PUBLISH, "storage") is None
        upgraded = await admin.get("apps/v1", "Deployment", CONTROLLER, ns)
        assert upgraded is not None
        [container] = upgraded["spec"]["template"]["spec"]["containers"]
        assert data_lake_env(container) == {}
    finally:
        helm("uninstall", "kftenancy", "-n", ns, home=home, kubeconfig=kc)


async def _applied(ctl: Any) -> bool:
    return ctl.storage is not None and ctl.storage.applies >= 1
