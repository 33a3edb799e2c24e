"""AdmissionReview parsing and answers; JSON patch generation and pointer escaping."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
from admission_support import admission_review, namespace, pod, policy, run
from hypothesis import given, settings
from hypothesis import strategies as st

from kftenancy.admission import Phase
from kftenancy.admission.patch import diff, escape, pointer
from kftenancy.admission.review import Malformed, decode_body, parse_review

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet="ab/~c", max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def test_pointer_escapes_tilde_before_slash() -> None:
    assert escape("a~1/b") == "a~01~1b"
    assert (
        pointer("metadata", "annotations", "scheduler.alpha.kubernetes.io/defaultTolerations")
        == "/metadata/annotations/scheduler.alpha.kubernetes.io~1defaultTolerations"
    )


@given(json_values, json_values)
@settings(max_examples=300)
def test_diff_turns_before_into_after(before: Any, after: Any) -> None:
    doc = {"root": before}
    assert jsonpatch.apply_patch(doc, diff(doc, {"root": after})) == {"root": after}


def test_growing_list_becomes_appends_not_index_writes() -> None:
    ops = diff({"l": [1]}, {"l": [1, 2, 3]})
    assert ops == [
        {"op": "add", "path": "/l/-", "value": 2},
        {"op": "add", "path": "/l/-", "value": 3},
    ]


def test_allowed_answer_echoes_uid_and_encodes_patch_as_base64_jsonpatch() -> None:
    ns = namespace("team-a")
    out = run(policy(), admission_review(ns, uid="u-1"), Phase.MUTATE)
    response = out.response["response"]
    assert out.response["apiVersion"] == "admission.k8s.io/v1"
    assert out.response["kind"] == "AdmissionReview"
    assert response["uid"] == "u-1" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops[0]["path"].startswith("/metadata/annotations")


def test_not_json_is_denied_with_reason_not_an_exception() -> None:
    body = decode_body(b"{not json")
    assert isinstance(body, Malformed)
    out = run(policy(), body, Phase.VALIDATE)
    assert out.response["response"]["allowed"] is False
    assert "not JSON" in out.response["response"]["status"]["message"]


def test_missing_uid_and_wrong_version_are_malformed() -> None:
    review = admission_review(pod("x"))
    review["request"].pop("uid")
    assert parse_review(review) == Malformed("request.uid is missing")
    review = admission_review(pod("x"), uid="u")
    review["apiVersion"] = "admission.k8s.io/v1beta1"
    parsed = parse_review(review)
    assert isinstance(parsed, Malformed) and parsed.uid == "u"
    out = run(policy(), review, Phase.MUTATE)
    assert out.response["response"]["uid"] == "u"
    assert "v1beta1" in out.response["response"]["status"]["message"]


def test_unknown_resource_is_allowed_untouched() -> None:
    review = admission_review({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}})
    for phase in Phase:
        out = run(policy(), review, phase)
        assert out.response["response"] == {"uid": review["request"]["uid"], "allowed": True}
        assert out.decision.code == "unhandled"


def test_subresource_is_allowed_untouched() -> None:
    review = admission_review(pod("team-tools", tolerations=[{"operator": "Exists"}]))
    review["request"]["subResource"] = "status"
    assert run(policy(), review, Phase.VALIDATE).response["response"]["allowed"] is True


def test_object_of_wrong_shape_is_denied_naming_the_field() -> None:
    bad = pod("team-tools")
    bad["spec"]["tolerations"] = ["workload"]
    out = run(policy(), admission_review(bad), Phase.VALIDATE)
    assert out.decision.code == "malformed"
    assert "spec.tolerations[0]" in out.response["response"]["status"]["message"]


@given(
    st.recursive(
        st.none() | st.booleans() | st.text() | st.integers(),
        lambda s: st.lists(s) | st.dictionaries(st.text(), s),
        max_leaves=30,
    )
)
@settings(max_examples=300)
def test_any_json_gets_a_well_formed_answer(body: Any) -> None:
    for phase in Phase:
        out = run(policy(), body, phase)
        response = out.response["response"]
        assert isinstance(response["allowed"], bool)
        if not response["allowed"]:
            assert response["status"]["message"]


@given(
    field=st.sampled_from(["object", "oldObject", "userInfo", "kind", "resource", "operation"]),
    value=st.one_of(st.integers(), st.text(), st.lists(st.integers()), st.booleans()),
    kind=st.sampled_from(["Pod", "Namespace", "ServiceAccount"]),
    phase=st.sampled_from(list(Phase)),
)
def test_corrupted_fields_of_a_real_review_get_an_answer(
    field: str, value: Any, kind: str, phase: Phase
) -> None:
    obj = {"Pod": pod("team-tools"), "Namespace": namespace("x")}.get(
        kind,
        {"kind": "ServiceAccount", "metadata": {"name": "default-editor", "namespace": "alice"}},
    )
    review = admission_review(obj)
    review["request"][field] = value
    out = run(policy(dataLake={"enabled": True}), review, phase)
    assert isinstance(out.response["response"]["allowed"], bool)


def test_lookups_name_what_the_rules_will_read() -> None:
    from kftenancy.admission.dispatch import lookups

    assert lookups(admission_review(pod("alice", service_account="runner"))) == ("alice", "runner")
    sa = {"kind": "ServiceAccount", "metadata": {"name": "default-editor", "namespace": "alice"}}
    assert lookups(admission_review(sa)) == ("alice", None)
    assert lookups(admission_review(namespace("alice"))) is None
    assert lookups(b"junk") is None


def test_a_failing_rule_denies_when_validating_and_admits_when_mutating(monkeypatch: Any) -> None:
    from kftenancy.admission import dispatch

    def broken(*args: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setitem(dispatch.RULES, (Phase.VALIDATE, "", "pods"), broken)
    monkeypatch.setitem(dispatch.RULES, (Phase.MUTATE, "", "pods"), broken)
    review = admission_review(pod("team-tools"))
    denied = run(policy(), review, Phase.VALIDATE)
    assert denied.decision.code == "internal"
    assert "KeyError" in denied.response["response"]["status"]["message"]
    admitted = run(policy(), review, Phase.MUTATE).response["response"]
    assert admitted["allowed"] is True and "patch" not in admitted
    assert "admitted without changes" in admitted["warnings"][0]


def test_overloaded_denies_validation_with_a_reason_and_admits_mutation_unchanged() -> None:
    from admission_support import GPU_TOLERATION, OTHER_NS, denial

    from kftenancy.admission.dispatch import overloaded

    body = admission_review(pod(OTHER_NS, tolerations=[GPU_TOLERATION]))
    v = overloaded(body, Phase.VALIDATE, 65)
    assert v.response["response"]["uid"] == body["request"]["uid"]
    assert "overloaded (65 requests in flight)" in denial(v)
    assert v.decision.code == "overloaded" and v.kind == "Pod"
    m = overloaded(body, Phase.MUTATE, 65)
    response = m.response["response"]
    assert response["allowed"] is True and "patch" not in response
    assert "admitted without changes" in response["warnings"][0]
    junk = overloaded(decode_body(b"{"), Phase.VALIDATE, 65)
    assert junk.response["response"]["allowed"] is False
