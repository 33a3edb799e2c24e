"""A fenced `Kube` refuses every write before anything is sent or counted."""

from __future__ import annotations

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig

from kftenancy.kube import Fenced, Kube

CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "x", "namespace": "default"},
    "data": {"a": "1"},
}


async def test_a_closed_fence_refuses_writes_and_nothing_is_counted() -> None:
    # Nothing listens on port 9: a request that got through would fail differently.
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    kube = Kube(AsyncClient(config=config, trust_env=False))
    kube.fence = lambda: False
    try:
        with pytest.raises(Fenced, match="leader Lease"):
            await kube.apply(CONFIGMAP)
        with pytest.raises(Fenced):
            await kube.create(CONFIGMAP)
        with pytest.raises(Fenced):
            await kube.delete("v1", "ConfigMap", "x", "default")
        with pytest.raises(Fenced):
            await kube.event(CONFIGMAP, reason="R", message="m")
        assert kube.writes.total == 0
        kube.fence = lambda: True
        with pytest.raises(httpx2.ConnectError):  # now it is really sent (nothing answers)
            await kube.apply(CONFIGMAP)
    finally:
        await kube.close()
