"""A bound on what mitmproxy buffers of a client's bytes before it can parse them.

mitmproxy's HTTP/1 server layer appends every byte a client sends to one receive buffer and
parses from there, without a limit where nothing can be parsed yet: request headers that never
end (`# FIXME: protect against header size DoS` in mitmproxy 12.3.1), a chunked body whose size
line never ends (`body_size_limit` counts decoded data only), or bytes sent after a complete
request while its answer is still being made. Any client that can connect, with or without the
key, could make the proxy hold all of it (hundreds of MB per connection). This module wraps the
HTTP/1 server layer's event handler (private: `_http1.Http1Server`, guarded by
tests/test_guard_client_buffer.py) and, after each piece the client sent, checks what is left
unparsed:

- request headers over `MAX_HEAD` (1 MB, Go's `http.DefaultMaxHeaderBytes`, what Ollama's server
  allows): `431 {"error": "request header fields too large ..."}` and the connection is closed;
- the framing of a chunked body (a size line, trailers) over `MAX_FRAMING` (64 KB): the request
  fails as mitmproxy fails a malformed chunked body (the connection is closed);
- a chunked request body of a flow the addon serves (`limit_body`, from `OllamaProxy.requestheaders`)
  over `request_body_limit`: its 413 at once, and the connection is closed;
- bytes that wait behind a request (pipelining) over `MAX_PIPELINED` (`request_body_limit`, or
  without one the body size ceiling, plus a head): the connection is closed.

Every close of a client connection this layer decides (these, a malformed request, a killed
flow, `Connection: close`) is also made sure of (`early.close_soon`): mitmproxy 12.3.1 can skip
closing the socket when its reader task is cancelled at the wrong moment, which would leave the
connection open, unread, for good.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import ErrorCode, RequestData, RequestProtocolError, ResponseData
from mitmproxy.utils import human

from addon.guard import early
from addon.guard.request_size import UPSTREAM_CEILING

logger = logging.getLogger("ollama_proxy")

MAX_HEAD = 1 << 20
MAX_FRAMING = 64 << 10
MAX_PIPELINED = (64 << 20) + MAX_HEAD  # set from request_body_limit by `install`

_installed = False


@dataclass(slots=True)
class BodyLimit:
    """`request_body_limit` for one request whose body has no declared length (chunked)."""

    limit: int
    answer: bytes  # the whole 413 answer, in the family's shape
    message: str
    seen: int = 0


_body_limits: weakref.WeakKeyDictionary[http.Request, BodyLimit] = weakref.WeakKeyDictionary()


def limit_body(request: http.Request, limit: BodyLimit) -> None:
    """Refuse this request with `limit.answer` as soon as its body crosses `limit.limit` bytes."""
    _body_limits[request] = limit


def _bounded_handle_event(self: Any, event: events.Event) -> Generator[commands.Command, Any, None]:
    if type(event) is ResponseData:  # a piece of the answer going out (only data to send): as mitmproxy has it
        return _http1.Http1Connection._handle_event(self, event)
    return _guarded_handle_event(self, event)


def _guarded_handle_event(self: Any, event: events.Event) -> Generator[commands.Command, Any, None]:
    for command in _http1.Http1Connection._handle_event(self, event):
        if isinstance(command, ReceiveHttp) and isinstance(command.event, RequestData):
            limit = _body_limits.get(self.request) if self.request is not None else None
            if limit is not None:
                limit.seen += len(command.event.data)
                if limit.seen > limit.limit:
                    yield from _refuse_body(self, limit)
                    return
        yield command
        if type(command) is commands.CloseConnection and command.connection is self.conn:
            early.close_soon(early.writer_of(self.conn))
    if not isinstance(event, events.DataReceived) or self.state in (self.passthrough, self.done):
        return
    left = len(self.buf)
    if self.state == self.read_headers and left > MAX_HEAD:
        peer = human.format_address(self.conn.peername)
        logger.warning("%s: request headers over %s: connection closed", peer, human.pretty_size(MAX_HEAD))
        message = f"request header fields too large: over {human.pretty_size(MAX_HEAD)}"
        answer = _http1.make_error_response(431, message)
        self.buf = type(self.buf)()
        if not early.answer_and_close(early.writer_of(self.conn), answer, self.conn):
            yield commands.SendData(self.conn, answer)
        yield commands.CloseConnection(self.conn)
        self.state = self.done
    elif self.state == self.read_body and left > MAX_FRAMING:
        yield from _fail(self, f"malformed chunked request body: a framing line over {human.pretty_size(MAX_FRAMING)}")
    elif self.state == self.wait and left > MAX_PIPELINED:
        yield from _fail(self, f"over {human.pretty_size(MAX_PIPELINED)} sent before the answer")


def _refuse_body(self: Any, limit: BodyLimit) -> Generator[commands.Command, Any, None]:
    """A body crossing request_body_limit: the 413, the connection closed, the request failed."""
    self.buf = type(self.buf)()
    if not early.answer_and_close(early.writer_of(self.conn), limit.answer, self.conn):
        yield commands.SendData(self.conn, limit.answer)
    yield commands.CloseConnection(self.conn)
    yield ReceiveHttp(RequestProtocolError(self.stream_id, limit.message, code=ErrorCode.REQUEST_TOO_LARGE))
    self.state = self.done


def _fail(self: Any, message: str) -> Generator[commands.Command, Any, None]:
    """As mitmproxy's HTTP/1 layer ends a request whose body it cannot parse: the connection is closed."""
    self.buf = type(self.buf)()  # (what was buffered is dropped at once)
    yield commands.CloseConnection(self.conn)
    early.close_soon(early.writer_of(self.conn))
    if self.stream_id is not None and not self.request_done:
        yield ReceiveHttp(RequestProtocolError(self.stream_id, message, code=ErrorCode.GENERIC_CLIENT_ERROR))
    self.state = self.done


def install(request_body_limit: int) -> None:
    global _installed, MAX_PIPELINED
    MAX_PIPELINED = (request_body_limit or UPSTREAM_CEILING) + MAX_HEAD
    if not _installed:
        _http1.Http1Server._handle_event = _bounded_handle_event  # type: ignore[method-assign]
        _installed = True


def uninstall() -> None:
    global _installed
    if _installed:
        del _http1.Http1Server._handle_event  # back to Http1Connection's
        _installed = False
