"""The typed record of one flow the proxy handles, and the ways it answers.

`Exchange` is everything the steps of `addon.proxy` know about one flow: what the client asked
for, where it went upstream, how it ended, and the per-flow state of the guards (the client's
key, the upstream key held for the wire, the timeout watch). The proxy keeps it by flow id from
the request's headers to its `response` or `error` hook; nothing else stores per-flow state.

What a saved flow keeps of it is `Exchange.record()`, written to `flow.metadata["ollama"]`
(serialisable: saved flows, the content views and the collector read it), next to
`ollama_request` (the client's body), `upstream_response` (the upstream's raw answer) and
`upstream_headers`, each kept up to `body_view_limit` bytes. The keys of the record:
`method`, `route` (the client's), `model` (as the client named it), `stream`, `server` (the
name of the upstream server it went to), `route_rule` (the routing rule that chose it: catalog,
listed, pattern, default), `upstream_route` and `upstream_model` (only when the flow went
upstream), `upstream_status`, `key` (the name of the client key it presented, addon.guard.keys),
`usage` (`prompt_tokens`, `completion_tokens`), `error`, `warning`.

Replies (`addon.reply`): an endpoint answers a request with an `Answer` (local: status, body,
content type) or a `Forward` (what to send upstream). `respond`, `send_upstream` and `replace_answer` apply
them to the flow; `Relay` is the `flow.response.stream` callable of every converted or relayed
stream. `addon.flow_line.finish` writes the flow's comment, marker and one log line (for a flow
that went well, only at `flow_detail` ≥ 1: `flow_log`, here).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from mitmproxy import http

from addon import mitm_internals as fence
from addon.guard import secrets, timeouts, upstream
from addon.reply import Answer, Forward, Plan
from addon.translate.response import Clock
from addon.translate.stream import ChunkStream
from addon.wire.ollama import dumps_body
from addon.wire.openai import Usage
from addon.wire.sse import MAX_EVENT

if TYPE_CHECKING:
    from addon.endpoints.base import Endpoint, StreamConverter
    from addon.guard.keys import ClientKey
    from addon.settings import Settings

_monotonic = time.monotonic  # (read once per piece of every stream)

logger = logging.getLogger("ollama_proxy")
# The line of a flow that went well: at info level only at flow_detail >= 1 (`settings.log_flows`: the
# proxy's configure sets this logger's level): a log record costs more than the rest of `flow_line.finish`, since mitmproxy hands
# every record to every addon (the deprecated `add_log` event) before printing it.
flow_log = logging.getLogger("ollama_proxy.flows")

# flow.metadata keys, serialisable so that saved flows keep them
META = "ollama"  # Exchange.record(): what the client asked for and how it went
CLIENT_BODY = "ollama_request"  # the client's original request body
UPSTREAM_BODY = "upstream_response"  # the upstream's raw answer (the SSE text of a stream)
UPSTREAM_HEADERS = "upstream_headers"  # ... and its headers, as [name, value] pairs

FAILED_MARKER = ":red_circle:"
MAX_ERROR = 1024  # characters of the error message in the log line and comment (it may quote client text)


# ---------------------------------------------------------------------------------------------
# The record


class Exchange:
    """One flow the proxy handles: the client's request, the upstream's part, and the guards' state."""

    __slots__ = (
        "client_authorization",
        "close",
        "cors",
        "early",
        "endpoint",
        "error",
        "expired",
        "failure",
        "flow",
        "forwarded_key",
        "http10",
        "key",
        "method",
        "model",
        "plan",
        "relay",
        "route",
        "route_rule",
        "sent_at",
        "sent_key",
        "server",
        "server_named",
        "sse_event_limit",
        "start_ns",
        "stream",
        "timeout",
        "upstream_model",
        "upstream_route",
        "upstream_status",
        "usage",
        "warning",
        "wire_authorization",
    )

    def __init__(self, method: str, route: str, start: float) -> None:
        self.method = method
        self.route = route  # the client's path, without the query
        self.start_ns = int(start * 1e9)
        self.endpoint: Endpoint | None = None
        self.model: str | None = None  # as the client named it
        self.stream = False
        self.server: str | None = None  # the upstream server's name (addon.upstreams)
        self.route_rule: str | None = None  # the routing rule that chose it
        self.server_named = False  # the log line names the server (several are configured)
        self.upstream_route: str | None = None  # None: answered locally
        self.upstream_model: str | None = None
        self.upstream_status: int | None = None
        self.plan: Plan | None = None  # the endpoint's own per-flow record
        self.usage: Usage | None = None
        self.error: str | None = None
        self.warning: str | None = None
        # The guards' per-flow state (addon.guard): never in the record.
        self.client_authorization: str | None = None  # the client's header, taken out of the flow
        self.key: ClientKey | None = None  # the client key it presented (addon.guard.keys): its name is recorded
        self.forwarded_key: str | None = None  # the client's bearer, to go upstream (forward_client_key)
        self.wire_authorization: str | None = None  # the upstream header, held for the wire only
        self.sent_key = ""  # the key sent upstream: hidden in what the proxy writes about this flow
        self.sse_event_limit = MAX_EVENT  # bytes of one SSE event or line (sse_event_limit)
        # Set when the proxy itself ends the upstream's part (upstream_body_limit, sse_event_limit,
        # an answer it refuses): the status and message the client gets instead of mitmproxy's error.
        self.failure: tuple[int, str] | None = None
        self.flow: http.HTTPFlow | None = None  # while the proxy holds the exchange (redacted at exit)
        self.sent_at = 0.0  # time.monotonic() when the request went upstream; 0: it did not
        self.expired = ""  # upstream_timeout closed the upstream connection: "connect", "handshake" or "open"
        self.timeout = 0.0  # the server's upstream_timeout, seconds (0: no limit)
        self.cors: tuple[tuple[str, str], ...] = ()  # the CORS headers of its answer (an allowed Origin)
        self.close = False  # the client asked to close the connection after the answer
        self.http10 = False  # an HTTP/1.0 client: no chunked encoding
        self.early = False  # answered from its headers (addon.guard.early)
        self.relay: Relay | None = None

    @property
    def forwarded(self) -> bool:
        """Whether the request was sent upstream (rather than answered locally)."""
        return self.upstream_route is not None

    def clock(self) -> Clock:
        return Clock(start_ns=self.start_ns)

    def warn(self, warnings: list[str]) -> None:
        if warnings:
            logger.warning("%s %s: %s", self.route, self.model, "; ".join(warnings))

    def record(self) -> dict[str, Any]:
        """The serialisable summary kept in `flow.metadata["ollama"]`."""
        out: dict[str, Any] = {"method": self.method, "route": self.route}
        if self.model is not None:
            out["model"] = self.model
        if self.key is not None:
            out["key"] = self.key.name
        if self.upstream_route is not None:
            out.update(
                stream=self.stream,
                server=self.server,
                route_rule=self.route_rule,
                upstream_route=self.upstream_route,
                upstream_model=self.upstream_model,
            )
        if self.upstream_status is not None:
            out["upstream_status"] = self.upstream_status
        if self.usage is not None:
            out["usage"] = self.usage.record()
        if self.error is not None:
            out["error"] = self.hidden(self.error)
        if self.warning is not None:
            out["warning"] = self.hidden(self.warning)
        return out

    def hidden(self, text: str) -> str:
        """Text the proxy writes about this flow, without any key: configured ones, and the one it sent upstream."""
        return secrets.scrub(text, (self.sent_key,))

    def publish(self, flow: http.HTTPFlow) -> None:
        flow.metadata[META] = self.record()


# ---------------------------------------------------------------------------------------------
# Applying replies


def respond(flow: http.HTTPFlow, exchange: Exchange, answer: Answer) -> None:
    """Answer the client locally."""
    flow.response = local_response(flow.request.method, exchange, answer)
    if answer.error is not None:
        exchange.error = answer.error


def local_response(method: str, exchange: Exchange, answer: Answer) -> http.Response:
    """The HTTP answer of a local `Answer` to a request with this method."""
    response = http.Response.make(answer.status, answer.body)
    if answer.content_type:
        response.headers["content-type"] = answer.content_type
    for name, value in answer.headers:
        response.headers[name] = value
    if method == "HEAD":  # GET's headers without the body: a body would corrupt a kept-alive connection
        response.content = b""
    elif answer.status in (204, 304):  # no body, and no Content-Length either (RFC 9110)
        response.headers.pop("content-length", None)
    finish_head(response, exchange)
    if method == "HEAD":  # after the framing: the length of the body a GET would get
        response.headers["content-length"] = str(len(answer.body))
    return response


def finish_head(response: http.Response, exchange: Exchange) -> None:
    """What every answer of the proxy carries: the CORS headers `guard.browser.origin_check` chose
    for an allowed Origin, `Connection: close` when the client asked for it (the rewritten request
    no longer says so, and mitmproxy closes only when the request or the answer does), and for an
    HTTP/1.0 client no chunked encoding."""
    for name, value in exchange.cors:
        if name == "Vary":
            present = {v.strip().lower() for v in ",".join(response.headers.get_all("vary")).split(",")}
            if value.lower() not in present:
                response.headers.add(name, value)
        else:
            response.headers[name] = value
    if exchange.close:
        response.headers["connection"] = "close"
    if not response.stream and response.raw_content is not None:
        upstream.frame_whole(response, exchange.http10)


def send_upstream(flow: http.HTTPFlow, exchange: Exchange, forward: Forward, settings: Settings) -> None:
    """Rewrite the flow in place into the request that mitmproxy then sends upstream."""
    target = forward.target
    server = target.server
    exchange.stream = forward.stream
    exchange.server = server.name
    exchange.route_rule = target.rule
    exchange.server_named = len(settings.servers) > 1
    exchange.timeout = float(server.upstream_timeout)
    exchange.upstream_route = forward.route
    exchange.upstream_model = forward.target.model
    exchange.sse_event_limit = settings.sse_event_limit
    request = flow.request
    if settings.body_view_limit and request.raw_content:
        flow.metadata[CLIENT_BODY] = request.raw_content[: settings.body_view_limit]
    if request.is_http2 or request.is_http3:
        # An HTTP/1.1 request from here on: mitmproxy would send a converted copy (which drops the
        # wire-only headers of `guard.secrets.WireHeaders`); the upstream is offered only HTTP/1.1.
        request.http_version = "HTTP/1.1"
        request.authority = ""
    body = dumps_body(forward.body) if forward.content is None else forward.content
    where = _upstream_url(server.url(forward.route))
    # What `request.url = ...`, `request.headers = Headers(...)` and `request.content = ...` make, built
    # from bytes once per URL: mitmproxy's setters parse the URL and look headers up on every request.
    fields = [
        (b"host", where.hostport),
        (b"content-type", forward.content_type.encode("utf-8", "surrogateescape")),
        (b"accept", b"text/event-stream" if forward.stream else b"application/json"),
        (b"accept-encoding", b"identity"),
    ]
    if user_agent := request.headers.get("user-agent"):
        fields.append((b"user-agent", user_agent.encode("utf-8", "surrogateescape")))
    if server.authorization:
        fields.append((b"authorization", server.authorization.encode("utf-8", "surrogateescape")))
    fields.append((b"content-length", b"%d" % len(body)))
    request.headers = http.Headers(tuple(fields))
    request.method = "POST"
    data = request.data
    data.scheme, data.host, data.port, data.path = where.scheme, where.host, where.port, where.path
    if data.authority:  # absolute-form (regular proxy mode): as the host setter does
        request.authority = where.hostport.decode()
    request.raw_content = body


class _UpstreamURL(NamedTuple):
    scheme: bytes
    host: str
    port: int
    path: bytes
    hostport: bytes  # the Host header: the host, and the port unless it is the scheme's default


@functools.lru_cache(maxsize=256)
def _upstream_url(full_url: str) -> _UpstreamURL:
    """An upstream URL as mitmproxy's `Request.url` setter parses it, once per URL."""
    scheme, host, port, path = fence.parse_url(full_url)
    name = host.decode("idna")
    return _UpstreamURL(scheme, name, port, path, fence.hostport(scheme.decode(), name, port).encode())


_KEPT_HEADERS = (b"retry-after", b"retry-after-ms", b"date")


def replace_answer(flow: http.HTTPFlow, exchange: Exchange, answer: Answer) -> None:
    """Rewrite the upstream response in place, keeping its timestamps for the flow views and the
    headers a client may act on (Retry-After) or that date the answer."""
    response = flow.response
    assert response is not None
    if answer.error is not None:
        exchange.error = answer.error
    if answer.keep_headers:
        response.content = answer.body
        return
    found: dict[bytes, list[bytes]] = {}
    for name, value in response.headers.fields:  # one pass, not a lookup per kept header
        if (key := name.lower()) in _KEPT_HEADERS:
            found.setdefault(key, []).append(value)
    fields = [(b"content-type", answer.content_type.encode())]
    for key in _KEPT_HEADERS:
        if key in found and (value := b", ".join(found[key])):  # as Headers.get joins repeated ones
            fields.append((key, value))
    fields.append((b"content-length", b"%d" % len(answer.body)))
    response.status_code = answer.status
    response.reason = fence.REASONS.get(answer.status, "")
    response.headers = http.Headers(tuple(fields))
    response.raw_content = answer.body  # what `response.content = ...` sets without a content-encoding


def keep_upstream_head(flow: http.HTTPFlow, exchange: Exchange, settings: Settings) -> None:
    """Note the upstream's own status and (allow-listed) headers before the answer is converted (for saved flows)."""
    response = flow.response
    if settings.body_view_limit and response is not None:
        exchange.upstream_status = response.status_code
        flow.metadata[UPSTREAM_HEADERS] = [[k, exchange.hidden(v)] for k, v in response.headers.items(multi=True)]


def keep_upstream_body(flow: http.HTTPFlow, exchange: Exchange, body: bytes, settings: Settings) -> None:
    """Keep the upstream's raw answer for the flow views, without any key in any form."""
    if settings.body_view_limit:
        flow.metadata[UPSTREAM_BODY] = hidden_bytes(exchange, body[: settings.body_view_limit])


def hidden_bytes(exchange: Exchange, data: bytes) -> bytes:
    """`Exchange.hidden` for bytes (kept bodies)."""
    data = secrets.scrub_bytes(data)
    if secrets.own_secret(exchange.sent_key):
        data = exchange.hidden(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    return data


# ---------------------------------------------------------------------------------------------
# Streams


class Relay:
    """The `flow.response.stream` callable: feeds the endpoint's converter, never lets an exception through.

    mitmproxy drops a chunk silently when the callable raises, and an empty item mid-stream
    would end a chunked response: so a converter bug becomes the converter's final error
    line or event, and nothing empty is returned. It notes when the upstream last sent
    something (for upstream_timeout), hides configured keys (in any form) in every piece it
    sends (an upstream may echo them in any event), calls `on_abort` once when the converter
    gave up on the upstream's stream (`sse_event_limit`: the rest is not worth reading), and keeps
    up to `keep` bytes of the upstream stream and of the answer for the flow views.
    """

    __slots__ = (
        "called",
        "converter",
        "decoder",
        "first_piece",
        "framed",
        "keep",
        "keeping",
        "last_data",
        "on_abort",
        "sent",
        "upstream",
    )

    def __init__(
        self,
        converter: StreamConverter,
        keep: int,
        on_abort: Callable[[], None] | None = None,
        decoder: upstream.StreamDecoder | None = None,
    ) -> None:
        self.converter = converter
        self.decoder = decoder  # a compressed stream's Content-Encoding, undone before the converter reads it
        # A converter whose lines are fixed parts around one JSON string (the Ollama text line): such a line is
        # scanned for keys by its string (`secrets.FramedScan`, the same answer as a scan of the whole line).
        self.framed: tuple[ChunkStream, secrets.FramedScan] | None = None
        if isinstance(converter, ChunkStream) and converter.frame is not None and decoder is None:
            self.framed = (converter, secrets.FramedScan(*converter.frame))
        self.called = False
        self.keep = keep
        self.keeping = keep > 0  # until both copies are `keep` bytes long
        self.upstream = bytearray()
        self.sent = bytearray()
        self.last_data = time.monotonic()
        self.first_piece = 0.0  # time.time() of the upstream's first piece (time to first token)
        self.on_abort = on_abort

    def __call__(self, data: bytes) -> list[bytes]:
        self.last_data = _monotonic()
        if not self.called:
            self.called = True
            self.first_piece = time.time()
        converter = self.converter
        try:
            if self.decoder is None:
                out = converter.feed(data) if data else converter.finish()
            else:
                out, data = self.decoder.through(converter, data)
        except Exception as e:  # a converter bug must not cost the client its answer
            logger.exception("stream conversion failed")
            out = converter.fail(f"proxy error while converting the stream: {e}") or b""
        if out:
            framed = self.framed
            if framed is not None and (span := framed[0].span) is not None:
                shown = framed[1].shows(out, span)
            else:
                shown = secrets.shows_secret(out)
            if shown:
                out = secrets.scrub_bytes(out)
        if (converter.aborted or (self.decoder is not None and self.decoder.refused)) and self.on_abort is not None:
            on_abort, self.on_abort = self.on_abort, None
            on_abort()
        if self.keeping:
            keep = self.keep
            if len(self.upstream) < keep:
                self.upstream += data[: keep - len(self.upstream)]
            if len(self.sent) < keep:
                self.sent += out[: keep - len(self.sent)]
            self.keeping = len(self.upstream) < keep or len(self.sent) < keep
        return [out] if out else []


def start_stream(
    flow: http.HTTPFlow,
    exchange: Exchange,
    converter: StreamConverter,
    settings: Settings,
    on_abort: Callable[[], None] | None = None,
    decoder: upstream.StreamDecoder | None = None,
) -> None:
    """Convert (or relay) the upstream's stream as it arrives (decoded first, if it is compressed), with
    the headers the client's format needs."""
    response = flow.response
    assert response is not None
    exchange.relay = Relay(converter, settings.body_view_limit, on_abort, decoder)
    response.stream = exchange.relay
    response.headers.pop("content-length", None)  # converted pieces and a closing error change the length
    if flow.request.http_version == "HTTP/1.0":
        # An HTTP/1.0 client cannot read chunked encoding: the answer ends with the connection.
        response.headers.pop("transfer-encoding", None)
        response.headers["connection"] = "close"
    else:
        response.headers["transfer-encoding"] = "chunked"
    if converter.content_type is not None:
        response.headers["content-type"] = converter.content_type
    if converter.final_error_on_break and not timeouts.ENDS_CONNECTION_WITH_ANSWER:
        # If the upstream breaks off, mitmproxy closes this connection right after the final error
        # line; where that line cannot carry the end of the connection with it, say so up front.
        response.headers["connection"] = "close"


def complete_stream(exchange: Exchange) -> Relay | None:
    """The relay of a stream the client has had whole (its final piece sent, no error), else None.

    Agents hang up as soon as they read a stream's last event (Codex after `response.completed`),
    which can be before mitmproxy has read the end of the upstream's body: the flow then fails
    with "Client disconnected." although the client got its whole answer.
    """
    relay = exchange.relay
    if relay is None or not relay.called or not relay.converter.ended or relay.converter.error is not None:
        return None
    return relay


def finish_stream(flow: http.HTTPFlow, exchange: Exchange, relay: Relay) -> None:
    """A relayed stream has ended: its usage, warnings and final error, and what the flow views show of it."""
    converter = relay.converter
    exchange.warn(converter.warnings)
    exchange.usage = converter.usage
    if converter.error is not None and exchange.error is None:
        exchange.error = converter.error
    if relay.keep:
        flow.metadata[UPSTREAM_BODY] = hidden_bytes(exchange, bytes(relay.upstream))
        response = flow.response
        if response is not None and response.raw_content is None:  # mitmproxy keeps no streamed body unless asked
            response.content = bytes(relay.sent)
