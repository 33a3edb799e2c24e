"""Parsing Profiles: spec and annotation contributors, clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kftenancy import constants as c
from kftenancy.profile import ProfileError, parse_profile


def _doc(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "alice"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": meta, "spec": spec}


OWNER = {"kind": "User", "name": "alice@example.com"}


def test_minimal_upstream_profile_parses() -> None:
    p = parse_profile(_doc({"owner": {**OWNER, "apiGroup": "rbac.authorization.k8s.io"}}))
    assert (p.name, p.owner.kind, p.owner.name) == ("alice", "User", "alice@example.com")
    assert p.contributors == () and p.resource_quota_spec is None and p.user_id is None


def test_spec_contributors_win_over_the_annotation() -> None:
    spec_list = [{"kind": "User", "name": "bob", "role": "edit"}]
    ann = json.dumps([{"kind": "Group", "name": "ml", "role": "view"}])
    p = parse_profile(_doc({"owner": OWNER, "contributors": spec_list}, {c.ANN_CONTRIBUTORS: ann}))
    assert [k.name for k in p.contributors] == ["bob"]
    p = parse_profile(_doc({"owner": OWNER}, {c.ANN_CONTRIBUTORS: ann}))
    assert [(k.kind, k.name, k.role) for k in p.contributors] == [("Group", "ml", "view")]


def test_duplicate_contributors_are_merged() -> None:
    same = {"kind": "User", "name": "bob", "role": "edit"}
    assert (
        len(parse_profile(_doc({"owner": OWNER, "contributors": [same, same]})).contributors) == 1
    )


def test_user_id_annotation_and_quota_are_kept() -> None:
    doc = _doc({"owner": OWNER, "resourceQuotaSpec": {"hard": {"cpu": 4, "memory": "8Gi"}},
                "plugins": [{"kind": "AwsIamForServiceAccount", "spec": {"awsIamRole": "arn"}}]},
               {c.ANN_USER_ID: "Alice@Example.com"})  # fmt: skip
    p = parse_profile(doc)
    assert p.user_id == "Alice@Example.com"
    assert p.resource_quota_spec is not None and p.resource_quota_spec.hard == {
        "cpu": 4,
        "memory": "8Gi",
    }
    assert p.plugins[0].kind == "AwsIamForServiceAccount"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_doc({}), "spec.owner: Field required"),
        (_doc({"owner": {"kind": "User", "name": "  "}}), "spec.owner.name"),
        (_doc({"owner": OWNER, "resourceQuotaSpec": {"hard": {"cpu": "many"}}}), "'many'"),
        (_doc({"owner": OWNER, "typo": 1}), "spec.typo"),
        (_doc({"owner": OWNER}, {c.ANN_CONTRIBUTORS: '{"kind": "User"}'}), "JSON list"),
        (_doc({"owner": OWNER}, {c.ANN_CONTRIBUTORS: '[{"kind": "User", "name": "b"}]'}),
         "kftenancy.dev/contributors][0]: role: Field required"),
        ({"apiVersion": "kubeflow.org/v1", "kind": "Namespace", "metadata": {"name": "a"}}, "kind"),
        ({"apiVersion": "kubeflow.org/v1", "kind": "Profile"}, "metadata"),
        ("not a mapping", "mapping"),
    ],
)  # fmt: skip
def test_invalid_profiles_name_the_field(doc: Any, expected: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(doc)
    assert expected in str(info.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_owner = st.fixed_dictionaries(
    {"kind": st.sampled_from(["User", "Group", "Robot", 3]), "name": _json | st.text()}
)


@settings(max_examples=300)
@given(
    spec=st.dictionaries(
        st.sampled_from(["owner", "contributors", "resourceQuotaSpec", "plugins", "x"]),
        _json | _owner,
        max_size=4,
    ),
    annotations=st.none() | st.dictionaries(st.just(c.ANN_CONTRIBUTORS), st.text(max_size=40)),
    name=st.text(max_size=70),
)
def test_any_input_parses_or_fails_with_a_profile_error(
    spec: dict[str, Any], annotations: dict[str, str] | None, name: str
) -> None:
    doc = {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": {"name": name}}
    if annotations is not None:
        doc["metadata"]["annotations"] = annotations  # type: ignore[index]
    doc["spec"] = spec
    try:
        profile = parse_profile(doc)
    except ProfileError as err:
        assert str(err)
    else:
        assert profile.name == name and profile.owner.kind in ("User", "Group")
