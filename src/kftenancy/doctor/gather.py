"""The doctor's shell: read once what the registered checks need, then run them.

Reads are lists (kinds that are not served are left out of the snapshot, which the
checks report); facts are answers that are not objects:

- `pod_toleration_restriction`: a server-side dry-run of a Burstable pod in the
  platform namespace. PodTolerationRestriction's mutating step adds the
  `node.kubernetes.io/memory-pressure` toleration to every non-BestEffort pod, and
  nothing else does for a bare pod, so its presence in the answer tells the plugin is on.
  Nothing is stored (dry-run).
- `issuer_discovery`: the API server's `/.well-known/openid-configuration`.
- `webhook_serving`: the serving certificate of each webhook endpoint: by a TLS
  handshake for `url` endpoints, from the `<service>-tls` Secret for Service endpoints
  (the chart's name for it).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.doctor.checks import _endpoint_key
from kftenancy.doctor.model import Check, Obj, Read, Snapshot
from kftenancy.errors import KftenancyError, describe_validation_error
from kftenancy.kube import ApiError, Kube, UnknownKind
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.webhooks import CONFIGURATION_NAME

MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"


def read_policy_file(file: Path) -> tuple[str, Any]:
    """(file name, parsed YAML) for `take_snapshot`; raises KftenancyError."""
    try:
        return str(file), yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise KftenancyError(f"{file}: cannot read policy: {err}") from None


async def read_policy(
    kube: Kube, source: tuple[str, Any] | None
) -> tuple[TenancyPolicySpec | None, str | None]:
    """(policy, None) or (None, why not): from `source` (a file), else the cluster's."""
    where = source[0] if source else f"TenancyPolicy {c.DEFAULT_POLICY_NAME!r}"
    try:
        if source is not None:
            raw: Any = source[1]
        else:
            raw = await kube.get(
                f"{c.API_GROUP}/{c.API_VERSION}", c.POLICY_KIND, c.DEFAULT_POLICY_NAME
            )
            if raw is None:
                return None, f"no {where} in the cluster (or its CRD is not installed)"
        return load_policy(raw), None
    except ValidationError as err:
        return None, describe_validation_error(err, where)


async def _list(kube: Kube, read: Read) -> list[Obj] | None:
    """The objects, or None when the kind is not served."""
    try:
        await kube.kind(read.api_version, read.kind)
    except UnknownKind:
        return None
    for attempt in range(10):
        try:
            return await kube.list(read.api_version, read.kind, namespace=read.namespace)
        except ApiError as err:
            if err.status.code in (403, 404):
                return None
            # A CRD just changed: "storage is (re)initializing" for a moment.
            if err.status.code in (429, 500, 503) and attempt < 9:
                await asyncio.sleep(0.5)
                continue
            raise
    raise AssertionError("unreachable")


async def _toleration_restriction(kube: Kube, namespace: str) -> tuple[bool | None, str | None]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kftenancy-doctor-probe", "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                }
            ],
        },
    }
    from lightkube import codecs

    try:
        got = await kube.client.create(codecs.from_dict(pod), dry_run=True)
    except ApiError as err:
        return None, f"dry-run pod in {namespace}: {err.status.message}"
    tolerations = (got.spec.tolerations if got.spec else None) or []
    return any(t.key == MEMORY_PRESSURE for t in tolerations), None


async def _issuer_discovery(kube: Kube) -> dict[str, Any]:
    http: Any = kube.client._client._client  # the authenticated httpx client of lightkube
    try:
        response = await http.get("/.well-known/openid-configuration")
    except Exception as err:  # any transport failure is the finding
        return {"error": str(err)}
    if response.status_code != 200:
        return {"error": f"HTTP {response.status_code}"}
    try:
        doc: dict[str, Any] = response.json()
    except ValueError as err:
        return {"error": f"not JSON: {err}"}
    return doc


async def _tls_certificate(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we read the certificate; the check verifies it
    try:
        async with asyncio.timeout(5.0):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    except (OSError, TimeoutError, ssl.SSLError) as err:
        return {"error": f"{host}:{port}: {err or type(err).__name__}"}
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj else None
    finally:
        writer.close()
    if not der:
        return {"error": f"{host}:{port}: no certificate"}
    return {"pem": ssl.DER_cert_to_PEM_cert(der)}


async def _secret_certificate(kube: Kube, namespace: str, service: str) -> dict[str, str]:
    name = f"{service}-tls"
    secret = await kube.get("v1", "Secret", name, namespace)
    if secret is None:
        return {"error": f"no Secret {namespace}/{name}"}
    data = (secret.get("data") or {}).get("tls.crt")
    if not data:
        return {"error": f"Secret {namespace}/{name} has no tls.crt"}
    return {"pem": base64.b64decode(data).decode()}


async def _serving_certificates(kube: Kube, configs: Iterable[Obj]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for config in configs:
        for hook in config.get("webhooks") or []:
            cc = hook.get("clientConfig") or {}
            key = _endpoint_key(cc)
            if key in out:
                continue
            if cc.get("url"):
                out[key] = await _tls_certificate(str(cc["url"]))
            elif cc.get("service"):
                svc = cc["service"]
                out[key] = await _secret_certificate(kube, svc["namespace"], svc["name"])
    return out


async def take_snapshot(
    kube: Kube,
    checks: tuple[Check, ...],
    now: datetime,
    policy_source: tuple[str, Any] | None = None,
) -> Snapshot:
    policy, policy_error = await read_policy(kube, policy_source)
    reads = list(dict.fromkeys(r for check in checks for r in check.reads_for(policy)))
    objects: dict[tuple[str, str], list[Obj]] = {}
    for read, got in zip(
        reads, await asyncio.gather(*(_list(kube, r) for r in reads)), strict=True
    ):
        if got is not None:
            objects.setdefault((read.api_version, read.kind), []).extend(got)
    facts: dict[str, Any] = {}
    if policy is not None:
        ptr, why = await _toleration_restriction(kube, policy.platform.namespace)
        facts["pod_toleration_restriction"] = ptr
        if why:
            facts["pod_toleration_restriction_error"] = why
        if policy.data_lake.enabled:
            facts["issuer_discovery"] = await _issuer_discovery(kube)
        ours = [
            o
            for key in (
                ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
                ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
            )
            for o in objects.get(key, [])
            if o["metadata"]["name"] == CONFIGURATION_NAME
        ]
        facts["webhook_serving"] = await _serving_certificates(kube, ours)
    return Snapshot(policy=policy, now=now, objects=objects, facts=facts, policy_error=policy_error)
