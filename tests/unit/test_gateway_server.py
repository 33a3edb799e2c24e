"""The server shell's header handling for proxy mode (pure parts of servers/gateway.py)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from kftenancy.gateway.authz import AuthzResult
from kftenancy.gateway.decision import decide
from kftenancy.gateway.identity import Identity
from kftenancy.policy import load_policy
from kftenancy.servers.gateway import env_proxy, request_from_aiohttp, token_key, upstream_headers


def test_upstream_headers_strip_identity_and_hop_by_hop_and_set_ours() -> None:
    raw = make_mocked_request(
        "GET",
        "/lab?token=secret",
        headers=CIMultiDict(
            [
                ("Host", "kubeflow.example.com"),
                ("Kubeflow-Userid", "admin"),
                ("kubeflow-userid", "admin2"),
                ("X-Forwarded-User", "admin"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Kftenancy-Proxy-Secret", "s"),
                ("Connection", "keep-alive"),
                ("Transfer-Encoding", "chunked"),
                ("Cookie", "a=b"),
            ]
        ),
    )
    p = load_policy({})
    request = request_from_aiohttp(raw, raw.raw_path)
    assert "kubeflow-userid" in request.duplicated
    d = decide(p, Identity("alice", ("ml",)), AuthzResult(True), request, "jwt")
    out = upstream_headers(raw, d)
    lower = {k.lower(): v for k, v in out.items()}
    assert lower["kubeflow-userid"] == "alice" and lower["kubeflow-groups"] == "ml"
    assert lower["x-kftenancy-identity"] == "jwt"
    assert list(k.lower() for k in out).count("kubeflow-userid") == 1
    for gone in (
        "x-forwarded-user",
        "x-kftenancy-proxy-secret",
        "connection",
        "transfer-encoding",
        "host",
    ):
        assert gone not in lower
    assert lower["x-forwarded-for"] != "6.6.6.6"
    assert lower["x-forwarded-host"] == "kubeflow.example.com"
    assert lower["cookie"] == "a=b"


def test_token_cache_key_is_a_digest_not_the_token() -> None:
    key = token_key("secret-token")
    assert b"secret-token" not in key and len(key) == 32


def test_env_proxy_names_the_https_proxy_unless_the_api_server_is_exempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = "https://10.96.0.1:443"
    assert env_proxy(server) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert env_proxy(server) == "http://proxy.corp:3128"
    assert env_proxy("http://plain.example") is None  # only the scheme's own proxy
    monkeypatch.setenv("NO_PROXY", "10.96.0.1,.svc")
    assert env_proxy(server) is None
    assert env_proxy("https://kubernetes.default.svc") is None
    assert env_proxy("https://api.example.com:6443") == "http://proxy.corp:3128"
