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

from addon import mitm_internals as fence
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
        fence.uninstall_patches()
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


async def test_an_upstream_connection_the_upstream_has_ended_is_not_reused(monkeypatch) -> None:
    """`drop_closed_upstreams` marks half-closed (as mitmproxy does once it reads the end) exactly the
    open upstream connections whose socket already holds the upstream's end; live and busy ones stay."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from mitmproxy import connection

    async def pair() -> tuple[asyncio.StreamWriter, socket.socket]:
        ours, theirs = socket.socketpair()
        _, writer = await asyncio.open_connection(sock=ours)
        return writer, theirs

    transports = {}
    peers = {}
    for name in ("ended", "reset", "live", "talking", "closing"):
        writer, peer = await pair()
        server_conn = connection.Server(address=("127.0.0.1", 1))
        server_conn.state = (  # "closing": mitmproxy has already read the end
            connection.ConnectionState.CAN_WRITE if name == "closing" else connection.ConnectionState.OPEN
        )
        transports[server_conn] = SimpleNamespace(writer=writer)
        peers[name] = (server_conn, peer)
    client = connection.Client(peername=("127.0.0.1", 2), sockname=("127.0.0.1", 3), timestamp_start=0)
    transports[client] = SimpleNamespace(writer=None)
    peers["ended"][1].shutdown(socket.SHUT_WR)
    peers["reset"][1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peers["reset"][1].close()
    peers["talking"][1].sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    monkeypatch.setattr(fence.connections, "_handler", lambda flow: SimpleNamespace(transports=transports))

    timeouts.drop_closed_upstreams(None)  # type: ignore[arg-type]

    states = {name: conn.state for name, (conn, _) in peers.items()}
    assert states == {
        "ended": connection.ConnectionState.CAN_WRITE,
        "reset": connection.ConnectionState.CAN_WRITE,
        "live": connection.ConnectionState.OPEN,
        "talking": connection.ConnectionState.OPEN,  # bytes, not the end: mitmproxy reads and judges them
        "closing": connection.ConnectionState.CAN_WRITE,
    }
    for writer in (t.writer for t in transports.values() if t.writer is not None):
        writer.close()
    for _, peer in peers.values():
        peer.close()
