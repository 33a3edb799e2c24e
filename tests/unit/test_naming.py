"""User id → namespace name: valid, deterministic, stable, readable, never colliding."""

from __future__ import annotations

import fnmatch
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kftenancy.naming import (
    HASH_SUFFIX,
    NamingError,
    is_dns_label,
    is_reserved,
    label_part,
    name_hash,
    profile_name,
    readable_part,
)
from kftenancy.policy import TenancyPolicySpec, load_policy

POLICY = load_policy(None)
PREFIXED = load_policy({"naming": {"prefix": "kf-"}})
FOLDING = load_policy({"naming": {"foldCase": True}})
STRIPPING = load_policy({"naming": {"stripEmailDomain": True}})
POLICIES = [POLICY, PREFIXED, FOLDING, STRIPPING]

_local = st.text(string.ascii_letters + string.digits + "._%+-", min_size=1, max_size=30)
_domain = st.from_regex(r"[A-Za-z0-9]{1,12}(\.[A-Za-z]{2,6}){1,2}", fullmatch=True)
emails = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)
_rdn_value = st.text(string.ascii_letters + string.digits + " .-", min_size=1, max_size=20)
ldap_dns = st.builds(
    lambda cn, ou, dc: f"CN={cn},OU={ou},DC={dc},DC=com", _rdn_value, _rdn_value, _rdn_value
)
labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?", fullmatch=True)
unicode_ids = st.text(min_size=1, max_size=80).filter(lambda s: s.strip() != "")
long_ids = st.text(string.printable, min_size=64, max_size=400).filter(lambda s: s.strip() != "")
user_ids = st.one_of(emails, ldap_dns, labels, unicode_ids, long_ids)


def _case_variants(uid: str) -> list[str]:
    return list(dict.fromkeys([uid, uid.lower(), uid.upper(), uid.swapcase(), uid.title()]))


@settings(max_examples=400)
@given(uid=user_ids, policy=st.sampled_from(POLICIES))
def test_every_name_is_a_valid_unreserved_label(uid: str, policy: TenancyPolicySpec) -> None:
    name = profile_name(policy, uid)
    assert is_dns_label(name), name
    assert len(name) <= 63
    assert name.startswith(policy.naming.prefix)
    assert not is_reserved(policy, name)


@settings(max_examples=300)
@given(uid=user_ids)
def test_naming_is_deterministic(uid: str) -> None:
    assert profile_name(POLICY, uid) == profile_name(load_policy(None), uid)


@settings(max_examples=300)
@given(a=user_ids, b=user_ids, policy=st.sampled_from(POLICIES))
def test_different_user_ids_never_collide(a: str, b: str, policy: TenancyPolicySpec) -> None:
    key_a = a.casefold() if policy.naming.fold_case else a
    key_b = b.casefold() if policy.naming.fold_case else b
    assume(key_a != key_b)
    assert profile_name(policy, a) != profile_name(policy, b)


@settings(max_examples=200)
@given(uid=st.one_of(emails, ldap_dns, labels))
def test_case_variants_are_distinct_users_unless_folded(uid: str) -> None:
    variants = _case_variants(uid)
    names = {profile_name(POLICY, v) for v in variants}
    assert len(names) == len(variants)
    assert len({profile_name(FOLDING, v) for v in variants}) == 1


@given(
    base=st.from_regex(r"[a-z]{1,10}", fullmatch=True),
    seps=st.lists(st.sampled_from(list(".@_+ ~!")), min_size=2, max_size=6, unique=True),
)
def test_ids_that_sanitise_to_the_same_string_get_distinct_names(
    base: str, seps: list[str]
) -> None:
    ids = [f"{base}{sep}smith" for sep in seps]
    assert {readable_part(i) for i in ids} == {f"{base}-smith"}
    names = [profile_name(POLICY, i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(n.startswith(f"{base}-smith-") for n in names)


@given(uid=labels)
def test_a_valid_label_maps_to_itself_unless_reserved_or_hash_shaped(uid: str) -> None:
    name = profile_name(POLICY, uid)
    if is_reserved(POLICY, uid) or HASH_SUFFIX.search(uid):
        assert name != uid and HASH_SUFFIX.search(name)
    else:
        assert name == uid
        assert profile_name(PREFIXED, uid) == f"kf-{uid}"


@given(uid=user_ids)
def test_hashed_names_always_end_in_the_hash_of_the_exact_id(uid: str) -> None:
    name = profile_name(POLICY, uid)
    if name != uid:
        assert name.endswith("-" + name_hash(uid)) or name == name_hash(uid)
        assert HASH_SUFFIX.search(name)


def test_examples_from_the_issue_are_distinct_readable_and_stable() -> None:
    # Pinned values: changing the algorithm renames every tenant, so this must fail then.
    assert profile_name(POLICY, "Alice.Smith@Example.com") == "alice-smith-example-com-66wgjm6eak36"
    assert profile_name(POLICY, "alice.smith@other.org") == "alice-smith-other-org-6hq2qa5rn3uo"
    assert profile_name(POLICY, "CN=Bob,OU=ML,DC=corp") == "bob-5vulville42f"
    assert profile_name(POLICY, "alice") == "alice"
    assert profile_name(FOLDING, "Alice") == "alice"
    assert profile_name(STRIPPING, "alice.smith@other.org").startswith("alice-smith-")


def test_unicode_is_folded_to_readable_ascii() -> None:
    assert profile_name(POLICY, "José.Müller@beispiel.de").startswith("jose-muller-beispiel-de-")
    name = profile_name(POLICY, "山田太郎")
    assert name.startswith("user-") and HASH_SUFFIX.search(name)


def test_very_long_ids_are_cut_to_63_characters() -> None:
    uid = "a" * 200 + "@example.com"
    name = profile_name(PREFIXED, uid)
    assert len(name) == 63 and name.startswith("kf-aaaa")


@pytest.mark.parametrize(
    "uid",
    [
        "default",
        "kube-system",
        "kube-anything",
        "openshift",
        "openshift-config",
        "kubeflow",
        "kftenancy",
        "istio-system",
        "knative-serving",
        "cert-manager",
    ],
)
def test_reserved_names_are_never_produced(uid: str) -> None:
    name = profile_name(POLICY, uid)
    assert name != uid
    assert not is_reserved(POLICY, name)
    assert HASH_SUFFIX.search(name)


def test_reserved_prefix_patterns_are_avoided_in_hashed_names() -> None:
    # "kube-system" would hash to "kube-system-<hash>", which matches kube-*.
    assert profile_name(POLICY, "kube-system").startswith("u-kube-system-")
    policy = load_policy({"naming": {"reserved": ["team-*", "u-*"]}})
    name = profile_name(policy, "team-a")
    assert not any(fnmatch.fnmatchcase(name, p) for p in ("team-*", "u-*"))
    assert HASH_SUFFIX.search(name)


def test_policy_that_reserves_everything_is_a_clear_error() -> None:
    policy = load_policy({"naming": {"reserved": ["*"]}})
    with pytest.raises(NamingError, match="reserved"):
        profile_name(policy, "alice")


def test_policy_namespaces_are_reserved() -> None:
    policy = load_policy(
        {
            "platform": {"namespace": "tenancy", "kubeflowNamespace": "kf"},
            "mesh": {"controlPlaneRef": {"namespace": "mesh-cp"}},
        }
    )
    for uid in ("tenancy", "kf", "mesh-cp"):
        assert profile_name(policy, uid) != uid


@pytest.mark.parametrize("uid", ["", " ", "\t\n", "\u3000"])
def test_empty_or_blank_ids_are_rejected(uid: str) -> None:
    with pytest.raises(NamingError, match="empty"):
        profile_name(POLICY, uid)


def test_label_part_is_identity_for_clean_values_and_hashes_otherwise() -> None:
    assert label_part("alice") == "alice"
    a, b = label_part("alice.smith@x.org"), label_part("alice-smith@x.org")
    assert a != b and a.startswith("alice-smith-x-org-")
    assert len(label_part("x" * 300)) <= 40
