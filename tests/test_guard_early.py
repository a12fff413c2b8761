"""addon/guard/early.py and request_size.py: the mitmproxy internals the early answer relies on
(pinned version), the lingering close, the request body limit and its ceiling. (End to end:
tests/hostile/test_unauthenticated.py.)"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from mitmproxy import exceptions
from mitmproxy import http as mhttp
from mitmproxy.net.http import http1
from mitmproxy.proxy import server
from mitmproxy.proxy.layers.http import ErrorCode, HttpStream, _http1
from mitmproxy.test import tutils

from addon import mitm_internals as fence
from addon.endpoints import FALLBACK
from addon.guard import early, request_size


def test_a_response_set_at_requestheaders_waits_for_the_body() -> None:
    """Why the early answer exists: mitmproxy sends a response set in requestheaders only once the
    whole body was read (the request hook, then `send_response`, after RequestEndOfMessage)."""
    consume = inspect.getsource(HttpStream.state_consume_request_body)
    assert "self.request_body_buf += event.data" in consume
    assert consume.index("RequestEndOfMessage") < consume.index("elif self.flow.response:")


def test_a_flow_killed_at_requestheaders_gets_nothing_and_its_connection_closes() -> None:
    headers = inspect.getsource(HttpStream.state_wait_for_request_headers)
    hook = headers.index("yield HttpRequestHeadersHook(self.flow)")
    assert headers.index("check_killed(True)", hook) < headers.index("100-continue", hook)
    killed = inspect.getsource(HttpStream.check_killed)
    assert 'ResponseProtocolError(self.stream_id, "killed", ErrorCode.KILL)' in killed
    assert ErrorCode.KILL.http_status_code() is None  # no error page is written to the client
    send = inspect.getsource(_http1.Http1Server.send)
    branch = send[send.index("isinstance(event, ResponseProtocolError)") :]
    assert "status is not None" in branch and "CloseConnection(self.conn)" in branch
    # Closing the client connection is closing mitmproxy's own descriptor (writer.close), no shutdown.
    assert "writer.close()" in inspect.getsource(server.ConnectionHandler.handle_connection)


def test_has_body() -> None:
    def request(**headers: str) -> mhttp.Request:
        return tutils.treq(method=b"POST", headers=mhttp.Headers(**headers), content=b"")

    assert not early.has_body(request())
    assert not early.has_body(request(content_length="0"))
    assert early.has_body(request(content_length="10"))
    assert early.has_body(request(transfer_encoding="chunked"))


def test_linger_sends_ends_and_discards_a_bounded_amount() -> None:
    """The answer arrives whole and is followed by the end of the stream while the client is still
    sending; the proxy stops listening after LINGER_SECONDS or LINGER_BYTES."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    accepted.setblocking(False)
    sent = 0
    stop = threading.Event()

    def flood() -> None:
        nonlocal sent
        client.settimeout(0.2)
        while not stop.is_set():
            try:
                sent += client.send(b" " * 65536)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=flood)
    thread.start()
    answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    closed = []
    idle = SimpleNamespace(transport=SimpleNamespace(get_write_buffer_size=lambda: 0), close=lambda: closed.append(1))
    started = time.monotonic()
    asyncio.run(early.linger(accepted, answer, idle))  # type: ignore[arg-type]
    took = time.monotonic() - started
    stop.set()
    thread.join(5)
    client.settimeout(2)
    received = b""
    while True:
        try:
            piece = client.recv(65536)
        except OSError:
            break
        if not piece:
            break
        received += piece
    client.close()
    assert received == answer
    assert took < early.LINGER_SECONDS + 0.5
    assert accepted.fileno() == -1 and closed == [1]  # its own descriptor and mitmproxy's are closed


def test_request_body_limit_parsing() -> None:
    assert request_size.parse_limit("64m") == 64 << 20
    assert request_size.parse_limit("512k") == 512 << 10
    assert request_size.parse_limit("1000") == 1000
    assert request_size.parse_limit("0") == 0 and request_size.parse_limit("") == 0
    with pytest.raises(exceptions.OptionsError, match="request_body_limit"):
        request_size.parse_limit("lots")


def test_declared_and_chunked_bodies_over_the_limit() -> None:
    declared = tutils.treq(method=b"POST", headers=mhttp.Headers(content_length=str(100 << 20)), content=None)
    refused = request_size.declared_too_large(declared, 64 << 20, FALLBACK)
    assert refused is not None and refused.status == 413
    assert "too large" in (refused.error or "") and "(request_body_limit)" in (refused.error or "")
    assert request_size.declared_too_large(declared, 0, FALLBACK) is None
    small = tutils.treq(method=b"POST", headers=mhttp.Headers(content_length="10"), content=b"0123456789")
    assert request_size.declared_too_large(small, 64 << 20, FALLBACK) is None
    chunked = tutils.treq(method=b"POST", headers=mhttp.Headers(transfer_encoding="chunked"), content=b"x" * 2048)
    assert request_size.declared_too_large(chunked, 1024, FALLBACK) is None  # no length to check yet
    late = request_size.too_large(chunked, 1024, FALLBACK)
    assert late is not None and late.status == 413
    assert request_size.too_large(chunked, 4096, FALLBACK) is None


def test_body_size_limit_ceiling_in_reverse_mode() -> None:
    class Options(SimpleNamespace):
        def __contains__(self, name: str) -> bool:
            return hasattr(self, name)

    options = Options(body_size_limit=None, mode=["reverse:http://127.0.0.1:11434"])
    ours = request_size.ceiling(options, 64 << 20, None)
    assert options.body_size_limit == str(request_size.UPSTREAM_CEILING) == ours
    ours = request_size.ceiling(options, 512 << 20, ours)  # request_body_limit raised: ours follows
    assert options.body_size_limit == str(512 << 20) == ours
    options.body_size_limit = "1g"  # the user's own choice stays
    assert request_size.ceiling(options, 64 << 20, ours) == ours and options.body_size_limit == "1g"
    regular = Options(body_size_limit=None, mode=["regular"])  # other flows share the option: untouched
    assert request_size.ceiling(regular, 64 << 20, None) is None and regular.body_size_limit is None


def test_early_answers_are_whole_http1_answers() -> None:
    response = mhttp.Response.make(401, b'{"error":"unauthorized"}', {"content-type": "application/json"})
    raw = http1.assemble_response(response)
    assert raw.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and raw.endswith(b'\r\n\r\n{"error":"unauthorized"}')


def test_the_http1_server_layer_is_wrapped_and_unwrapped() -> None:
    """client_buffer wraps the HTTP/1 server layer's event handler (the client side only)."""
    from addon.guard import client_buffer

    assert "self.buf += event.data" in inspect.getsource(_http1.Http1Connection._handle_event)
    assert "FIXME: protect against header size DoS" in inspect.getsource(_http1.Http1Server.read_headers)
    assert {"read_headers", "read_body", "wait", "done", "passthrough"} <= set(dir(_http1.Http1Server))
    client_buffer.install(64 << 20)
    try:
        assert _http1.Http1Server._handle_event is fence.http1._bounded_handle_event
        assert _http1.Http1Client._handle_event is _http1.Http1Connection._handle_event
        assert client_buffer.MAX_PIPELINED == (64 << 20) + client_buffer.MAX_HEAD
    finally:
        fence.uninstall_patches()
    assert _http1.Http1Server._handle_event is _http1.Http1Connection._handle_event


def test_mitmproxy_can_skip_closing_a_cancelled_connection() -> None:
    """Why `close_soon`: the reader task's clean-up (writer.close) sits after an `await` that a
    cancellation can interrupt outside the try that catches it."""
    source = inspect.getsource(server.ConnectionHandler.handle_connection)
    loop_body = source[source.index("while True:") : source.index("if cancelled is None")]
    assert "await self.server_event(events.DataReceived(connection, data))" in loop_body
    assert loop_body.index("except asyncio.CancelledError") < loop_body.index("await self.server_event(")
