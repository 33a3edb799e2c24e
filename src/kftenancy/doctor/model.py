"""What a doctor check is: a pure function from a cluster snapshot to findings.

A `Check` names what it needs to read (`reads`: kinds to list) and a pure `run`
(`Snapshot` → findings). The shell (`kftenancy.doctor.gather`) lists every kind the
registered checks read, once, adds a few facts that are not objects (a dry-run pod,
the issuer discovery document, serving certificates), and runs the checks. Every
finding that is not OK carries the fix, in words a platform engineer can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kftenancy.policy import TenancyPolicySpec

Obj = dict[str, Any]


class Severity(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One result: what was found and, unless OK, how to fix it."""

    check: str
    severity: Severity
    message: str
    fix: str | None = None
    object: str | None = None  # e.g. "Node/gpu-1"

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": str(self.severity),
            "message": self.message,
            "fix": self.fix,
            "object": self.object,
        }


@dataclass(frozen=True)
class Read:
    """A kind a check lists: in one namespace, or (None) all of them."""

    api_version: str
    kind: str
    namespace: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the checks see: the policy, listed objects by kind, facts, the time.

    `objects` has a key for every listed kind the API server serves; a kind that is not
    served has no key (`served` is False), which checks report when it matters.
    """

    policy: TenancyPolicySpec | None
    now: datetime
    objects: Mapping[tuple[str, str], list[Obj]] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    policy_error: str | None = None

    def served(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self.objects

    def of(self, api_version: str, kind: str) -> list[Obj]:
        return list(self.objects.get((api_version, kind), []))

    def named(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        for obj in self.objects.get((api_version, kind), []):
            meta = obj.get("metadata") or {}
            if meta.get("name") == name and (
                namespace is None or meta.get("namespace") == namespace
            ):
                return obj
        return None


@dataclass(frozen=True)
class Check:
    """A named check: the kinds it reads (fixed, or chosen from the policy, which may be
    None when the cluster has none) and its pure evaluation."""

    name: str
    title: str
    reads: tuple[Read, ...] | Callable[[TenancyPolicySpec | None], tuple[Read, ...]]
    run: Callable[[Snapshot], list[Finding]]
    needs_policy: bool = True

    def reads_for(self, policy: TenancyPolicySpec | None) -> tuple[Read, ...]:
        return self.reads if isinstance(self.reads, tuple) else self.reads(policy)


def ok(check: str, message: str) -> Finding:
    return Finding(check, Severity.OK, message)


def warning(check: str, message: str, fix: str, obj: str | None = None) -> Finding:
    return Finding(check, Severity.WARNING, message, fix, obj)


def error(check: str, message: str, fix: str, obj: str | None = None) -> Finding:
    return Finding(check, Severity.ERROR, message, fix, obj)


def failed(findings: list[Finding]) -> bool:
    """True when any finding is an error (the command then exits 1)."""
    return any(f.severity == Severity.ERROR for f in findings)


def run_checks(checks: tuple[Check, ...], snapshot: Snapshot) -> list[Finding]:
    """Every check's findings, in registry order. Checks that need the policy report
    nothing of their own when it is missing (the policy check says why)."""
    out: list[Finding] = []
    for check in checks:
        if check.needs_policy and snapshot.policy is None:
            continue
        out += check.run(snapshot)
    return out
