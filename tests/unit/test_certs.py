"""Throwaway serving certificates: one file is both the server's chain and the client's trust."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from kftenancy.certs import serving_pair, write_pair


async def _handshake(cert: Path, key: Path, client_ctx: ssl.SSLContext) -> bytes:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        data = await reader.read()
        writer.close()
        return data
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_trusting_the_cert_file_verifies_the_server(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    cert, key = write_pair(serving_pair("demo", ["127.0.0.1"], now), tmp_path)
    assert key.stat().st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates(cert.read_bytes())
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=demo", "CN=demo CA"]
    assert await _handshake(cert, key, ssl.create_default_context(cafile=cert)) == b"ok"


async def test_a_client_trusting_another_pair_refuses_the_server(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    cert, key = write_pair(serving_pair("demo", ["127.0.0.1"], now), tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = write_pair(serving_pair("demo", ["127.0.0.1"], now), tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(cert, key, ssl.create_default_context(cafile=other))
