"""Live connections and listeners: proxy modes, the rebind, mitmproxy's connection handlers and
their transports, the client's TLS layer, and a layer of the proxy's own for a plain listener."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Generator, Iterator
from typing import Any

from mitmproxy import connection, http

from addon.mitm_internals import private
from addon.mitm_internals.checks import Feature, MitmproxyChanged, available


def is_reverse(mode: Any) -> bool:
    """Whether a proxy mode (a connection's, or a `mode` option's spec) is a reverse proxy's."""
    return isinstance(private.ProxyMode.parse(mode) if isinstance(mode, str) else mode, private.ReverseMode)


async def rebind_listeners(master: Any) -> None:
    """Stop and start mitmproxy's listeners, so that a changed listen_host applies. Raises
    `MitmproxyChanged` when that cannot be done (the proxy may be listening on every address)."""
    servers = getattr(master.addons.get("proxyserver"), "servers", None)
    if servers is None or not callable(getattr(servers, "update", None)):
        raise MitmproxyChanged("cannot rebind mitmproxy's listeners to loopback (Proxyserver.servers is gone)")
    if not len(servers):
        return
    modes = [private.ProxyMode.parse(m) for m in master.options.mode]
    await servers.update([])
    if not await servers.update(modes):
        raise MitmproxyChanged("mitmproxy could not listen again on loopback")


def plain_reverse_tls(nextlayer: Any) -> bool:
    """Whether a connection's first bytes, on a `reverse:http://` listener, are a TLS record (where
    mitmproxy would put a TLS layer under the HTTP one): the connection's first layer decision only."""
    context = nextlayer.context
    mode = context.client.proxy_mode
    if not isinstance(mode, private.ReverseMode) or mode.scheme != "http" or len(context.layers) != 1:
        return False
    return context.client.transport_protocol == "tcp" and private.starts_like_tls_record(nextlayer.data_client())


def answer_and_close_raw(nextlayer: Any, data: bytes) -> None:
    """Make the connection's next layer one that writes `data` to the client as it is and closes."""
    nextlayer.layer = _raw_answer_layer()(nextlayer.context, data)


@functools.cache
def _raw_answer_layer() -> type:
    class RawAnswer(private.layer.Layer):
        """Writes its bytes to the client and closes the connection; reads nothing more."""

        def __init__(self, context: Any, data: bytes) -> None:
            super().__init__(context)
            self.data = data

        def _handle_event(self, event: Any) -> Generator[Any, Any, None]:
            if isinstance(event, private.events.Start):
                yield private.commands.SendData(self.context.client, self.data)
                yield private.commands.CloseConnection(self.context.client)

    return RawAnswer


def _handler(flow: http.HTTPFlow) -> Any:
    from mitmproxy import ctx

    return getattr(ctx.master.addons.get("proxyserver"), "connections", {}).get(flow.client_conn.id)


def client_writer(flow: http.HTTPFlow) -> asyncio.StreamWriter | None:
    """The writer of the flow's live client connection, or None."""
    writer = getattr(getattr(_handler(flow), "transports", {}).get(flow.client_conn), "writer", None)
    return writer if isinstance(writer, asyncio.StreamWriter) else None


def writer_of(conn: connection.Connection) -> asyncio.StreamWriter | None:
    """mitmproxy's writer of a live connection (searched among every client's handler)."""
    from mitmproxy import ctx

    with contextlib.suppress(AttributeError, KeyError):
        for handler in ctx.master.addons.get("proxyserver").connections.values():
            if conn in handler.transports:
                writer = handler.transports[conn].writer
                return writer if isinstance(writer, asyncio.StreamWriter) else None
    return None


def open_upstreams(flow: http.HTTPFlow) -> Iterator[tuple[connection.Server, Any]]:
    """The flow's client connection's open upstream connections, with their sockets."""
    handler = _handler(flow)
    if handler is None or not available(Feature.STALE_UPSTREAMS):
        return
    for conn, io in list(handler.transports.items()):
        if isinstance(conn, connection.Server) and conn.state is connection.ConnectionState.OPEN and io.writer:
            yield conn, io.writer.get_extra_info("socket")


def mark_upstream_closed(conn: connection.Server) -> None:
    """What mitmproxy's reader sets at the peer's end: the connection is not reused."""
    conn.state &= ~connection.ConnectionState.CAN_READ


def cancel_upstream(flow: http.HTTPFlow, reason: str) -> str:
    """Close the flow's upstream connection (or abort its connect or TLS handshake) as mitmproxy's close
    command does; what it was doing ("connect", "handshake", "open"), or "" if there was none."""
    handler = _handler(flow)
    if handler is None:
        return ""
    target = (flow.request.host, flow.request.port)
    closed = ""
    for conn, io in list(handler.transports.items()):
        if conn is flow.client_conn or io.handler is None or io.handler.done():
            continue
        # mitmproxy assigns flow.server_conn only once the connect (and its TLS handshake) has succeeded
        opening = conn.timestamp_tcp_setup is None or (conn.tls and conn.timestamp_tls_setup is None)
        if conn is flow.server_conn or (opening and tuple(conn.address or ())[:2] == target):
            io.handler.cancel(reason)
            closed = "open" if not opening else "connect" if conn.timestamp_tcp_setup is None else "handshake"
    return closed


def abort_upstream(flow: http.HTTPFlow, reason: str) -> str:
    """Drop the flow's open upstream connection at the socket (mitmproxy reads its end and fails the
    flow); before the connect, `cancel_upstream`."""
    handler = _handler(flow)
    io = handler.transports.get(flow.server_conn) if handler is not None else None
    transport = getattr(getattr(io, "writer", None), "transport", None)
    if transport is None:
        return cancel_upstream(flow, reason)
    transport.abort()
    return "open"


def body_last_seen(flow: http.HTTPFlow) -> float | None:
    """When the flow's connection last received bytes (time.time()), or None."""
    handler = _handler(flow)
    if handler is None or not available(Feature.BODY_ACTIVITY):
        return None
    return float(handler.timeout_watchdog.last_activity)


def encrypt_for_client(flow: http.HTTPFlow, data: bytes) -> bytes | None:
    """`data` as TLS records of the client's own session (mitmproxy terminates it), or None."""
    if not available(Feature.TLS_STREAM_END):
        return None
    current: Any = getattr(_handler(flow), "layer", None)
    for _ in range(16):  # the layer stack is a few levels deep
        if isinstance(current, private.tls.ClientTLSLayer) and current.conn is flow.client_conn:
            if current.tls is None:
                return None
            return b"".join(c.data for c in current.send_data(data) if isinstance(c, private.commands.SendData))
        current = (
            current.layer if isinstance(current, private.layer.NextLayer) else getattr(current, "child_layer", None)
        )
        if current is None:
            return None
    return None
