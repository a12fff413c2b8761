"""The fence: the one module that touches mitmproxy's private internals, each checked once at load.

Everything else in the addon uses mitmproxy's public addon API (hooks, flows, options, `ctx`);
ruff's banned-api rule and tests/test_mitm_internals.py keep private modules and attributes out
of the other modules. `verify()` (run by `OllamaProxy.load`) checks every touch below against the
running mitmproxy: where security depends on it the addon refuses to start (`MitmproxyChanged`, one
error naming each missing piece), where it is safe the feature is switched off with one warning
(`available`). docs/mitmproxy-internals.md is the ledger: every touch, why, what happens when it is
gone. mitmproxy's failure texts become a `FailureKind` here, nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import inspect
import logging
import re
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from mitmproxy import addonmanager, connection, http

if TYPE_CHECKING:
    from addon.guard.client_buffer import BufferPolicy, Phase, Refusal

logger = logging.getLogger("ollama_proxy")

_import_error: ImportError | None = None
try:
    import h11
    from h11._readers import ChunkedReader
    from mitmproxy.addons.proxyserver import Proxyserver, Servers  # noqa: F401 - checked by name
    from mitmproxy.addons.tlsconfig import TlsConfig  # noqa: F401 - checked by name
    from mitmproxy.net.http import http1, status_codes, url
    from mitmproxy.net.http.http1 import assemble  # noqa: F401 - checked by name
    from mitmproxy.net.tls import starts_like_tls_record
    from mitmproxy.proxy import commands, events, layer, server  # noqa: F401 - server: checked by name
    from mitmproxy.proxy.layers import tls
    from mitmproxy.proxy.layers.http import HttpLayer, HttpStream, _http1  # noqa: F401 - checked by name
    from mitmproxy.proxy.layers.http._base import ReceiveHttp
    from mitmproxy.proxy.layers.http._events import ErrorCode, RequestData, RequestProtocolError, ResponseData
    from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData
    from mitmproxy.utils import human

    ServerHookData = ServerConnectionHookData  # (the type of server_connect's argument)
    NextLayer = layer.NextLayer  # (the type of next_layer's argument)
    assemble_response = http1.assemble_response
    assemble_response_head = http1.assemble_response_head
    expected_body_size = http1.expected_http_body_size  # ValueError for bad framing; None: until the end
    connection_close = http1.connection_close
    REASONS = status_codes.RESPONSES
    parse_url = url.parse
    hostport = url.hostport
    parse_size = human.parse_size
    pretty_size = human.pretty_size
    format_address = human.format_address
except ImportError as e:  # reported by verify(), with what is missing
    _import_error = e


class MitmproxyChanged(RuntimeError):
    """A mitmproxy internal the addon's security depends on is gone or changed: the addon does not start."""


class Feature(enum.Enum):
    """What is switched off, with one warning, when the internal it needs is gone."""

    FAST_DISPATCH = "fast_hook_dispatch (mitmproxy's own hook dispatch serves)"
    TRAILER_REFUSAL = "refusing HTTP/1 trailers (mitmproxy's connection layer would crash on them)"
    TLS_STREAM_END = "the final error line of a broken stream for a client that speaks TLS to the proxy"
    BODY_ACTIVITY = "a whole answer's body arriving counting as upstream activity for upstream_timeout"
    STALE_UPSTREAMS = "not reusing an upstream connection the upstream has already closed"


# ---------------------------------------------------------------------------------------------
# Failures, typed: mitmproxy says what happened only in `flow.error.msg`.


class FailureKind(enum.Enum):
    """What happened, from mitmproxy's (or the OS's) text; each kind's value: the lower-case texts
    that say it, tried in this order (the first match wins)."""

    CLIENT_GONE = ("client disconnected",)
    KILLED = ("killed",)
    TRAILERS = ("http trailers are not supported",)
    BODY_SIZE_LIMIT = ("body_size_limit",)
    REQUEST_TOO_LARGE = ("request body too large",)
    BAD_STATUS_LINE = ("bad http response line",)
    BAD_HEADER_LINE = ("invalid header line",)
    HEAD_CUT = ("unexpected server response",)  # closed before the answer's head was complete
    MALFORMED = ("cannot parse http response",)
    SERVER_CLOSED = ("server closed connection",)  # closed without answering
    REFUSED = ("connect call failed", "connection refused")
    UNKNOWN_HOST = ("name or service not known", "nodename nor servname", "getaddrinfo")
    TLS = ("certificate", "ssl", "tls")
    BROKE_OFF = ("peer closed", "incomplete")
    RESET = ("reset",)
    TIMEOUT = ("timed out", "timeout")
    OTHER = ()


TRAILERS = "HTTP trailers are not supported"
# mitmproxy's texts (and where they are made), checked at load by `verify`
MITMPROXY_TEXTS: tuple[tuple[str, str], ...] = (
    ("_http1", "Client disconnected."),
    ("HttpStream.check_killed", '"killed", ErrorCode.KILL'),
    ("_http1.Http1Client", "server closed connection"),
    ("_http1.Http1Client", "unexpected server response: "),
    ("_http1.Http1Client", "Cannot parse HTTP response: "),
    ("http1.read", "Bad HTTP response line: "),
    ("http1.read", "Invalid header line: "),
    ("HttpStream", "body exceeds mitmproxy's body_size_limit"),
)
_QUOTED = re.compile(r"""\bb['"]""")


def failure_kind(message: str | None) -> FailureKind:
    """What a failure text says happened. Only the text before any bytes it quotes from the peer is
    read: an upstream cannot choose the kind."""
    lowered = _QUOTED.split(message or "", maxsplit=1)[0].lower()
    for kind in FailureKind:
        if any(needle in lowered for needle in kind.value):
            return kind
    return FailureKind.OTHER


# ---------------------------------------------------------------------------------------------
# The checks

_off: set[Feature] | None = None  # None: not verified yet


def available(feature: Feature) -> bool:
    """Whether the internal `feature` needs passed `verify()` (run now if it has not run)."""
    if _off is None:
        verify()
    return _off is not None and feature not in _off


def _resolve(name: str) -> Any:
    """A dotted name (`_http1.Http1Server.send`) among this module's imports."""
    first, *rest = name.split(".")
    target = globals()[first]
    for part in rest:
        target = getattr(target, part)
    return target


def _has(name: str, *needles: str) -> str | None:
    """What `name` lacks of `needles`: `.attr` an attribute or annotated field, `(a, b` its first
    parameters, `sha256:` the start of its source's digest (the very code), anything else a text of its
    source (a call or attribute it relies on); None if nothing."""
    target = _resolve(name)
    missing = []
    for needle in needles:
        if needle.startswith("."):
            ok = hasattr(target, needle[1:]) or needle[1:] in getattr(target, "__annotations__", {})
        elif needle.startswith("("):
            ok = ", ".join(inspect.signature(target).parameters).startswith(needle[1:])
        elif needle.startswith("sha256:"):
            ok = hashlib.sha256(inspect.getsource(target).encode()).hexdigest().startswith(needle[7:])
        else:
            ok = needle in inspect.getsource(target)
        if not ok:
            missing.append(needle)
    return f"{name} no longer has {missing}" if missing else None


# Each touch: the feature switched off without it (None: the addon refuses to start), then its checks: a
# dotted name and what it must still have (see `_has`).
TOUCHES: dict[str, tuple[Feature | None, *tuple[tuple[str, ...], ...]]] = {
    "HTTP/1 helpers (net.http.http1, status_codes, url, utils.human)": (
        None,
        ("http1.expected_http_body_size", "(request, response"),
        ("http1.connection_close", "(http_version, headers"),
        ("http1.assemble_response", "(response"),
        ("url.parse", "(url"),
        ("human.parse_size", "(s"),
        ("status_codes", ".RESPONSES"),
    ),
    "the error page (_http1.make_error_response: JSON, no upstream bytes, no key)": (
        None,
        ("_http1.make_error_response", "(status_code, message"),
        ("_http1.Http1Server", "make_error_response("),
        ("HttpStream.handle_protocol_error", "HttpErrorHook(", "SendHttp(event"),
    ),
    "bounded client buffers (_http1.Http1Server._handle_event, its buffer and states)": (
        None,
        ("_http1.Http1Connection._handle_event", "self.buf += event.data"),
        ("_http1.Http1Server", ".read_headers", ".read_body", ".wait", ".done", ".passthrough"),
        ("ErrorCode", ".REQUEST_TOO_LARGE", ".GENERIC_CLIENT_ERROR"),
    ),
    "client connections (Proxyserver.connections, ConnectionHandler.transports): answers before the body "
    "is read, upstream_timeout, a killed flow writing nothing": (
        None,
        ("Proxyserver", ".connections"),
        ("server.ConnectionIO", ".handler", ".writer"),
        ("server.ConnectionHandler.__init__", "self.transports"),
        ("server.ConnectionHandler.close_connection", "handler.cancel("),
        ("_http1.Http1Server.send", "isinstance(event, ResponseProtocolError)", "CloseConnection(self.conn)"),
        ("HttpStream.check_killed", "ErrorCode.KILL"),
    ),
    "the loopback rebind (Proxyserver.servers.update)": (
        None,
        ("Proxyserver.__init__", "self.servers = Servers("),
        ("Servers.update", "(self, modes"),
    ),
    "the upstream key on the wire only (an HTTP/1.1 request head written as bytes(headers))": (
        None,
        ("assemble._assemble_request_headers", "bytes(request_data.headers)"),
        ("_http1.Http1Client.send", "assemble_request_head("),
        ("TlsConfig.tls_start_server", "if not server.alpn_offers"),
    ),
    "a TLS handshake on a plain reverse listener refused (NextLayer.layer set from the next_layer hook, a "
    "layer of the proxy's own, starts_like_tls_record)": (
        None,
        ("layer.NextLayer.__init__", "self.layer", "self.context"),
        ("layer.NextLayer.data_client", "(self"),
        ("layer.Layer", "._handle_event", ".context"),
        ("commands.SendData", "(connection, data"),
        ("commands.CloseConnection", "(connection"),
        ("starts_like_tls_record", "(d"),
        ("ReverseMode", ".scheme"),
    ),
    "mitmproxy's failure texts (FailureKind)": (None, *MITMPROXY_TEXTS),
    "the hook dispatch (addonmanager.traverse, AddonManager._iter_hooks, trigger_event)": (
        Feature.FAST_DISPATCH,
        ("addonmanager.traverse", "sha256:bad3d9f88bdf9269"),
        ("addonmanager.AddonManager._iter_hooks", "sha256:350b419ab7284091"),
        ("addonmanager.AddonManager.trigger_event", "sha256:b763c59bc4992e33"),
    ),
    "_http1.make_body_reader and h11's ChunkedReader": (
        Feature.TRAILER_REFUSAL,
        ("_http1.make_body_reader", "(expected_size"),
        ("_http1.Http1Client.read_headers", "make_body_reader(expected_size)"),
    ),
    "the client's TLS layer (ClientTLSLayer.tls, send_data; NextLayer.layer)": (
        Feature.TLS_STREAM_END,
        ("tls.TLSLayer.send_data", "self.tls"),
        ("layer.NextLayer.__init__", "self.layer"),
        ("server.ConnectionHandler.__init__", "self.layer = "),
    ),
    "ConnectionHandler.timeout_watchdog.last_activity": (
        Feature.BODY_ACTIVITY,
        ("server.TimeoutWatchdog", ".last_activity"),
    ),
    "an upstream connection's state before reuse (ConnectionState.CAN_READ)": (
        Feature.STALE_UPSTREAMS,
        ("HttpLayer.get_connection", "connection.connected"),
    ),
}


def verify() -> list[str]:
    """Check every touch; the warnings for features switched off. Raises `MitmproxyChanged` when a
    touch security depends on is broken (then nothing of the addon may run)."""
    if _import_error is not None:
        raise MitmproxyChanged(f"mitmproxy changed: {_import_error}; the proxy needs mitmproxy 12.3.1")
    global _off
    refused, warnings, off = [], [], set()
    for name, (feature, *checks) in TOUCHES.items():
        problems = []
        for check in checks:
            try:
                problems.append(_has(*check))
            except Exception as e:  # noqa: BLE001 - a check that cannot run is a failed check
                problems.append(f"{check[0]}: {type(e).__name__}: {e}")
        if not (problem := "; ".join(p for p in problems if p)):
            continue
        if feature is None:
            refused.append(f"{name}: {problem}")
        else:
            off.add(feature)
            warnings.append(f"mitmproxy changed ({name}: {problem}): switched off: {feature.value}")
    _off = off
    if refused:
        raise MitmproxyChanged(
            "the proxy does not start: mitmproxy's internals it relies on for security changed "
            "(docs/mitmproxy-internals.md; the proxy needs mitmproxy 12.3.1): " + " | ".join(refused)
        )
    return warnings


# ---------------------------------------------------------------------------------------------
# HTTP/1 helpers and proxy modes


def is_reverse(mode: Any) -> bool:
    """Whether a proxy mode (a connection's, or a `mode` option's spec) is a reverse proxy's."""
    return isinstance(ProxyMode.parse(mode) if isinstance(mode, str) else mode, ReverseMode)


async def rebind_listeners(master: Any) -> None:
    """Stop and start mitmproxy's listeners, so that a changed listen_host applies. Raises
    `MitmproxyChanged` when that cannot be done (the proxy may be listening on every address)."""
    servers = getattr(master.addons.get("proxyserver"), "servers", None)
    if servers is None or not callable(getattr(servers, "update", None)):
        raise MitmproxyChanged("cannot rebind mitmproxy's listeners to loopback (Proxyserver.servers is gone)")
    if not len(servers):
        return
    modes = [ProxyMode.parse(m) for m in master.options.mode]
    await servers.update([])
    if not await servers.update(modes):
        raise MitmproxyChanged("mitmproxy could not listen again on loopback")


def plain_reverse_tls(nextlayer: Any) -> bool:
    """Whether a connection's first bytes, on a `reverse:http://` listener, are a TLS record (where
    mitmproxy would put a TLS layer under the HTTP one): the connection's first layer decision only."""
    context = nextlayer.context
    mode = context.client.proxy_mode
    if not isinstance(mode, ReverseMode) or mode.scheme != "http" or len(context.layers) != 1:
        return False
    return context.client.transport_protocol == "tcp" and starts_like_tls_record(nextlayer.data_client())


def answer_and_close_raw(nextlayer: Any, data: bytes) -> None:
    """Make the connection's next layer one that writes `data` to the client as it is and closes."""
    nextlayer.layer = _raw_answer_layer()(nextlayer.context, data)


@functools.cache
def _raw_answer_layer() -> type:
    class RawAnswer(layer.Layer):
        """Writes its bytes to the client and closes the connection; reads nothing more."""

        def __init__(self, context: Any, data: bytes) -> None:
            super().__init__(context)
            self.data = data

        def _handle_event(self, event: Any) -> Generator[Any, Any, None]:
            if isinstance(event, events.Start):
                yield commands.SendData(self.context.client, self.data)
                yield commands.CloseConnection(self.context.client)

    return RawAnswer


# ---------------------------------------------------------------------------------------------
# Live connections: mitmproxy's connection handlers and their transports


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
        if isinstance(current, tls.ClientTLSLayer) and current.conn is flow.client_conn:
            if current.tls is None:
                return None
            return b"".join(c.data for c in current.send_data(data) if isinstance(c, commands.SendData))
        current = current.layer if isinstance(current, layer.NextLayer) else getattr(current, "child_layer", None)
        if current is None:
            return None
    return None


# ---------------------------------------------------------------------------------------------
# Patches: the error page, trailers, the HTTP/1 server layer's buffer, the hook dispatch

_saved: dict[str, Any] = {}


def install_error_page(make: Callable[[int, str], bytes]) -> None:
    if "error_page" not in _saved:
        _saved["error_page"] = _http1.make_error_response
        _http1.make_error_response = make  # type: ignore[assignment]


def install_trailer_refusal() -> None:
    if "body_reader" not in _saved and available(Feature.TRAILER_REFUSAL):
        original = _saved["body_reader"] = _http1.make_body_reader

        class NoTrailersReader(ChunkedReader):
            def __call__(self, buf: Any) -> Any:
                event = read_chunk(self, buf)  # (once per piece of every chunked answer: no super() lookup)
                if type(event) is end_of_message and event.headers:
                    raise h11.RemoteProtocolError(TRAILERS)
                return event

        read_chunk, end_of_message = ChunkedReader.__call__, h11.EndOfMessage

        def body_reader(expected_size: int | None) -> Any:
            return NoTrailersReader() if expected_size is None else original(expected_size)

        _http1.make_body_reader = body_reader


def uninstall_patches() -> None:
    if (page := _saved.pop("error_page", None)) is not None:
        _http1.make_error_response = page
    if (reader := _saved.pop("body_reader", None)) is not None:
        _http1.make_body_reader = reader
    if _saved.pop("handle_event", None) is not None:
        del _http1.Http1Server._handle_event  # back to Http1Connection's


_policy: BufferPolicy | None = None
_PHASES: tuple[Phase, ...] = ("read_headers", "read_body", "wait")  # the states in which bytes wait unparsed: a `Phase`


def _bounded_handle_event(self: Any, event: Any) -> Generator[Any, Any, None]:
    if type(event) is ResponseData:  # a piece of the answer going out (it only makes data to send): as it is
        return _http1.Http1Connection._handle_event(self, event)
    return _guarded_handle_event(self, event)


def _guarded_handle_event(self: Any, event: Any) -> Generator[Any, Any, None]:
    policy = _policy
    for command in _http1.Http1Connection._handle_event(self, event):
        if policy is not None and isinstance(command, ReceiveHttp) and isinstance(command.event, RequestData):
            if self.request is not None and (refusal := policy.body_data(self.request, len(command.event.data))):
                yield from _refuse(self, policy, refusal)
                return
        yield command
        if policy is not None and type(command) is commands.CloseConnection and command.connection is self.conn:
            policy.closing(self.conn)
    if policy is None or not isinstance(event, events.DataReceived):
        return
    phase = next((name for name in _PHASES if self.state == getattr(self, name)), None)
    if phase is not None and (refusal := policy.unparsed(phase, len(self.buf), self.conn.peername)):
        yield from _refuse(self, policy, refusal)


def _refuse(self: Any, policy: BufferPolicy, refusal: Refusal) -> Generator[Any, Any, None]:
    self.buf = type(self.buf)()  # what was buffered is dropped at once
    if refusal.answer is not None and not policy.answer_and_close(self.conn, refusal.answer):
        yield commands.SendData(self.conn, refusal.answer)
    yield commands.CloseConnection(self.conn)
    if refusal.answer is None:
        policy.closing(self.conn)
    if refusal.fail_request and self.stream_id is not None and (refusal.too_large or not self.request_done):
        code = ErrorCode.REQUEST_TOO_LARGE if refusal.too_large else ErrorCode.GENERIC_CLIENT_ERROR
        yield ReceiveHttp(RequestProtocolError(self.stream_id, refusal.message, code=code))
    self.state = self.done


def install_buffer_policy(policy: BufferPolicy) -> None:
    global _policy
    _policy = policy
    if "handle_event" not in _saved:
        _saved["handle_event"] = True
        _http1.Http1Server._handle_event = _bounded_handle_event  # type: ignore[method-assign]


# mitmproxy's own trigger_event while the fast path serves (on the class: a reloaded script finds it)
_ORIGINAL_DISPATCH = "_ollama_proxy_original_trigger_event"


def replace_dispatch(trigger_event: Callable[..., Any] | None) -> bool:
    """`trigger_event` in place of `AddonManager.trigger_event` (None: mitmproxy's own back), only over
    the dispatch it was written for; True if it serves."""
    manager = addonmanager.AddonManager
    if trigger_event is None:
        if (original := getattr(manager, _ORIGINAL_DISPATCH, None)) is not None:
            manager.trigger_event = original  # type: ignore[method-assign]
            delattr(manager, _ORIGINAL_DISPATCH)
        return False
    if getattr(manager, _ORIGINAL_DISPATCH, None) is None:
        if not available(Feature.FAST_DISPATCH):
            return False
        setattr(manager, _ORIGINAL_DISPATCH, manager.trigger_event)
    manager.trigger_event = trigger_event  # type: ignore[method-assign]
    return True


def dispatch_replaced() -> bool:
    return getattr(addonmanager.AddonManager, _ORIGINAL_DISPATCH, None) is not None
