"""`kftenancy doctor`: pure checks over a cluster snapshot, each finding with its fix.

`model` (Finding, Check, Snapshot), `checks` (the checks and the `CHECKS` registry),
`gather` (the shell that reads the snapshot). See docs/doctor.md.
"""

from kftenancy.doctor.checks import CHECKS
from kftenancy.doctor.model import Check, Finding, Read, Severity, Snapshot, failed, run_checks

__all__ = ["CHECKS", "Check", "Finding", "Read", "Severity", "Snapshot", "failed", "run_checks"]
