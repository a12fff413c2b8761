"""Upstream faults after the request has gone out: a per-request timeout, and streams that break off.

mitmproxy has no per-request upstream timeout (`tcp_timeout` is an inactivity timeout of the
whole client connection, and `flow.kill()` does not abort a flow waiting on the upstream), and
when the upstream connection breaks in the middle of a streamed answer it just closes the client
connection: the client sees a truncated chunked body. `UpstreamWatch` (not an addon: `addon.proxy`
calls it at each step) fills both gaps:

- It watches every request sent upstream (one sweeper task for all of them, waking every
  quarter of the shortest timeout, at most every second). Each request has its server's
  `upstream_timeout` (`exchange.timeout`: the option, or its `[servers.NAME]` table's value).
  When the upstream has sent nothing for that many seconds (no response headers yet, or no body bytes since the last ones), it
  closes the upstream connection the way mitmproxy's own connection handler does (cancelling
  that connection's task): mitmproxy then fails the flow and calls the `error` hook.
- In `error` (mitmproxy waits for it before answering the client), a flow whose stream has
  already started gets its converter's final error piece (an Ollama stream: a `{"error": "..."}`
  line; a /v1 stream: an error event) and the end of the chunked body, written to the client connection directly; then
  mitmproxy closes it as before. The client thus gets a complete HTTP answer whose last line
  says the answer is incomplete and why.
- A flow that has sent nothing to the client yet gets mitmproxy's error answer, which
  `addon.errorpage` writes as JSON; for a timeout it is `504` with a message naming the option.
- Because mitmproxy closes the client connection after such an error, the end of that answer
  reaches the client together with the end of the connection (`write_last`: the last chunk and
  the FIN in one TCP segment, before mitmproxy's own close a few loop turns later): no client sends
  its next request on a connection about to close. Streams that end well keep their connection:
  no `Connection: close` up front, which cost every stream a new client connection and a new
  upstream connection (TTFT doubled on loopback; a TCP + TLS handshake per stream without the
  pool). Where TCP_CORK is missing (not Linux), streams still say `Connection: close`.
- A client that speaks TLS to the proxy (mitmproxy terminates it) gets those bytes as TLS records of
  its own session, made by mitmproxy's TLS layer of that connection (`to_client`), never in clear.
- Streams of the /v1 pass-through routes are watched for silence too, and a break or a stall
  ends them the same way, with a final `data: {"error": {...}}` event (the openai SDK raises it
  as an APIError) instead of a body cut off before `data: [DONE]`.

The connection handlers, transports and TLS layers are reached through the fence
(`addon.mitm_internals`, checked at load); a failure's kind is read there (`failure_kind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import time
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addon import mitm_internals as fence
from addon.guard import errorpage, secrets
from addon.mitm_internals import FailureKind

if TYPE_CHECKING:
    from addon.exchange import Exchange

logger = logging.getLogger("ollama_proxy")


def client_writer(flow: http.HTTPFlow) -> asyncio.StreamWriter | None:
    """The writer of the flow's live client connection."""
    return fence.client_writer(flow)


def to_client(flow: http.HTTPFlow, data: bytes) -> bytes | None:
    """The bytes to write on the client's socket for `data`: itself on a plain connection, its TLS
    records (made by mitmproxy's own TLS session of that client) on a TLS one; None if they cannot be made."""
    if not flow.client_conn.tls:
        return data
    try:
        return fence.encrypt_for_client(flow, data)
    except Exception:  # a session that cannot take more: nothing is written
        logger.debug("cannot encrypt the end of the stream", exc_info=True)
        return None


def drop_closed_upstreams(flow: http.HTTPFlow) -> None:
    """Keep mitmproxy from sending this request on an upstream connection the upstream has already closed.

    mitmproxy reuses the open upstream connection of a client connection for its next request. An
    upstream may close a kept-alive connection right after an answer (llama.cpp's router does after
    every answer, uvicorn and httplib after their keep-alive timeout): when the client's next
    request comes before mitmproxy has read that end, it is written into the closed connection and
    fails with 502 "the upstream closed the connection without answering". As httpcore and Go's
    transport do before reusing a connection, a connection whose socket already holds the
    upstream's end is marked half-closed here, so mitmproxy opens a new one (what it does itself
    once it has read the end). One `select` per open upstream connection, which there is only
    after an earlier request on the same client connection.
    """
    for connection, sock in fence.open_upstreams(flow):
        fd = sock.fileno() if sock is not None else -1
        if fd >= 0 and select.select([fd], [], [], 0)[0] and peer_closed(fd):
            fence.mark_upstream_closed(connection)


def peer_closed(fd: int) -> bool:
    """Whether the peer has ended (or reset) this readable TCP connection: its next byte is the end."""
    try:
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            return duplicate.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def final_chunk(line: bytes) -> bytes:
    """The last chunk of a chunked HTTP/1.1 body holding `line`, and the end of the body."""
    return (b"%x\r\n%s\r\n" % (len(line), line) if line else b"") + b"0\r\n\r\n"


# Linux: data held back (TCP_CORK) goes out in one segment with the FIN that follows it.
_CORK: int | None = getattr(socket, "TCP_CORK", None)
# Whether the end of a broken-off answer reaches the client together with the end of its connection
# (`write_last`); where it cannot, streams are sent with `Connection: close` (`exchange.start_stream`).
ENDS_CONNECTION_WITH_ANSWER = _CORK is not None


def write_last(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write the last bytes of a client connection that mitmproxy is about to close, and end it with them.

    mitmproxy closes the connection a few loop turns after the `error` hook; a client that has read
    the end of the answer before then may already have sent its next request on it (and lost it).
    Corked, the data and the FIN leave in one TCP segment: the client sees the end of the answer and
    the end of the connection at once, and opens a new one for its next request.
    """
    sock = writer.get_extra_info("socket")
    corked = False
    if _CORK is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
            corked = True
    writer.write(data)
    if writer.can_write_eof():
        writer.write_eof()
    if corked:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)


def keep_client_connection(options: Any, timeout: float) -> None:
    """mitmproxy drops an idle client connection after tcp_timeout with an empty reply: keep it longer."""
    if timeout and "tcp_timeout" in options and options.tcp_timeout <= timeout:
        options.tcp_timeout = int(timeout) + 30


class UpstreamWatch:
    """upstream_timeout for every request sent upstream, and the end of streams that break off."""

    def __init__(self) -> None:
        self.watched: dict[str, tuple[http.HTTPFlow, Exchange]] = {}  # flows the sweeper checks for silence
        self.sweeper: asyncio.Task[None] | None = None  # one task for all flows, alive while any is watched

    def start(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """The request goes upstream now."""
        exchange.sent_at = time.monotonic()
        if not exchange.timeout:
            return
        self.watched[flow.id] = (flow, exchange)
        if self.sweeper is None or self.sweeper.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside mitmproxy's event loop (unit tests): nothing to watch with
                return
            self.sweeper = loop.create_task(self._sweep(), name="upstream_timeout")

    def forget(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        exchange.sent_at = 0.0
        self.watched.pop(flow.id, None)

    def cut(self, flow: http.HTTPFlow, exchange: Exchange, status: int, message: str) -> None:
        """The proxy ends the upstream's part itself (a limit, an answer it refuses): the client is told
        `message` (the error page with `status`, or the stream's final error), not mitmproxy's error."""
        exchange.failure = (status, message)
        self.forget(flow, exchange)
        fence.abort_upstream(flow, message)

    def end_failed(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """A flow that went upstream failed: say why, in its stream or in the error page."""
        timed_out = exchange.expired
        self.forget(flow, exchange)
        kind = fence.failure_kind(flow.error.msg) if flow.error is not None else FailureKind.CLIENT_GONE
        if flow.error is None or kind is FailureKind.CLIENT_GONE:
            return  # nobody is left to tell; mitmproxy has already closed the upstream connection
        if exchange.failure is not None:
            status, message = exchange.failure
            if exchange.relay is not None:
                self._end_stream(flow, exchange, message)
            else:
                errorpage.override(status, message)
            exchange.error = message
            return
        if kind is FailureKind.BODY_SIZE_LIMIT:  # mitmproxy's own cap on a buffered answer (set in reverse mode)
            message = f"the upstream's answer is larger than mitmproxy's body_size_limit ({flow.error.msg})"
            errorpage.override(502, message)
            exchange.error = message
            return
        if timed_out == "handshake":
            message = (
                f"the upstream did not complete the TLS handshake within {exchange.timeout:g} s (upstream_timeout)"
            )
        elif timed_out == "connect" or (timed_out and flow.server_conn.timestamp_tcp_setup is None):
            message = f"the upstream did not accept the connection within {exchange.timeout:g} s (upstream_timeout)"
        elif timed_out:
            message = f"the upstream sent nothing for {exchange.timeout:g} s (upstream_timeout)"
        else:
            message = f"the upstream connection broke off ({flow.error.msg})"
        if exchange.relay is not None:  # the client has the headers and maybe some lines
            self._end_stream(flow, exchange, message + ": the answer is incomplete")
        elif timed_out:
            errorpage.override(504, message)
        exchange.error = message

    def done(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.watched.clear()

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def last_heard(flow: http.HTTPFlow, exchange: Exchange) -> float:
        """When the upstream last showed it is alive (time.monotonic()); a client that does not read
        the stream (backpressure: mitmproxy stops reading the upstream) counts as activity."""
        now = time.monotonic()
        last = exchange.sent_at or now
        response = flow.response
        relay = exchange.relay
        if relay is not None:
            writer = client_writer(flow)
            transport = getattr(writer, "transport", None)
            if transport is not None and transport.get_write_buffer_size() > 0:
                relay.last_data = now  # the client's silence, not the upstream's
            last = max(last, relay.last_data)
        elif response is not None and response.timestamp_start:
            # Headers arrived, a non-streamed body is still coming (mitmproxy buffers it without a hook):
            # the connection's inactivity watchdog notes each piece that arrives.
            seen = response.timestamp_start
            seen = max(seen, fence.body_last_seen(flow) or seen)
            last = max(last, now - (time.time() - seen))
        return last

    async def _sweep(self) -> None:
        """Every quarter of the shortest timeout (at most a second), close the upstream of each silent flow."""
        while self.watched:
            await asyncio.sleep(min(1.0, min(e.timeout for _, e in self.watched.values()) / 4))
            now = time.monotonic()
            silent = [(f, e) for f, e in self.watched.values() if self.last_heard(f, e) + e.timeout <= now]
            for flow, exchange in silent:
                self.watched.pop(flow.id, None)
                self._expire(flow, exchange)

    def _expire(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        if not exchange.sent_at:
            return
        exchange.expired = "open"
        logger.warning(
            "%s %s: no answer from the upstream for %g s (upstream_timeout); closing the upstream connection",
            exchange.route,
            exchange.model,
            exchange.timeout,
        )
        exchange.expired = fence.abort_upstream(flow, "upstream_timeout")

    def _end_stream(self, flow: http.HTTPFlow, exchange: Exchange, message: str) -> None:
        relay = exchange.relay
        assert relay is not None
        converter = relay.converter
        if not converter.final_error_on_break:
            return
        line = converter.fail(secrets.scrub(message)) or b""
        writer = client_writer(flow)
        if writer is None or writer.is_closing() or flow.client_conn.alpn not in (None, b"", b"http/1.1"):
            return
        response = flow.response
        chunked = response is not None and "chunked" in response.headers.get("transfer-encoding", "").lower()
        # (an HTTP/1.0 client's answer is not chunked: it ends with the close)
        data = to_client(flow, final_chunk(line) if chunked else line)
        if data is None:
            return
        write_last(writer, data)
        if relay.keep:  # what the flow views show of the answer
            relay.sent += line
