"""The Kubeflow `Profile` (kubeflow.org/v1): parsed once into a small frozen model.

Upstream's Profile spec has `owner`, `plugins` and `resourceQuotaSpec`. kftenancy adds
`contributors` (users *and groups*, role edit or view). Our Profile CRD carries it in the
spec; upstream's CRD prunes unknown fields, so there the same list can live in the JSON
annotation `kftenancy.dev/contributors`. When `spec.contributors` is present it wins;
otherwise the annotation is read.

`parse_profile` never raises anything but `ProfileError`, whose message names the field,
the value and what is allowed.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from kftenancy import constants as c
from kftenancy.errors import KftenancyError, describe_validation_error

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[munkMGTPE])?$")


class ProfileError(KftenancyError):
    """A Profile that cannot be used as is (the message says which field and why)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Subject(_Model):
    """The Profile owner: a user or a group (an rbac.authorization.k8s.io Subject)."""

    kind: Literal["User", "Group"] = Field(description="User or Group.")
    name: str = Field(min_length=1, description="The user id or group name, exactly.")
    api_group: str | None = Field(default=None, description="rbac.authorization.k8s.io if set.")
    namespace: str | None = Field(default=None, description="Unused for users and groups.")

    @field_validator("name")
    @classmethod
    def _visible(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name must have visible characters")
        return v


class Contributor(_Model):
    """Someone besides the owner with access to the tenant: a user or a group."""

    kind: Literal["User", "Group"] = Field(description="User or Group.")
    name: str = Field(min_length=1, description="The user id or group name, exactly.")
    role: Literal["edit", "view"] = Field(description="kubeflow-edit or kubeflow-view.")

    @field_validator("name")
    @classmethod
    def _visible(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name must have visible characters")
        return v


class ResourceQuotaSpec(_Model):
    """A core/v1 ResourceQuotaSpec (hard limits, optional scopes)."""

    hard: dict[str, int | str] = Field(
        default_factory=dict, description="Resource name → quantity; overrides the policy's."
    )
    scopes: list[str] | None = None
    scope_selector: dict[str, Any] | None = None

    @field_validator("hard")
    @classmethod
    def _quantities(cls, v: dict[str, int | str]) -> dict[str, int | str]:
        for key, qty in v.items():
            if not _QUANTITY.match(str(qty)):
                raise ValueError(
                    f"{key}: {qty!r} is not a Kubernetes quantity (for example 8, 500m, 16Gi)"
                )
        return v


class Plugin(_Model):
    """An upstream Profile plugin (kind + free-form spec), kept for compatibility."""

    kind: str = Field(min_length=1)
    spec: dict[str, Any] | None = None


class ProfileSpec(_Model):
    """The Profile spec kftenancy understands (the Profile CRD schema is generated from it)."""

    owner: Subject
    contributors: list[Contributor] | None = Field(
        default=None, description="Users and groups with edit or view access (kftenancy)."
    )
    resource_quota_spec: ResourceQuotaSpec | None = None
    plugins: list[Plugin] = Field(default_factory=list)


class Profile(_Model):
    """A parsed Profile: everything the renderer needs, as a value."""

    name: str
    owner: Subject
    contributors: tuple[Contributor, ...] = ()
    resource_quota_spec: ResourceQuotaSpec | None = None
    plugins: tuple[Plugin, ...] = ()
    user_id: str | None = Field(
        default=None, description="The exact user id onboarding created it for (annotation)."
    )


def _fail(err: ValidationError, where: str) -> ProfileError:
    return ProfileError(describe_validation_error(err, where))


def _contributors_from_annotation(raw: str, where: str) -> list[Contributor]:
    field = f"{where}: metadata.annotations[{c.ANN_CONTRIBUTORS}]"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ProfileError(
            f"{field}: not valid JSON ({err.msg}) (got {raw[:80]!r}); expected a list like "
            '[{"kind": "User", "name": "bob@example.com", "role": "edit"}]'
        ) from None
    if not isinstance(data, list):
        raise ProfileError(
            f"{field}: must be a JSON list of {{kind, name, role}} (got {type(data).__name__})"
        )
    out = []
    for i, item in enumerate(data):
        try:
            out.append(Contributor.model_validate(item))
        except ValidationError as err:
            raise ProfileError(describe_validation_error(err, f"{field}[{i}]")) from None
    return out


def parse_profile(obj: Any, source: str = "profile") -> Profile:
    """Parse a Profile manifest (a dict as read from the API or a file) into a `Profile`.

    Raises ProfileError naming the field, the offending value and what is allowed.
    """
    if not isinstance(obj, dict):
        raise ProfileError(f"{source}: a Profile must be a mapping (got {type(obj).__name__})")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    allowed = [f"{c.KUBEFLOW_GROUP}/{v}" for v in c.PROFILE_VERSIONS]
    if api_version not in allowed:
        raise ProfileError(f"{source}: apiVersion: must be one of {allowed} (got {api_version!r})")
    if kind != c.PROFILE_KIND:
        raise ProfileError(f"{source}: kind: must be {c.PROFILE_KIND!r} (got {kind!r})")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise ProfileError(f"{source}: metadata: must be a mapping (got {metadata!r})")
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS1123_LABEL.match(name):
        raise ProfileError(
            f"{source}: metadata.name: {name!r} is not a DNS-1123 label (lowercase letters, "
            "digits and '-', at most 63 characters); it is the namespace name"
        )
    where = f"{source} {name}"
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ProfileError(f"{where}: metadata.annotations: must be a mapping")
    try:
        spec = ProfileSpec.model_validate(obj.get("spec") or {})
    except ValidationError as err:
        raise ProfileError(
            describe_validation_error(err, f"{where}: spec").replace(": spec: ", ": spec.")
        ) from None
    contributors = spec.contributors
    if contributors is None and c.ANN_CONTRIBUTORS in annotations:
        contributors = _contributors_from_annotation(str(annotations[c.ANN_CONTRIBUTORS]), where)
    user_id = annotations.get(c.ANN_USER_ID)
    return Profile(
        name=name,
        owner=spec.owner,
        contributors=tuple(dict.fromkeys(contributors or ())),
        resource_quota_spec=spec.resource_quota_spec,
        plugins=tuple(spec.plugins),
        user_id=str(user_id) if user_id is not None else None,
    )
