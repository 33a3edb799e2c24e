"""Fixtures for integration tests on the real local control plane.

The session starts one LocalCluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok) the first time a test asks for it, so `pytest tests/unit` never
starts one. If the binaries cannot be built or the cluster cannot start, every test that
needs it fails with the reason; nothing is skipped. When any test failed, the end of each
component's log is printed and the cluster's workdir is kept.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.crds import bundled_crds
from kftenancy.lab.errors import ControlPlaneError

_CLUSTER_KEY = pytest.StashKey[LocalCluster]()

UserClientFactory = Callable[..., AsyncClient]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cluster = config.stash.get(_CLUSTER_KEY, None)
    if cluster is not None and exitstatus != 0:
        terminalreporter.section("local control plane logs")
        terminalreporter.write_line(cluster.log_report())


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    lab = LocalCluster(controller_manager=True, scheduler=True, kwok=True)
    failure = None
    try:
        lab.start()
    except ControlPlaneError as err:
        failure = str(err)
    if failure is not None:
        pytest.fail(f"the local control plane could not start:\n{failure}", pytrace=False)
    request.config.stash[_CLUSTER_KEY] = lab
    try:
        lab.install_crds(bundled_crds())
        yield lab
    finally:
        lab.stop(keep_workdir=request.session.testsfailed > 0)


def _client(kubeconfig: Path) -> AsyncClient:
    return AsyncClient(config=KubeConfig.from_file(kubeconfig), trust_env=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def admin(cluster: LocalCluster) -> AsyncIterator[AsyncClient]:
    """An AsyncClient authenticated as system:masters."""
    client = _client(cluster.admin_kubeconfig)
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def user_client(cluster: LocalCluster) -> AsyncIterator[UserClientFactory]:
    """`user_client(user, groups=[])` -> an AsyncClient authenticated as that ordinary user
    (a client certificate; RBAC applies)."""
    made: list[AsyncClient] = []

    def make(user: str, groups: Sequence[str] = ()) -> AsyncClient:
        client = _client(cluster.kubeconfig_for(user, list(groups)))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(admin: AsyncClient) -> AsyncIterator[str]:
    """A fresh namespace (its `default` service account exists); deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await admin.create(
        codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    )
    for _ in range(300):
        try:
            await admin.get(ServiceAccount, "default", namespace=name)
            break
        except ApiError as err:
            if err.status.code != 404:
                raise
            await asyncio.sleep(0.1)
    else:
        pytest.fail(f"no `default` service account in {name} after 30s (controller-manager?)")
    yield name
    await admin.delete(Namespace, name)
