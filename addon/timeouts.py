"""Upstream faults after the request has gone out: a per-request timeout, and streams that break off.

mitmproxy has no per-request upstream timeout (`tcp_timeout` is an inactivity timeout of the
whole client connection, and `flow.kill()` does not abort a flow waiting on the upstream), and
when the upstream connection breaks in the middle of a streamed answer it just closes the client
connection: the client sees a truncated chunked body. `UpstreamWatch` fills both gaps:

- It watches every request sent upstream (one sweeper task for all of them, waking every
  quarter of the timeout, at most every second). When the upstream has sent nothing for
  `upstream_timeout` seconds (no response headers yet, or no body bytes since the last ones), it
  closes the upstream connection the way mitmproxy's own connection handler does (cancelling
  that connection's task): mitmproxy then fails the flow and calls the `error` hook.
- In `error` (mitmproxy waits for it before answering the client), a flow whose NDJSON stream
  has already started gets a final `{"error": "..."}` line and the end of the chunked body,
  written to the client connection directly; then mitmproxy closes it as before. The client thus
  gets a complete HTTP answer whose last line says the answer is incomplete and why.
- A flow that has sent nothing to the client yet gets mitmproxy's error answer, which
  `addon.errorpage` writes as JSON; for a timeout it is `504` with a message naming the option.
- Because mitmproxy closes the client connection after such an error, NDJSON streams are sent
  with `Connection: close`: no client sends its next request on a connection about to close.
- Streams of the /v1 pass-through routes are watched for silence too (`ActivityTap`), and a
  break or a stall ends them the same way, with a final `data: {"error": {...}}` event (the
  openai SDK raises it as an APIError) instead of a body cut off before `data: [DONE]`.

`ErrorFirst` sits before `OllamaProxy` in the script so that a failed flow has its message before
the proxy annotates and logs it; `UpstreamWatch` sits after it (it wraps the stream callable the
proxy sets in `responseheaders`).

The internals used (`Proxyserver.connections`, `ConnectionHandler.transports`, the HTTP/1 server
layer closing the connection after an error mid-answer) are guarded by tests/test_timeouts.py
for the pinned mitmproxy version.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import ctx, http

from addon import errorpage, redact, translate
from addon.openai_routes import SSERelay
from addon.routes import StreamRelay

logger = logging.getLogger("ollama_proxy")

META = "ollama"


class WatchedRelay(StreamRelay):
    """The stream callable, also noting when the upstream last sent something."""

    __slots__ = ("last_data",)

    def __init__(self, relay: StreamRelay) -> None:  # noqa: super().__init__ not called: every slot is copied
        for name in StreamRelay.__slots__:
            setattr(self, name, getattr(relay, name))
        self.last_data = time.monotonic()

    def __call__(self, data: bytes) -> list[bytes]:
        self.last_data = time.monotonic()
        out = super().__call__(data)
        # Only an error line can carry a key the upstream echoed; content is the model's own text.
        if out and self.converter.ended and redact.shows_secret(out[0]):
            out = [redact.scrub(out[0].decode("utf-8", "replace")).encode()]
        return out


class ActivityTap:
    """Any other stream of a translated flow (the /v1 routes' pass-through): noted, then relayed unchanged."""

    __slots__ = ("inner", "last_data")

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last_data = time.monotonic()

    def __call__(self, data: bytes):
        self.last_data = time.monotonic()
        return data if self.inner is True else self.inner(data)


def client_writer(flow: http.HTTPFlow):  # -> asyncio.StreamWriter | None
    """The writer of the flow's live client connection, from mitmproxy's connection handler."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    io = handler.transports.get(flow.client_conn) if handler is not None else None
    return getattr(io, "writer", None)


def close_server_connection(flow: http.HTTPFlow, reason: str) -> bool:
    """Close the flow's upstream connection (or abort its connect) as mitmproxy's close command does."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    if handler is None:
        return False
    target = (flow.request.host, flow.request.port)
    closed = False
    for connection, io in list(handler.transports.items()):
        if connection is flow.client_conn or io.handler is None or io.handler.done():
            continue
        # The flow's connection, or one still being opened for it: mitmproxy assigns
        # flow.server_conn only once the connect has succeeded.
        connecting = connection.timestamp_tcp_setup is None and tuple(connection.address or ())[:2] == target
        if connection is flow.server_conn or connecting:
            io.handler.cancel(reason)
            closed = True
    return closed


class ErrorFirst:
    """Placed before OllamaProxy: a failed flow gets its message before the proxy annotates and logs it."""

    def __init__(self, watch: UpstreamWatch) -> None:
        self.watch = watch

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.id in self.watch.started:
            self.watch.end_failed(flow)


def final_chunk(line: bytes) -> bytes:
    """The last chunk of a chunked HTTP/1.1 body holding `line`, and the end of the body."""
    return (b"%x\r\n%s\r\n" % (len(line), line) if line else b"") + b"0\r\n\r\n"


class UpstreamWatch:
    def __init__(self) -> None:
        self.timeout = 0.0
        self.started: dict[str, float] = {}  # flow id → when the request went upstream
        self.watched: dict[str, http.HTTPFlow] = {}  # flows the sweeper checks for silence
        self.sweeper: asyncio.Task | None = None  # one task for all flows, alive while any is watched
        self.expired: set[str] = set()

    def configure(self, updated: set[str]) -> None:
        if "upstream_timeout" not in ctx.options:
            return
        self.timeout = max(float(ctx.options.upstream_timeout), 0.0)
        # mitmproxy drops an idle client connection after tcp_timeout with an empty reply: keep it longer.
        if self.timeout and "tcp_timeout" in ctx.options and ctx.options.tcp_timeout <= self.timeout:
            ctx.options.tcp_timeout = int(self.timeout) + 30

    # -- hooks ----------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or "upstream_route" not in flow.metadata.get(META, {}):
            return
        self.started[flow.id] = time.monotonic()
        if self.timeout:
            self.watched[flow.id] = flow
            if self.sweeper is None or self.sweeper.done():
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # called outside mitmproxy's event loop (unit tests): nothing to watch with
                    return
                self.sweeper = loop.create_task(self._sweep(), name="upstream_timeout")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is not None and type(response.stream) is StreamRelay:
            response.stream = WatchedRelay(response.stream)
            # If the upstream breaks off, mitmproxy closes this connection right after the final
            # error line; saying so up front keeps clients from sending their next request on it.
            response.headers["connection"] = "close"
        elif response is not None and response.stream and "upstream_route" in flow.metadata.get(META, {}):
            response.stream = ActivityTap(response.stream)
            if isinstance(response.stream.inner, SSERelay):
                response.headers["connection"] = "close"  # as above: a break ends with an error event, then a close

    def response(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.id in self.started:  # (unless ErrorFirst has done it already)
            self.end_failed(flow)

    def end_failed(self, flow: http.HTTPFlow) -> None:
        """The `error` hook's work; `ErrorFirst` calls it before the proxy annotates the flow."""
        timed_out = flow.id in self.expired
        self._forget(flow)
        meta = flow.metadata.get(META)
        if meta is None or "upstream_route" not in meta or flow.error is None:
            return
        if flow.error.msg == "Client disconnected.":
            return  # nobody is left to tell; mitmproxy has already closed the upstream connection
        relay = flow.response.stream if flow.response is not None else None
        if timed_out and flow.server_conn.timestamp_tcp_setup is None:
            message = f"the upstream did not accept the connection within {self.timeout:g} s (upstream_timeout)"
        elif timed_out:
            message = f"the upstream sent nothing for {self.timeout:g} s (upstream_timeout)"
        else:
            message = f"the upstream connection broke off ({flow.error.msg})"
        sse = relay.inner if isinstance(relay, ActivityTap) else relay
        if isinstance(relay, StreamRelay):  # the client has the headers and maybe some lines
            self._end_stream(flow, relay, message + ": the answer is incomplete")
        elif isinstance(sse, SSERelay):  # a /v1 stream: its last event says why it ends here
            self._end_sse(flow, sse, message + ": the answer is incomplete")
        elif timed_out:
            errorpage.override(504, message)
        meta["error"] = message

    def done(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.watched.clear()

    # -- internals ------------------------------------------------------------------------------

    def _forget(self, flow: http.HTTPFlow) -> None:
        self.started.pop(flow.id, None)
        self.expired.discard(flow.id)
        self.watched.pop(flow.id, None)

    def last_activity(self, flow: http.HTTPFlow) -> float:
        last = self.started.get(flow.id, time.monotonic())
        response = flow.response
        if response is not None:
            stream = response.stream
            if isinstance(stream, (WatchedRelay, ActivityTap)):
                last = max(last, stream.last_data)
            elif response.timestamp_start:
                # headers arrived (a non-streamed body is still coming): count from then
                last = max(last, time.monotonic() - (time.time() - response.timestamp_start))
        return last

    async def _sweep(self) -> None:
        """Every quarter of the timeout (at most a second), close the upstream of each silent flow."""
        while self.watched and self.timeout:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = time.monotonic()
            for flow in [f for f in self.watched.values() if self.last_activity(f) + self.timeout <= now]:
                self.watched.pop(flow.id, None)
                self._expire(flow)

    def _expire(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.started:
            return
        self.expired.add(flow.id)
        logger.warning(
            "%s %s: no answer from the upstream for %g s (upstream_timeout); closing the upstream connection",
            flow.metadata[META].get("route"), flow.metadata[META].get("model"), self.timeout,
        )
        if not close_server_connection(flow, "upstream_timeout"):
            self.expired.discard(flow.id)

    def _end_sse(self, flow: http.HTTPFlow, relay: SSERelay, message: str) -> None:
        event = b"" if relay.done else relay.close_with_error(redact.scrub(message))
        writer = client_writer(flow)
        if writer is None or writer.is_closing() or flow.client_conn.alpn not in (None, b"", b"http/1.1"):
            return
        writer.write(final_chunk(event))

    def _end_stream(self, flow: http.HTTPFlow, relay: StreamRelay, message: str) -> None:
        converter = relay.converter
        line = b"" if converter.ended else translate.dumps_line({"error": message})
        converter.ended = True
        writer = client_writer(flow)
        if writer is None or writer.is_closing() or flow.client_conn.alpn not in (None, b"", b"http/1.1"):
            return
        writer.write(final_chunk(line))
        if isinstance(getattr(relay, "sent", None), bytearray):  # what the flow views show of the answer
            relay.sent += line
