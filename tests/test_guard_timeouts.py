"""Guards for addon/guard/timeouts.py and the error-page override: the mitmproxy internals they rely on
exist and behave as the design assumes, for the pinned mitmproxy version. (The behaviour end to
end is in tests/test_faults.py.)"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import json

import mitmproxy
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import server
from mitmproxy.proxy.layers.http import HttpStream, _http1

from addon.exchange import Exchange
from addon.guard import errorpage, timeouts


def test_pinned_version() -> None:
    assert mitmproxy.version.VERSION == "12.3.1", (
        "re-check addon/guard/timeouts.py and addon/guard/errorpage.py against this version"
    )


def test_connection_registry_and_transports() -> None:
    assert isinstance(Proxyserver().connections, dict)  # client connection id → its ConnectionHandler
    assert {f.name for f in dataclasses.fields(server.ConnectionIO)} >= {"handler", "reader", "writer"}
    assert "self.transports" in inspect.getsource(server.ConnectionHandler.__init__)
    # Cancelling a connection's task is how mitmproxy itself closes it, and an aborted connect is reported.
    assert "handler.cancel(" in inspect.getsource(server.ConnectionHandler.close_connection)
    assert "asyncio.CancelledError" in inspect.getsource(server.ConnectionHandler.open_connection)


def test_error_hook_runs_before_the_client_is_answered() -> None:
    source = inspect.getsource(HttpStream.handle_protocol_error)
    assert source.index("HttpErrorHook(") < source.index("SendHttp(event, self.context.client)")
    # Mid-answer, the HTTP/1 server layer only closes the connection (no error page after a started body).
    send = inspect.getsource(_http1.Http1Server.send)
    branch = send[send.index("isinstance(event, ResponseProtocolError)") :]
    assert "if not self.response" in branch and "CloseConnection" in branch


def test_final_chunk() -> None:
    assert timeouts.final_chunk(b'{"error":"x"}\n') == b'e\r\n{"error":"x"}\n\r\n0\r\n\r\n'
    assert timeouts.final_chunk(b"") == b"0\r\n\r\n"


def test_override_reaches_only_the_next_error_page_of_its_own_task() -> None:
    errorpage.install()
    try:

        def in_hook_task() -> tuple[bytes, bytes]:
            errorpage.override(504, "the upstream sent nothing for 1 s (upstream_timeout)")
            return _http1.make_error_response(502, "server closed connection"), _http1.make_error_response(502, "x")

        first, second = contextvars.copy_context().run(in_hook_task)
        other = _http1.make_error_response(502, "server closed connection")  # another task: untouched
    finally:
        errorpage.uninstall()
    assert first.startswith(b"HTTP/1.1 504") and json.loads(first.split(b"\r\n\r\n", 1)[1])["error"].endswith(
        "(upstream_timeout)"
    )
    assert second.startswith(b"HTTP/1.1 502")
    assert json.loads(other.split(b"\r\n\r\n", 1)[1])["error"] == "the upstream closed the connection without answering"


def test_watch_outside_an_event_loop_does_not_fail() -> None:
    from mitmproxy.test import tflow

    watch = timeouts.UpstreamWatch()
    flow = tflow.tflow()
    flow.response = None
    exchange = Exchange("POST", "/api/chat", 0.0)
    exchange.timeout = 5  # the server's upstream_timeout
    watch.start(flow, exchange)
    assert exchange.sent_at
    watch.forget(flow, exchange)
    assert watch.watched == {} and not exchange.sent_at


def test_what_the_watch_reads_of_a_connection() -> None:
    """Issue 13: a non-streamed body still arriving is activity (the handler's inactivity watchdog notes
    every event), a client's full write buffer is backpressure, an aborted upstream socket is read as its
    close, and a connection in its TLS handshake is told apart by its timestamps."""
    assert "self.timeout_watchdog.register_activity()" in inspect.getsource(server.ConnectionHandler.server_event)
    assert "self.last_activity = time.time()" in inspect.getsource(server.TimeoutWatchdog.register_activity)
    assert "await transport.writer.drain()" in inspect.getsource(server.ConnectionHandler.drain_writers)
    handle = inspect.getsource(server.ConnectionHandler.handle_connection)
    assert "if not data:" in handle and "events.ConnectionClosed(connection)" in handle
    from mitmproxy import connection

    fields = {f.name for f in dataclasses.fields(connection.Server)} | set(dir(connection.Server))
    assert {"timestamp_tcp_setup", "timestamp_tls_setup", "tls", "alpn_offers"} <= fields
