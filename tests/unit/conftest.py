"""Unit-test settings shared by every module.

Hypothesis: no per-example deadline and no "input generation is slow" health check. The
suite runs on 2 cores shared with other jobs, where wall-clock limits fail at random;
the properties themselves are unchanged (max_examples still applies).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("kftenancy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kftenancy")
