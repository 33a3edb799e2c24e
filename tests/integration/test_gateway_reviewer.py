"""The gateway's review client (`KubeReviewer`) on the real API server, with each kind of
credential a gateway runs with: a client certificate (the lab), a bearer token in a file
that the kubelet rotates (in-cluster: lightkube's `tokenFile`, re-read on a 401), and a
credential the API server refuses or an identity without `system:auth-delegator` (the
gateway then answers 503 with a reason and logs the API server's message, never a 500);
and a burst of reviews sharing a few kept connections instead of a TLS handshake each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.authentication_v1 import TokenRequest, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from kftenancy.gateway.identity import Request
from kftenancy.gateway.signer import KeyRing, SigningKey
from kftenancy.lab.cluster import LocalCluster
from kftenancy.policy import load_policy
from kftenancy.servers.gateway import REVIEW_CONNECTIONS, Gateway, KubeReviewer, ReviewFailed

RBAC = "rbac.authorization.k8s.io"


async def _token(admin: AsyncClient, ns: str, sa: str) -> str:
    issued = await admin.create(
        ServiceAccountToken(
            metadata=ObjectMeta(name=sa, namespace=ns),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
        ),
        sa,
        namespace=ns,
    )
    assert isinstance(issued, TokenRequest) and issued.status is not None
    return str(issued.status.token)


async def _bind_auth_delegator(admin: AsyncClient, subjects: list[dict[str, str]]) -> str:
    """Bind `subjects` to `system:auth-delegator` (as the chart binds the gateway); the
    binding's name, for the caller to delete."""
    name = f"reviewer-test-{uuid.uuid4().hex[:8]}"
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": subjects,
    }
    await admin.apply(codecs.from_dict(binding), field_manager="test")
    return name


@pytest_asyncio.fixture(loop_scope="session")
async def accounts(admin: AsyncClient, namespace: str) -> AsyncIterator[dict[str, str]]:
    """Tokens of service accounts in a fresh namespace: `reviewer-a` and `reviewer-b` may
    review tokens (system:auth-delegator), `nobody` may not, `user` is the one reviewed."""
    names = ["reviewer-a", "reviewer-b", "nobody", "user"]
    for sa in names:
        await admin.create(ServiceAccount(metadata=ObjectMeta(name=sa, namespace=namespace)))
    crb = await _bind_auth_delegator(
        admin,
        [
            {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
            for sa in ("reviewer-a", "reviewer-b")
        ],
    )
    yield {sa: await _token(admin, namespace, sa) for sa in names}
    await admin.delete(ClusterRoleBinding, crb)


def _token_file_client(cluster: LocalCluster, token_file: Path, tmp_path: Path) -> AsyncClient:
    """A lightkube client configured like an in-cluster gateway: a CA and a token file."""
    kubeconfig: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lab",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": "gw", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "gw", "context": {"cluster": "lab", "user": "gw"}}],
        "current-context": "gw",
    }
    path = tmp_path / "gateway.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return AsyncClient(config=KubeConfig.from_file(path), trust_env=False)


async def test_a_client_certificate_reviewer_authenticates_tokens_and_refuses_bad_ones(
    cluster: LocalCluster, accounts: dict[str, str], namespace: str
) -> None:
    client = AsyncClient(
        config=KubeConfig.from_file(cluster.kubeconfig_for("kftenancy-gateway-reviewer")),
        trust_env=False,
    )
    # the certificate user may review once bound (as the chart binds the gateway)
    admin = AsyncClient(config=KubeConfig.from_file(cluster.admin_kubeconfig), trust_env=False)
    crb = await _bind_auth_delegator(
        admin, [{"apiGroup": RBAC, "kind": "User", "name": "kftenancy-gateway-reviewer"}]
    )
    reviewer = KubeReviewer(client)
    try:
        good = await reviewer.token_review(accounts["user"])
        assert good["authenticated"] is True
        assert good["user"]["username"] == f"system:serviceaccount:{namespace}:user"
        assert f"system:serviceaccounts:{namespace}" in good["user"]["groups"]
        bad = await reviewer.token_review("not-a-real-token")
        assert not bad.get("authenticated")
        allowed = await reviewer.access_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": f"system:serviceaccount:{namespace}:user",
                    "resourceAttributes": {"verb": "delete", "resource": "namespaces"},
                },
            }
        )
        assert allowed["allowed"] is False
    finally:
        await reviewer.close()
        await client.close()
        await admin.delete(ClusterRoleBinding, crb)
        await admin.close()


async def test_a_rotated_token_file_is_read_again_after_a_401(
    cluster: LocalCluster,
    admin: AsyncClient,
    accounts: dict[str, str],
    namespace: str,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(accounts["reviewer-a"])
    client = _token_file_client(cluster, token_file, tmp_path)
    reviewer = KubeReviewer(client)
    try:
        assert (await reviewer.token_review(accounts["user"]))["authenticated"] is True
        # the kubelet rotates the token, and the old one stops working (its account is
        # deleted: the API server then answers a request made with it with 401)
        token_file.write_text(accounts["reviewer-b"])
        old_file = tmp_path / "old-token"
        old_file.write_text(accounts["reviewer-a"])
        (tmp_path / "old").mkdir()
        old_client = _token_file_client(cluster, old_file, tmp_path / "old")
        old = KubeReviewer(old_client)
        await admin.delete(ServiceAccount, "reviewer-a", namespace=namespace)
        try:
            for _ in range(100):  # until the API server has seen the deletion
                try:
                    await old.token_review(accounts["user"])
                except ReviewFailed as e:
                    assert e.status == 401
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the deleted account's token was still accepted after 10 s")
        finally:
            await old.close()
            await old_client.close()
        # the reviewer still sends the old token, gets a 401, reads the file again, retries
        status = await reviewer.token_review(accounts["user"])
        assert status["authenticated"] is True
        assert (await reviewer.token_review(accounts["user"]))["authenticated"] is True
    finally:
        await reviewer.close()
        await client.close()


async def test_a_reviewer_without_rights_makes_the_gateway_answer_503_with_the_reason_logged(
    cluster: LocalCluster,
    accounts: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(accounts["nobody"])
    client = _token_file_client(cluster, token_file, tmp_path)
    reviewer = KubeReviewer(client)
    try:
        with pytest.raises(ReviewFailed) as failed:
            await reviewer.token_review(accounts["user"])
        assert failed.value.status == 403
        assert "tokenreviews" in str(failed.value) and "forbidden" in str(failed.value)
        policy = load_policy({"identity": {"methods": ["kubernetesToken"], "onboarding": []}})
        gateway = Gateway(policy, keyring=KeyRing(SigningKey.generate()), reviewer=reviewer)
        with caplog.at_level(logging.WARNING, logger="kftenancy.gateway"):
            decision = await gateway.check(
                Request("GET", "/", {"authorization": f"Bearer {accounts['user']}"})
            )
        assert decision.status == 503, decision
        logged = [r.getMessage() for r in caplog.records if "TokenReview failed" in r.getMessage()]
        assert logged and "403" in logged[0] and "forbidden" in logged[0]
        assert accounts["user"] not in " ".join(logged)  # never a token in the log
    finally:
        await reviewer.close()
        await client.close()


def _connections_to(port: int) -> set[str]:
    """The ESTABLISHED TCP connections this process holds to `port` on this machine, as
    socket inodes (its fds matched against /proc/net/tcp, IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                found.add(fields[9])
    return found


async def test_a_burst_of_reviews_shares_a_few_kept_connections_to_the_api_server(
    cluster: LocalCluster, accounts: dict[str, str]
) -> None:
    """16 concurrent TokenReviews (a flood's admitted burst) open at most
    REVIEW_CONNECTIONS connections, not one TLS handshake each, and the next burst
    reuses them."""
    token_file_dir = Path(cluster.workdir) / f"reviewer-burst-{uuid.uuid4().hex[:8]}"
    token_file_dir.mkdir()
    token_file = token_file_dir / "token"
    token_file.write_text(accounts["reviewer-a"])
    client = _token_file_client(cluster, token_file, token_file_dir)
    reviewer = KubeReviewer(client)
    port = int(cluster.server.rsplit(":", 1)[1])
    before = _connections_to(port)
    try:
        burst = [accounts["user"]] * 8 + [f"not-a-token-{i}" for i in range(8)]
        first = await asyncio.gather(*(reviewer.token_review(t) for t in burst))
        assert [bool(r.get("authenticated")) for r in first] == [True] * 8 + [False] * 8
        opened = _connections_to(port) - before  # (other clients' idle ones may close)
        assert 1 <= len(opened) <= REVIEW_CONNECTIONS, len(opened)
        second = await asyncio.gather(*(reviewer.token_review(t) for t in burst))
        assert [bool(r.get("authenticated")) for r in second] == [True] * 8 + [False] * 8
        assert _connections_to(port) - before == opened  # the same connections, kept
    finally:
        await reviewer.close()
        await client.close()
