"""Guards the swap of mitmproxy's private HTML error page: it must exist and be used by the HTTP/1 layer."""

from __future__ import annotations

import inspect
import json

from mitmproxy.proxy.layers.http import _http1

from addon import mitm_internals as fence
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
        fence.uninstall_patches()
    assert b"text/html" in _http1.make_error_response(502, "x")


def test_messages() -> None:
    assert "unknown host" in errorpage.friendly_message(502, "[Errno -2] Name or service not known")
    assert "TLS" in errorpage.friendly_message(502, "Certificate verify failed: self-signed certificate")


# ---------------------------------------------------------------------------------------------
# Issue 13: mitmproxy's texts that quote upstream bytes, and HTTP/1 trailers


def test_texts_quoting_upstream_bytes_become_fixed_messages() -> None:
    key = "sk-echoed-0123456789abcdef"
    for raw, fixed in [
        (f"Cannot parse HTTP response: Bad HTTP response line: b'HTTP/1.1 2x0 Bearer {key}'", "bad status line"),
        (f"Cannot parse HTTP response: Invalid header line: b'Bearer {key}'", "bad header line"),
        (f"unexpected server response: b'HTTP/1.1 200 OK\\r\\nx-auth: Bearer {key}\\r\\n'", "headers were complete"),
        (f"HTTP/1 protocol error: something b'{key}'", "(bytes not shown)"),
    ]:
        assert fixed in errorpage.describe(raw) and key not in errorpage.describe(raw)
        assert key not in errorpage.friendly_message(502, raw)
    assert errorpage.describe("server closed connection") == "server closed connection"


def test_the_readers_we_rely_on_are_what_the_http1_layer_uses() -> None:
    """The HTTP/1 layer reads bodies through the module-level `make_body_reader` (so the swap is seen),
    and crashes on trailers unless the chunked reader refuses them first (as a protocol error)."""
    assert "make_body_reader" in vars(_http1)
    assert "make_body_reader(expected_size)" in inspect.getsource(_http1.Http1Client.read_headers)
    read_body = inspect.getsource(_http1.Http1Connection.read_body)
    assert "except h11.ProtocolError" in read_body and "NotImplementedError" in read_body


def test_trailers_are_refused_as_a_protocol_error() -> None:
    import h11
    from h11._receivebuffer import ReceiveBuffer

    errorpage.install()
    try:
        reader = _http1.make_body_reader(None)
        assert type(reader).__name__ == "NoTrailersReader"
        assert type(_http1.make_body_reader(5)).__name__ == "ContentLengthReader"
        buf = ReceiveBuffer()
        buf += b"2\r\nok\r\n0\r\nx-echo: Bearer sk-secret\r\n\r\n"
        assert isinstance(reader(buf), h11.Data)
        try:
            reader(buf)
        except h11.ProtocolError as e:
            assert str(e) == errorpage.TRAILERS
        else:
            raise AssertionError("trailers were accepted")
        plain = _http1.make_body_reader(None)
        buf = ReceiveBuffer()
        buf += b"2\r\nok\r\n0\r\n\r\n"
        assert isinstance(plain(buf), h11.Data) and isinstance(plain(buf), h11.EndOfMessage)
    finally:
        fence.uninstall_patches()
    assert type(_http1.make_body_reader(None)).__name__ == "ChunkedReader"
    assert "trailers" in errorpage.friendly_message(502, f"HTTP/1 protocol error: {errorpage.TRAILERS}")
