"""A bound on what mitmproxy buffers of a client's bytes before it can parse them.

mitmproxy's HTTP/1 server layer appends every byte a client sends to one receive buffer and
parses from there, without a limit where nothing can be parsed yet: request headers that never
end (`# FIXME: protect against header size DoS` in mitmproxy 12.3.1), a chunked body whose size
line never ends (`body_size_limit` counts decoded data only), or bytes sent after a complete
request while its answer is still being made. Any client that can connect, with or without the
key, could make the proxy hold all of it (hundreds of MB per connection). The fence
(`addon.mitm_internals`, checked at load) wraps the HTTP/1 server layer's event handler and asks
this module's `POLICY`, after each piece the client sent, about what is left unparsed:

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mitmproxy import connection, http

from addon import mitm_internals as fence
from addon.guard import early, errorpage
from addon.guard.request_size import UPSTREAM_CEILING

logger = logging.getLogger("ollama_proxy")

MAX_HEAD = 1 << 20
MAX_FRAMING = 64 << 10
MAX_PIPELINED = (64 << 20) + MAX_HEAD  # set from request_body_limit by `install`


# What the HTTP/1 server layer is doing while bytes wait unparsed (its state's name)
Phase = Literal["read_headers", "read_body", "wait"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the HTTP/1 server layer does instead: write `answer` (if any), close the connection, and
    fail the request under way (as too large, or as a client error) unless `fail_request` is False."""

    message: str
    answer: bytes | None = None
    too_large: bool = False
    fail_request: bool = True


@dataclass(frozen=True, slots=True)
class BufferPolicy:
    """The decisions the fence's wrapped HTTP/1 server layer asks for."""

    body_data: Callable[[http.Request, int], Refusal | None]  # a piece of a request body arrived
    unparsed: Callable[[Phase, int, Any], Refusal | None]  # what is held unparsed after a read
    answer_and_close: Callable[[connection.Connection, bytes], bool]  # a lingering close with `answer`
    closing: Callable[[connection.Connection], None]  # the layer closes this client connection


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


def body_data(request: http.Request, size: int) -> Refusal | None:
    """A piece of a request body arrived: a chunked body crossing request_body_limit gets its 413."""
    limit = _body_limits.get(request)
    if limit is None:
        return None
    limit.seen += size
    return Refusal(limit.message, limit.answer, too_large=True) if limit.seen > limit.limit else None


def unparsed(phase: Phase, size: int, peer: Any) -> Refusal | None:
    """What the HTTP/1 server layer holds unparsed after a read: a refusal when it is over its bound."""
    if phase == "read_headers" and size > MAX_HEAD:
        bound = fence.pretty_size(MAX_HEAD)
        logger.warning("%s: request headers over %s: connection closed", fence.format_address(peer), bound)
        message = f"request header fields too large: over {bound}"
        return Refusal(message, errorpage.json_error_response(431, message), fail_request=False)
    if phase == "read_body" and size > MAX_FRAMING:
        return Refusal(f"malformed chunked request body: a framing line over {fence.pretty_size(MAX_FRAMING)}")
    if phase == "wait" and size > MAX_PIPELINED:
        return Refusal(f"over {fence.pretty_size(MAX_PIPELINED)} sent before the answer")
    return None


def answer_and_close(conn: connection.Connection, answer: bytes) -> bool:
    return early.answer_and_close(fence.writer_of(conn), answer, conn)


def closing(conn: connection.Connection) -> None:
    early.close_soon(fence.writer_of(conn))


POLICY = BufferPolicy(body_data, unparsed, answer_and_close, closing)


def install(request_body_limit: int) -> None:
    global MAX_PIPELINED
    MAX_PIPELINED = (request_body_limit or UPSTREAM_CEILING) + MAX_HEAD
    fence.install_buffer_policy(POLICY)
