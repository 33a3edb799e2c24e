"""Parsing Profiles: spec and annotation contributors, clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
