"""Guards the swap of mitmproxy's private HTML error page: it must exist and be used by the HTTP/1 layer."""

from __future__ import annotations

import inspect
import json

from mitmproxy.proxy.layers.http import _http1

from addon.guard import errorpage


def test_the_private_function_we_replace_still_exists() -> None:
    assert "make_error_response" in vars(_http1)
    assert list(inspect.signature(_http1.make_error_response).parameters)[:2] == ["status_code", "message"]
    assert "make_error_response(" in inspect.getsource(_http1.Http1Server)


def test_install_writes_json_and_uninstall_restores() -> None:
    errorpage.install()
    try:
        raw = _http1.make_error_response(502, "[Errno 111] Connect call failed ('127.0.0.1', 9)")
        head, body = raw.split(b"\r\n\r\n", 1)
        assert b"application/json" in head and head.startswith(b"HTTP/1.1 502")
        assert json.loads(body)["error"].startswith("cannot reach the upstream: connection refused")
    finally:
        errorpage.uninstall()
    assert b"text/html" in _http1.make_error_response(502, "x")


def test_messages() -> None:
    assert "unknown host" in errorpage.friendly_message(502, "[Errno -2] Name or service not known")
    assert "TLS" in errorpage.friendly_message(502, "Certificate verify failed: self-signed certificate")
