"""Fixtures for the chaos scenarios (tests/chaos/): faults injected into a real lab.

Each test module gets its own `LocalCluster` (`lab`), because these scenarios kill and
restart kube-apiserver and etcd and must not disturb the shared integration cluster.
A module picks the components it needs with a module-level `LAB_OPTIONS` dict (keyword
arguments of `LocalCluster`, e.g. `{"scheduler": True, "kwok": True}`); the default is
etcd + kube-apiserver. The bundled CRDs are installed.

Every scenario draws its faults from `chaos_rng`, a `random.Random` seeded from
`KFTENANCY_CHAOS_SEED` when set (replay), else from a fresh random seed; the seed is
printed at the start of the test, named in the failure report, and listed at the end of
the run ("chaos seeds"). A cluster that cannot start fails the tests that need it (never a
skip); when a test failed, the end of each component's log is printed and the workdir kept.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from chaos_support import SEED_ENV, ChaosRandom

from kftenancy.kube import Kube
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError

_SEEDS = pytest.StashKey[dict[str, int]]()
_LABS = pytest.StashKey[list[LocalCluster]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    seeds = config.stash.get(_SEEDS, {})
    if seeds:
        terminalreporter.section("chaos seeds (replay: KFTENANCY_CHAOS_SEED=<seed>)")
        for test, seed in seeds.items():
            terminalreporter.write_line(f"{seed}  {test}")
    if exitstatus != 0:
        for lab in config.stash.get(_LABS, []):
            terminalreporter.section("chaos lab logs")
            terminalreporter.write_line(lab.log_report())


@pytest.fixture
def chaos_rng(request: pytest.FixtureRequest) -> ChaosRandom:
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    request.config.stash.setdefault(_SEEDS, {})[request.node.nodeid] = seed
    print(f"chaos seed {seed} for {request.node.nodeid} (replay: {SEED_ENV}={seed})")
    return ChaosRandom(seed)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A LocalCluster of this module's own (`LAB_OPTIONS`), CRDs installed."""
    options: dict[str, Any] = dict(getattr(request.module, "LAB_OPTIONS", {}))
    cluster = LocalCluster(**options)
    failure = None
    try:
        cluster.start()
        cluster.install_crds(bundled_crds())
    except ControlPlaneError as err:
        failure = str(err)
        cluster.stop(keep_workdir=True)
    if failure is not None:
        pytest.fail(f"the chaos lab could not start:\n{failure}", pytrace=False)
    request.config.stash.setdefault(_LABS, []).append(cluster)
    failed_before = request.session.testsfailed
    try:
        yield cluster
    finally:
        cluster.stop(keep_workdir=request.session.testsfailed > failed_before)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lab_kube(lab: LocalCluster) -> AsyncIterator[Kube]:
    """An admin `Kube` on this module's lab."""
    kube = Kube.from_kubeconfig(str(lab.admin_kubeconfig))
    yield kube
    await kube.close()
