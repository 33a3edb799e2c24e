"""Fuzzing TenancyPolicy documents: the policy model, the CRD's validation on the real
API server, and the webhook's policy loading.

Properties: the model either accepts a document or raises a ValidationError that
`describe_validation_error` turns into a message naming the field; the real
kube-apiserver (server-side dry run) either accepts it or answers a 4xx with a message,
never a 5xx; whatever the model accepts the CRD accepts too (the CRD is generated from
the model and must never be stricter, or a valid policy could not be stored; only values
the model accepts by lax coercion, such as 0 for false, may be refused); the
webhook's policy loading never raises, takes a valid document and keeps its previous
policy (with the reason) for an invalid one.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_support import budget, fuzz_rounds, mutations
from lightkube import ApiError, Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from pydantic import ValidationError

from kftenancy import constants as c
from kftenancy.errors import describe_validation_error
from kftenancy.lab.cluster import LocalCluster
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.servers.webhook import WebhookServer, WebhookSettings

EXAMPLES = Path(__file__).parents[2] / "examples"


def _seeds() -> list[dict[str, Any]]:
    out = [TenancyPolicySpec().model_dump(mode="json", by_alias=True)]
    for f in sorted(EXAMPLES.glob("policy*.yaml")):
        out.append(yaml.safe_load(f.read_text())["spec"])
    return out


SEEDS = _seeds()
KEYS = sorted(
    {k for seed in SEEDS for k in json.dumps(seed).replace('"', " ").split() if k.isalpha()}
)[:200]


def _strictly_valid(doc: Any) -> bool:
    """The model accepts `doc` without coercion (JSON strict mode: no 0/1 for booleans, no
    numeric strings for numbers). The CRD may refuse what only lax coercion accepts,
    with a 422 naming the field; it must accept everything else the model does."""
    try:
        TenancyPolicySpec.model_validate_json(json.dumps(doc), strict=True)
    except ValidationError:
        return False
    return True


def _finite(doc: Any) -> bool:
    """JSON (what the API server receives) has no NaN or infinities."""
    if isinstance(doc, float):
        return math.isfinite(doc)
    if isinstance(doc, dict):
        return all(_finite(v) for v in doc.values())
    if isinstance(doc, list):
        return all(_finite(v) for v in doc)
    return True


async def test_fuzzed_policies_are_accepted_or_refused_with_a_reason(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    client = Client(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    (tmp_path / "c").write_text("")
    webhook = WebhookServer(
        WebhookSettings(cert_file=tmp_path / "c", key_file=tmp_path / "c"),
        client,  # type: ignore[arg-type]  # never used: only the policy loading runs
    )
    stats = {"model-ok": 0, "model-refused": 0, "api-ok": 0, "api-refused": 0}

    def check(doc: Any) -> None:
        # the model
        try:
            model: TenancyPolicySpec | None = load_policy({"spec": doc})
            stats["model-ok"] += 1
        except ValidationError as err:
            model = None
            stats["model-refused"] += 1
            message = describe_validation_error(err, "TenancyPolicy/fuzz")
            assert message.startswith("TenancyPolicy/fuzz: ") and len(message) > 25, message
        # the webhook's loading (never raises; keeps the last good policy). It reads a
        # stored object, whose spec the CRD guarantees is an object: an empty or null
        # spec means the defaults.
        before = webhook.policy
        webhook._apply_policy_object({"spec": doc})
        if not doc:
            assert webhook.policy == TenancyPolicySpec() and webhook.policy_error is None
        elif model is not None:
            assert webhook.policy == model and webhook.policy_error is None
        else:
            assert webhook.policy == before and webhook.policy_error
        # the CRD on the real API server
        if not _finite(doc):
            return
        obj = {
            "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
            "kind": c.POLICY_KIND,
            "metadata": {"name": "fuzz"},
            "spec": doc,
        }
        try:
            client.create(codecs.from_dict(obj), dry_run=True)
            stats["api-ok"] += 1
        except ApiError as err:
            stats["api-refused"] += 1
            code = err.status.code or 0
            assert 400 <= code < 500 and err.status.message, err.status
            assert not _strictly_valid(doc), (
                f"the CRD refuses a policy the model accepts: {err.status.message}"
            )

    try:
        n = await asyncio.to_thread(
            fuzz_rounds, "policy", mutations(SEEDS, KEYS), check, budget(20)
        )
    finally:
        client.close()
    print(f"fuzz policy outcomes: {stats}")
    assert n > 0 and stats["model-ok"] and stats["model-refused"] and stats["api-refused"], stats


@pytest.fixture(autouse=True)
def _crds(cluster: LocalCluster) -> None:
    """The session installs kftenancy's CRDs; the policy CRD must be there."""
    names = {crd.metadata.name for crd in cluster.client().list(_crd())}  # type: ignore[union-attr]
    assert f"{c.POLICY_PLURAL}.{c.API_GROUP}" in names


def _crd() -> Any:
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    return CustomResourceDefinition
