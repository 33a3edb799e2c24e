"""TLS for the controller's probe/metrics server: the given certificate, or a fresh
self-signed one (so the server never speaks plain HTTP)."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from pathlib import Path

from kftenancy.certs import serving_pair, write_pair


def server_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
        return ctx
    pair = serving_pair(
        "kftenancy-controller",
        ["localhost", "127.0.0.1"],
        dt.datetime.now(dt.UTC),
        validity=dt.timedelta(days=365),
    )
    with tempfile.TemporaryDirectory() as tmp:
        ctx.load_cert_chain(*write_pair(pair, Path(tmp)))
    return ctx
