"""The pure planner: create / update / prune / unchanged, comparing only fields we own."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from kftenancy import constants as c
from kftenancy.reconcile import (
    Condition,
    conditions_changed,
    conditions_status,
    drift,
    expired_namespaces,
    namespace_verdict,
    offboard_marks,
    offboard_objects,
    owned_paths,
    owned_subset,
    plan,
)

OURS = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_TENANT: "alice"}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def ns(name: str = "alice", labels: dict[str, str] | None = None, **ann: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": dict(OURS if labels is None else labels),
            "annotations": {"owner": "alice@x", **ann},
        },
    }


def quota(hard: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "kf-resource-quota", "namespace": "alice", "labels": dict(OURS)},
        "spec": {"hard": hard or {"cpu": "8", "memory": "16Gi", "requests.nvidia.com/gpu": "10"}},
    }


def binding(user: str = "alice@x", name: str = "namespaceAdmin") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": "alice",
            "labels": dict(OURS),
            "annotations": {"user": user, "role": "admin"},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "kubeflow-admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def fields_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """managedFields' fieldsV1 for an applied manifest (lists atomic), as the server writes it."""

    def walk(value: Any) -> dict[str, Any]:
        if isinstance(value, dict) and value:
            return {".": {}, **{f"f:{k}": walk(v) for k, v in value.items()}}
        return {}

    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "metadata":
            out["f:metadata"] = {
                f"f:{mk}": walk(mv) for mk, mv in v.items() if mk not in ("name", "namespace")
            }
        else:
            out[f"f:{k}"] = walk(v)
    return out


def live(
    obj: dict[str, Any], *, applied: dict[str, Any] | None = None, **extra_meta: Any
) -> dict[str, Any]:
    """What the server returns after we applied `applied` (default: obj) and it stored obj."""
    out = copy.deepcopy(obj)
    out["metadata"].update(uid="u-1", resourceVersion="7", **extra_meta)
    out["metadata"]["managedFields"] = [
        {
            "manager": c.FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": obj["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(applied or obj),
        }
    ]
    return out


def test_missing_objects_are_created_namespace_first() -> None:
    p = plan([quota(), binding(), ns()], [])
    assert [o["kind"] for o in p.create] == ["Namespace", "ResourceQuota", "RoleBinding"]
    assert p.update == () and p.prune == ()
    assert p.writes == 3


def test_live_objects_equal_to_desired_make_zero_writes() -> None:
    desired = [ns(), quota(), binding()]
    p = plan(desired, [live(o) for o in desired])
    assert p.in_sync and len(p.unchanged) == 3


def test_server_defaults_and_extra_fields_are_not_drift() -> None:
    have = live(binding())
    have["subjects"][0]["namespace"] = ""  # server-side default inside a list item
    have["metadata"]["labels"]["someone-else"] = "x"  # another manager's label
    have["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    assert drift(binding(), have) == []


def test_canonicalised_quantities_are_not_drift() -> None:
    want = quota({"cpu": "1000m", "memory": "0.5Gi"})
    have = live(quota({"cpu": "1", "memory": "512Mi"}), applied=want)
    assert drift(want, have) == []


def test_changed_owned_value_is_drift_naming_the_field() -> None:
    have = live(
        quota({"cpu": "4", "memory": "16Gi", "requests.nvidia.com/gpu": "10"}), applied=quota()
    )
    p = plan([quota()], [have])
    assert [ch.fields for ch in p.update] == [("spec.hard.cpu",)]


def test_edited_list_is_drift() -> None:
    have = live(binding("mallory@x"), applied=binding())
    have["metadata"]["annotations"]["user"] = "alice@x"
    assert drift(binding(), have) == ["subjects"]


def test_field_we_owned_but_no_longer_want_needs_an_apply_to_drop_it() -> None:
    old = ns(extra="1")
    want = ns()
    fields = drift(want, live(old))
    assert fields == ["metadata.annotations.extra"]


def test_field_someone_else_owns_is_not_ours_to_drop() -> None:
    have = live(ns())
    have["metadata"]["annotations"]["theirs"] = "1"
    have["metadata"]["managedFields"].append(
        {
            "manager": "kubectl",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:theirs": {}}}},
        }
    )
    assert drift(ns(), have) == []


def test_owned_objects_no_longer_desired_are_pruned_but_never_namespaces() -> None:
    extra = binding("bob@x", name="user-bob-x-clusterrole-edit")
    p = plan([quota()], [live(ns()), live(quota()), live(extra)])
    assert [o["metadata"]["name"] for o in p.prune] == ["user-bob-x-clusterrole-edit"]


def test_unlabelled_objects_are_never_pruned() -> None:
    foreign = binding()
    foreign["metadata"]["labels"] = {}
    assert plan([], [foreign]).prune == ()


def test_duplicate_desired_objects_are_a_renderer_bug() -> None:
    with pytest.raises(ValueError, match="RoleBinding alice/namespaceAdmin twice"):
        plan([binding(), binding()], [])


def test_owned_paths_reads_only_our_apply_entry() -> None:
    have = live(binding())
    have["metadata"]["managedFields"].append(
        {
            "manager": c.FIELD_MANAGER,
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:x": {}}}},
        }
    )
    paths = owned_paths(have)
    assert ("subjects",) in paths and ("metadata", "annotations", "x") not in paths


def test_owned_subset_reapplies_exactly_our_fields() -> None:
    have = live(ns())
    have["metadata"]["labels"]["kubernetes.io/metadata.name"] = "alice"
    sub = owned_subset(have)
    assert sub["metadata"] == {"name": "alice", "labels": OURS, "annotations": {"owner": "alice@x"}}


# ---------------------------------------------------------------------------- namespaces


def test_new_namespace_and_our_own_namespace_are_allowed() -> None:
    assert namespace_verdict(None, "alice").allowed
    assert namespace_verdict(ns(), "alice").allowed


def test_foreign_namespace_is_refused_with_adoption_hint() -> None:
    v = namespace_verdict(ns(labels={}), "alice")
    assert not v.allowed and v.reason == "NamespaceNotOwned"
    assert f"{c.ANN_ADOPT}=alice" in v.message


def test_namespace_of_another_tenant_is_refused() -> None:
    v = namespace_verdict(ns(labels={**OURS, c.LABEL_TENANT: "bob"}), "alice")
    assert not v.allowed and v.reason == "NamespaceOwnedByOtherTenant"


def test_adoption_needs_the_annotation_naming_this_profile() -> None:
    assert namespace_verdict(ns(labels={}, **{c.ANN_ADOPT: "alice"}), "alice").adopting
    assert not namespace_verdict(ns(labels={}, **{c.ANN_ADOPT: "bob"}), "alice").allowed


# ---------------------------------------------------------------------------- offboarding


def test_offboarding_drops_access_and_marks_the_namespace() -> None:
    out = offboard_objects([ns(), quota(), binding()], live(ns()), now=NOW, retention_days=30)
    assert [o["kind"] for o in out] == ["Namespace", "ResourceQuota"]
    ann = out[0]["metadata"]["annotations"]
    assert ann[c.ANN_OFFBOARDED_AT] == "2026-01-02T03:04:05Z"
    assert ann[c.ANN_DELETE_AFTER] == "2026-02-01T03:04:05Z"
    assert ann["owner"] == "alice@x"


def test_offboarding_removes_the_tenants_queues() -> None:
    queues = [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": kind, "metadata": {"name": "alice"}}
        for kind in ("ClusterQueue", "LocalQueue")
    ]
    out = offboard_objects([ns(), quota(), *queues], live(ns()), now=NOW, retention_days=None)
    assert [o["kind"] for o in out] == ["Namespace", "ResourceQuota"]


def test_offboarding_without_retention_keeps_forever_and_keeps_first_time() -> None:
    marks = offboard_marks(
        {c.ANN_OFFBOARDED_AT: "2025-12-01T00:00:00Z"}, now=NOW, retention_days=None
    )
    assert marks == {c.ANN_OFFBOARDED_AT: "2025-12-01T00:00:00Z"}


def test_offboarding_an_unrenderable_tenant_keeps_our_namespace_fields() -> None:
    out = offboard_objects([], live(ns()), now=NOW, retention_days=None)
    assert (
        out[0]["metadata"]["labels"] == OURS
        and c.ANN_OFFBOARDED_AT in out[0]["metadata"]["annotations"]
    )


def test_only_expired_namespaces_without_a_profile_are_deleted() -> None:
    due = ns("a", **{c.ANN_DELETE_AFTER: "2026-01-01T00:00:00Z"})
    later = ns("b", **{c.ANN_DELETE_AFTER: "2027-01-01T00:00:00Z"})
    back = ns("c", **{c.ANN_DELETE_AFTER: "2026-01-01T00:00:00Z"})
    foreign = ns("d", labels={}, **{c.ANN_DELETE_AFTER: "2026-01-01T00:00:00Z"})
    assert expired_namespaces([due, later, back, foreign], ["c"], now=NOW) == ["a"]


# ---------------------------------------------------------------------------- conditions


def test_condition_transition_time_moves_only_on_status_flip() -> None:
    first = conditions_status([Condition("Ready", False, "Applying")], [], now=NOW, generation=1)
    later = datetime(2026, 1, 3, tzinfo=UTC)
    same = conditions_status(
        [Condition("Ready", False, "Failed", "x")], first, now=later, generation=1
    )
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    flipped = conditions_status([Condition("Ready", True, "Ready")], first, now=later, generation=1)
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert conditions_changed(same, first) and not conditions_changed(same, same)


def test_with_upstream_profile_controller_we_wait_for_its_namespace() -> None:
    v = namespace_verdict(None, "alice", upstream=True)
    assert not v.allowed and v.reason == "WaitingForNamespace"


def test_with_upstream_its_namespace_for_this_profile_is_accepted_and_others_are_not() -> None:
    upstream_ns = ns(labels={})
    upstream_ns["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "name": "alice",
            "uid": "u1",
            "controller": True,
        }
    ]
    assert namespace_verdict(upstream_ns, "alice", upstream=True, profile_uid="u1").allowed
    assert not namespace_verdict(upstream_ns, "alice", upstream=True, profile_uid="u2").allowed
    assert not namespace_verdict(upstream_ns, "alice", upstream=False).allowed


def test_rules_of_an_aggregated_cluster_role_belong_to_the_aggregation_controller() -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubeflow-admin", "labels": dict(OURS)},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]},
        "rules": [],
    }
    have = live(role)
    have["rules"] = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    assert drift(role, have) == []
    del have["rules"]
    assert drift(role, have) == []


def test_our_own_write_coming_back_is_recognised_and_nothing_else() -> None:
    from kftenancy.reconcile import written_by

    obj = live(quota())
    obj["metadata"]["managedFields"][0]["time"] = "2026-01-01T00:00:01Z"
    assert written_by(obj)
    edited = copy.deepcopy(obj)
    edited["metadata"]["managedFields"].append(
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:02Z"}
    )
    assert not written_by(edited)
    same_second = copy.deepcopy(obj)
    same_second["metadata"]["managedFields"].append(
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:01Z"}
    )
    assert not written_by(same_second)
    deleting = copy.deepcopy(obj)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:03Z"
    assert not written_by(deleting)
    created = copy.deepcopy(obj)
    created["metadata"]["managedFields"][0]["operation"] = "Update"  # onboarding's create
    assert not written_by(created)
    # The Profile finalizer (a manager of its own), in the same second as a status write.
    finalized = copy.deepcopy(created)
    for manager in (c.FINALIZER_FIELD_MANAGER, c.FIELD_MANAGER):
        finalized["metadata"]["managedFields"].append(
            {"manager": manager, "operation": "Apply", "time": "2026-01-01T00:00:02Z"}
        )
    assert written_by(finalized)
