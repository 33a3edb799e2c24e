"""How watch events of Profiles become work: a Profile seen for the first time is always
queued (the listing after a start or reconnect), our own writes coming back are not."""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient, KubeConfig

from kftenancy import constants as c
from kftenancy.controllers.operator import Controller, ControllerSettings
from kftenancy.kube import Kube


def controller() -> Controller:
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    kube = Kube(AsyncClient(config=config, trust_env=False))
    return Controller(ControllerSettings(metrics_port=0, leader_election=False), kube=kube)


def profile(name: str, manager: str, operation: str = "Apply") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "managedFields": [
                {"manager": "someone", "operation": "Update", "time": "2026-01-01T00:00:00Z"},
                {"manager": manager, "operation": operation, "time": "2026-01-01T00:00:05Z"},
            ],
        }
    }


def drained(ctl: Controller) -> list[str]:
    names = []
    while not ctl.queue._queue.empty():
        names.append(ctl.queue._queue.get_nowait())
    ctl.queue._queued.clear()
    return names


async def test_first_sight_is_queued_even_when_we_wrote_last_then_only_foreign_changes() -> None:
    ctl = controller()
    try:
        ours = profile("alice", c.FIELD_MANAGER)
        ctl._profile_event("ADDED", ours)  # e.g. the listing after a restart
        assert drained(ctl) == ["alice"] and "alice" in ctl.profiles
        ctl._profile_event("MODIFIED", ours)  # our status write coming back
        assert drained(ctl) == []
        ctl._profile_event("MODIFIED", profile("alice", "kubectl", "Update"))
        assert drained(ctl) == ["alice"]
        ctl._profile_event("DELETED", ours)
        assert "alice" not in ctl.profiles and drained(ctl) == []
    finally:
        await ctl.kube.close()


async def test_owned_objects_and_the_adoption_annotation_queue_their_tenant() -> None:
    ctl = controller()
    try:
        ctl._profile_event("ADDED", profile("bob", "kubectl", "Update"))
        drained(ctl)
        labels = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_TENANT: "bob"}
        ctl._owned_event("DELETED", {"metadata": {"name": "rb", "labels": labels}})
        assert drained(ctl) == ["bob"]
        ctl._owned_event(
            "MODIFIED",
            {
                **profile("rb", c.FIELD_MANAGER),
                "metadata": {**profile("rb", c.FIELD_MANAGER)["metadata"], "labels": labels},
            },
        )
        assert drained(ctl) == []  # our own apply
        ctl._namespace_event(
            "MODIFIED", {"metadata": {"name": "bob", "annotations": {c.ANN_ADOPT: "bob"}}}
        )
        assert drained(ctl) == ["bob"]
        ctl._namespace_event(
            "MODIFIED", {"metadata": {"name": "x", "annotations": {c.ANN_ADOPT: "nobody"}}}
        )
        assert drained(ctl) == []  # not a Profile we know
    finally:
        await ctl.kube.close()
