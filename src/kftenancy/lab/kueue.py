"""Kueue in the local control plane: its CRDs, its webhooks on 127.0.0.1, the process.

Facts this module is built on (Kueue v0.17.0, run out of cluster):

- Its CRDs (copied from the Go module by `hack/build-control-plane.sh` next to the
  binary, `kueue-manifests/crds/`) need server-side apply (the Workload CRD is too large
  for the last-applied annotation). We use v1beta2 objects only: the CRDs' conversion
  webhook is not configured.
- Its webhooks cannot be turned off. With `internalCertManagement.enable: false` it
  serves them with the certificate in `webhook.certDir` (`tls.crt`/`tls.key`, here signed
  by the lab CA for 127.0.0.1), and we register, from its own webhook manifest, only the
  webhooks for Kueue's kinds and for the integrations enabled (`batch/job`): a webhook of
  a disabled integration answers 404 and, failing closed, would block those objects.
- With internal certificates off it also insists on metrics certificates at the fixed
  path /etc/kueue/metrics/certs (read at start); they are written there once if absent
  (the metrics endpoint itself is not used) and never overwritten.
- `--feature-gates=VisibilityOnDemand=false` avoids its extra API server.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kftenancy.certs import serving_pair, write_pair
from kftenancy.lab.errors import ControlPlaneError

KUEUE_NAMESPACE = "kueue-system"
KUEUE_GROUP = "kueue.x-k8s.io"
FRAMEWORKS = ("batch/job",)
# API groups whose webhooks belong to an enabled integration (FRAMEWORKS) or to Kueue.
_WEBHOOK_GROUPS = {KUEUE_GROUP, "batch"}
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
WEBHOOK_CONFIGURATION = "kftenancy-lab-kueue"


def kueue_crds(manifests: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((manifests / "crds").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def kueue_config(*, webhook_port: int, health_port: int, metrics_port: int, cert_dir: Path) -> str:
    """Kueue's Configuration file (config.kueue.x-k8s.io/v1beta2)."""
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(FRAMEWORKS)},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _wanted(webhook: Mapping[str, Any]) -> bool:
    return all(
        set(rule.get("apiGroups") or []) <= _WEBHOOK_GROUPS for rule in webhook.get("rules") or []
    )


def webhook_configurations(manifests: Path, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """Kueue's own webhook configurations, narrowed to Kueue's kinds and batch/Job, each
    webhook pointed at https://127.0.0.1:<port><its path> with the lab CA."""
    import base64

    ca = base64.b64encode(ca_pem).decode()
    out = []
    for doc in yaml.safe_load_all((manifests / "webhooks.yaml").read_text()):
        if not doc:
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            if not _wanted(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook = {
                **hook,
                "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca},
            }
            hook["timeoutSeconds"] = 10
            hooks.append(hook)
        kind = doc["kind"]
        suffix = "mutating" if kind.startswith("Mutating") else "validating"
        out.append(
            {
                "apiVersion": doc["apiVersion"],
                "kind": kind,
                "metadata": {"name": f"{WEBHOOK_CONFIGURATION}-{suffix}"},
                "webhooks": hooks,
            }
        )
    return out


def ensure_metrics_certs(directory: Path = METRICS_CERT_DIR) -> None:
    """Kueue reads these at start even though nothing here scrapes its metrics."""
    if (directory / "tls.crt").is_file() and (directory / "tls.key").is_file():
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".certs-{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        write_pair(serving_pair("kueue-metrics", ["127.0.0.1"], dt.datetime.now(dt.UTC)), tmp)
        for name in ("tls.crt", "tls.key"):
            if not (directory / name).exists():
                os.replace(tmp / name, directory / name)
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    except OSError as err:
        raise ControlPlaneError(
            f"Kueue (run out of cluster with its own certificates) reads metrics certificates "
            f"from the fixed path {directory}, which cannot be written: {err}\n"
            f"fix: create {directory}/tls.crt and tls.key (any self-signed pair), or run as a "
            "user who may write there"
        ) from err


def ready(health_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False
