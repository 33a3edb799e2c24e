"""`kftenancy lab` starts a usable cluster in the background and stops exactly it, also
when two commands race on one state directory under CPU load; a second LocalCluster
honours its admission-plugin options."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import lightkube
from lightkube import codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Namespace, Pod
from load_support import cpu_burners

from kftenancy.constants import ANN_TOLERATIONS_WHITELIST
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.processes import pid_runs
from kftenancy.lab.state import read_state

KFTENANCY = str(Path(sys.executable).parent / "kftenancy")


def lab(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KFTENANCY, "lab", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_lab_up_status_env_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "lab"
    try:
        started = lab(
            state_dir, "up", "--no-controller-manager", "--no-scheduler", "--no-kwok",
            "--gpu-nodes", "0",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr + started.stdout
        assert "lab running at https://127.0.0.1:" in started.stdout
        state = read_state(state_dir)
        assert state is not None and set(state.processes) == {"etcd", "kube-apiserver"}

        status = lab(state_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "ready" in status.stdout and "NOT" not in status.stdout

        exports = lab(state_dir, "env").stdout
        assert f"export KUBECONFIG={state.admin_kubeconfig}" in exports
        client = lightkube.Client(config=KubeConfig.from_file(state.admin_kubeconfig))
        assert "default" in {ns.metadata.name for ns in client.list(Namespace)}

        again = lab(state_dir, "up")
        assert again.returncode == 0 and "already running" in again.stdout
        assert read_state(state_dir) == state  # the same processes, not new ones
    finally:
        stopped = lab(state_dir, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_runs(p.pid, p.executable) for p in state.processes.values())
    assert not Path(state.workdir).exists()
    gone = lab(state_dir, "status")
    assert gone.returncode == 1 and "kftenancy lab up" in gone.stderr


def test_pod_toleration_restriction_can_be_disabled_in_a_second_cluster() -> None:
    whitelist = [{"key": "workload", "operator": "Equal", "value": "ai-ml"}]
    outside = {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}
    with LocalCluster(disable_admission_plugins=["PodTolerationRestriction"]) as second:
        argv = second.processes["kube-apiserver"].argv
        assert "--disable-admission-plugins=PodTolerationRestriction,ServiceAccount" in argv
        client = second.client()
        client.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": "open",
                        "annotations": {ANN_TOLERATIONS_WHITELIST: json.dumps(whitelist)},
                    },
                }
            )
        )
        created = client.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "outside", "namespace": "open"},
                    "spec": {
                        "containers": [{"name": "c", "image": "registry.invalid/x:1"}],
                        "tolerations": [outside],
                    },
                }
            )
        )
        assert isinstance(created, Pod)
        assert created.spec is not None
        assert outside in [t.to_dict() for t in created.spec.tolerations or []]


def test_two_lab_ups_on_one_state_dir_under_cpu_load_share_one_working_cluster(
    tmp_path: Path,
) -> None:
    """The cold-start failure: two `lab up` on one state directory wrote the cluster's
    certificates over each other, the API server reloaded the other command's serving
    certificate, and the first request failed with CERTIFICATE_VERIFY_FAILED. Now the
    second waits for the first and reuses its cluster, also with every core busy."""
    state_dir = tmp_path / "lab"
    burners = cpu_burners(240)
    try:
        ups = [
            subprocess.Popen(
                [KFTENANCY, "lab", "up", "--state-dir", str(state_dir), "--gpu-nodes", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=300)[0] for p in ups]
        assert [p.returncode for p in ups] == [0, 0], outputs
        assert sum("already running" in out for out in outputs) == 1, outputs
        state = read_state(state_dir)
        assert state is not None
        assert set(state.processes) == {
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
        }  # fmt: skip
        # The kubeconfig both commands printed works, and the issuer's discovery document
        # (what the start-up step that used to fail grants) is readable without credentials.
        client = lightkube.Client(config=KubeConfig.from_file(state.admin_kubeconfig))
        assert "default" in {ns.metadata.name for ns in client.list(Namespace)}
        ctx = ssl.create_default_context(cafile=state.ca_file)
        with urllib.request.urlopen(
            f"{state.issuer}/.well-known/openid-configuration", context=ctx, timeout=30
        ) as resp:
            assert json.load(resp)["issuer"] == state.issuer
    finally:
        for burner in burners:
            burner.kill()
        stopped = lab(state_dir, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(pid_runs(p.pid, p.executable) for p in state.processes.values())
