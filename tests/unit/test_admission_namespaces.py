"""Namespace rules: toleration annotations by tenancy, corrected when changed; the
tenant label is kftenancy's alone."""

from __future__ import annotations

import json

from admission_support import (
    CONTROLLER,
    GPU_TOLERATION,
    admission_review,
    denial,
    mutated,
    namespace,
    policy,
    run,
)

from kftenancy import constants as c
from kftenancy.admission import Phase
from kftenancy.admission.tolerations import permitted_by
from kftenancy.render.tolerations import default_tolerations_annotation, whitelist_annotation

TENANT = {c.LABEL_TENANT: "alice"}
SEED_DEFAULT = [{"operator": "Equal", "effect": "NoSchedule", "key": "workload", "value": "ai-ml"}]


def annotations(obj: dict[str, object]) -> dict[str, str]:
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    return dict(meta.get("annotations", {}))


def test_tenant_namespace_gets_the_seed_default_toleration_at_create() -> None:
    out = mutated(policy(), namespace("alice", TENANT), user=CONTROLLER)
    value = annotations(out)[c.ANN_DEFAULT_TOLERATIONS]
    assert json.loads(value) == SEED_DEFAULT
    assert c.ANN_TOLERATIONS_WHITELIST not in annotations(out)


def test_user_cannot_strip_or_change_the_tenant_toleration() -> None:
    pol = policy()
    want = default_tolerations_annotation(pol)
    old = namespace("alice", TENANT, **{c.ANN_DEFAULT_TOLERATIONS: want, "owner": "alice"})
    stripped = namespace("alice", TENANT, owner="alice")
    out = mutated(pol, stripped, operation="UPDATE", old=old)
    assert annotations(out) == {c.ANN_DEFAULT_TOLERATIONS: want, "owner": "alice"}
    changed = namespace("alice", TENANT, **{c.ANN_DEFAULT_TOLERATIONS: "[]"})
    result = run(pol, admission_review(changed, operation="UPDATE", old=old), Phase.MUTATE)
    assert any("restored" in w for w in result.decision.warnings)
    assert (
        annotations(mutated(pol, changed, operation="UPDATE", old=old))[c.ANN_DEFAULT_TOLERATIONS]
        == want
    )


def test_tenant_namespace_loses_a_whitelist_that_forbids_gpu() -> None:
    pol = policy()
    ns = namespace("alice", TENANT, **{c.ANN_TOLERATIONS_WHITELIST: whitelist_annotation(pol)})
    out = mutated(pol, ns)
    assert c.ANN_TOLERATIONS_WHITELIST not in annotations(out)
    allowing = json.dumps([GPU_TOLERATION])
    kept = mutated(pol, namespace("alice", TENANT, **{c.ANN_TOLERATIONS_WHITELIST: allowing}))
    assert annotations(kept)[c.ANN_TOLERATIONS_WHITELIST] == allowing


def test_other_namespace_gets_whitelist_that_forbids_gpu_but_allows_automatic_ones() -> None:
    out = mutated(policy(), namespace("team-tools"))
    whitelist = json.loads(annotations(out)[c.ANN_TOLERATIONS_WHITELIST])
    assert whitelist, "an empty whitelist would mean no restriction at all"
    assert not permitted_by(whitelist, GPU_TOLERATION)
    assert not permitted_by(whitelist, {"operator": "Exists"})
    automatic = [
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert all(permitted_by(whitelist, t) for t in automatic)
    assert c.ANN_DEFAULT_TOLERATIONS not in annotations(out)


def test_other_namespace_whitelist_is_restored_when_removed() -> None:
    pol = policy()
    old = namespace("team-tools", **{c.ANN_TOLERATIONS_WHITELIST: whitelist_annotation(pol)})
    out = mutated(pol, namespace("team-tools"), operation="UPDATE", old=old)
    assert annotations(out)[c.ANN_TOLERATIONS_WHITELIST] == whitelist_annotation(pol)


def test_other_namespace_loses_a_default_gpu_toleration_but_keeps_others() -> None:
    other = {"key": "team", "operator": "Equal", "value": "x", "effect": "NoSchedule"}
    ns = namespace("team-tools", **{c.ANN_DEFAULT_TOLERATIONS: json.dumps([GPU_TOLERATION, other])})
    out = mutated(policy(), ns)
    assert json.loads(annotations(out)[c.ANN_DEFAULT_TOLERATIONS]) == [other]
    only_gpu = namespace("old-tenant", **{c.ANN_DEFAULT_TOLERATIONS: json.dumps(SEED_DEFAULT)})
    assert c.ANN_DEFAULT_TOLERATIONS not in annotations(mutated(policy(), only_gpu))


def test_exempt_namespaces_are_untouched() -> None:
    for name in (
        "kube-system",
        "kube-public",
        "openshift-monitoring",
        "kftenancy",
        "kubeflow",
        "istio-system",
    ):
        out = run(policy(), admission_review(namespace(name)), Phase.MUTATE)
        assert "patch" not in out.response["response"], name
    custom = policy(isolation={"exemptNamespaces": ["infra-*"]})
    assert (
        "patch"
        not in run(custom, admission_review(namespace("infra-db")), Phase.MUTATE).response[
            "response"
        ]
    )
    assert (
        "patch"
        in run(custom, admission_review(namespace("kube-system")), Phase.MUTATE).response[
            "response"
        ]
    )


def test_gpu_disabled_means_no_annotations() -> None:
    out = run(
        policy(gpu={"enabled": False}), admission_review(namespace("team-tools")), Phase.MUTATE
    )
    assert "patch" not in out.response["response"]


def test_annotation_keys_are_escaped_in_the_patch() -> None:
    import base64

    ns = namespace("team-tools", owner="x")
    out = run(policy(), admission_review(ns), Phase.MUTATE)
    ops = json.loads(base64.b64decode(out.response["response"]["patch"]))
    assert ops == [
        {
            "op": "add",
            "path": "/metadata/annotations/scheduler.alpha.kubernetes.io~1tolerationsWhitelist",
            "value": whitelist_annotation(policy()),
        }
    ]


def test_only_kftenancy_may_set_the_tenant_label() -> None:
    ns = namespace("sneaky", TENANT)
    message = denial(run(policy(), admission_review(ns, user="mallory"), Phase.VALIDATE))
    assert c.LABEL_TENANT in message and "mallory" in message and "set it to 'alice'" in message
    ok = run(policy(), admission_review(ns, user=CONTROLLER), Phase.VALIDATE)
    assert ok.response["response"]["allowed"] is True


def test_only_kftenancy_may_change_or_remove_the_tenant_label() -> None:
    old = namespace("alice", TENANT)
    removed = namespace("alice")
    message = denial(
        run(
            policy(),
            admission_review(removed, operation="UPDATE", old=old, user="alice"),
            Phase.VALIDATE,
        )
    )
    assert "remove it" in message
    changed = namespace("alice", {c.LABEL_TENANT: "bob"})
    message = denial(
        run(
            policy(),
            admission_review(changed, operation="UPDATE", old=old, user="alice"),
            Phase.VALIDATE,
        )
    )
    assert "change it from 'alice' to 'bob'" in message
    assert run(
        policy(),
        admission_review(removed, operation="UPDATE", old=old, user=CONTROLLER),
        Phase.VALIDATE,
    ).decision.allowed


def test_other_label_changes_by_users_are_allowed() -> None:
    old = namespace("alice", TENANT)
    new = namespace("alice", {**TENANT, "team": "ml"})
    out = run(
        policy(), admission_review(new, operation="UPDATE", old=old, user="alice"), Phase.VALIDATE
    )
    assert out.response["response"]["allowed"] is True


def test_seed_annotation_is_kept_byte_for_byte() -> None:
    seed = '[{"operator":"Equal","effect":"NoSchedule","key":"workload","value":"ai-ml"}]'
    ns = namespace("alice", TENANT, **{c.ANN_DEFAULT_TOLERATIONS: seed})
    out = run(policy(), admission_review(ns), Phase.MUTATE)
    assert "patch" not in out.response["response"]
