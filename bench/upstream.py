"""A fast fake OpenAI-compatible upstream for benchmarks (stdlib only, raw asyncio).

HTTP/1.1 with keep-alive, one asyncio.Protocol per connection, no framework.

Routes
  POST /v1/chat/completions   (also /chat/completions)
       "stream": false/absent -> one `chat.completion` JSON (Content-Length), shaped like
                                 shared/openai-recordings/chat/plain-text.json
       "stream": true         -> `text/event-stream`, Transfer-Encoding: chunked, one SSE event
                                 per HTTP chunk, shaped like chat-stream/plain-text-include-usage.json:
                                 a role chunk, N content chunks, a finish_reason chunk, a usage
                                 chunk (choices: []) and `data: [DONE]`.
  GET  /v1/models             a small model list (--models: these ids instead)

Stream shape is chosen per request through the *model name*, because every proxy under test
passes the model through unchanged while most drop unknown headers or body fields:
  model "bench-n200-d20"  -> 200 content events, 20 ms before each one (decimals allowed: d0.5)
  model "bench-n40-d250-p37.5"
                          -> the same, on a fixed schedule: event k at the (k+1)-th instant after
                             the request arrived where monotonic time mod 250 ms = 37.5 ms. Many
                             streams with phases spread over the period then write evenly, however
                             their requests bunched on the way in (a proxy saturated while it opens
                             1000 streams passes their requests on in bursts, and a schedule tied to
                             arrival would keep those bursts for the life of the streams).
Without those parts the server defaults (--events, --delay-ms) apply.

Each content event carries its write time, `time.monotonic_ns()` taken just before
`transport.write`, inside the delta content as `@<ns>@` (e.g. " w17@81234567890123@").
CLOCK_MONOTONIC is system-wide on Linux, so a client process on the same machine can compute
the relay delay (upstream write -> client read) of every event, whatever proxy sits between.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import ssl
import sys
import time

MARK_RE = re.compile(rb"@(\d{6,})@")
_MODEL_N = re.compile(r"-n(\d+)")
_MODEL_D = re.compile(r"-d(\d+(?:\.\d+)?)")
_MODEL_P = re.compile(r"-p(\d+(?:\.\d+)?)")

ANSWER = (
    "Hello! I'm just a computer program, so I don't have feelings, "
    "but I'm here to help you. How can I assist you today?"
)

_STATIC_HEADERS = (
    b"openai-version: 2020-10-01\r\n"
    b"openai-processing-ms: 509\r\n"
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-limit-tokens: 50000000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
    b"x-ratelimit-remaining-tokens: 49999992\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\n"
    b"x-ratelimit-reset-tokens: 0s\r\n"
)

_date_second = 0
_date_text = b""


def _http_date() -> bytes:
    global _date_second, _date_text
    now = int(time.time())
    if _date_second != now:
        _date_second = now
        _date_text = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
    return _date_text


def stream_params(model: str, default_n: int, default_delay_s: float) -> tuple[int, float]:
    """(number of content events, delay before each in seconds) for a model name."""
    n, d = default_n, default_delay_s
    if m := _MODEL_N.search(model):
        n = min(int(m.group(1)), 1_000_000)
    if m := _MODEL_D.search(model):
        d = min(float(m.group(1)), 60_000.0) / 1000.0
    return n, d


def stream_phase(model: str) -> float | None:
    """The phase in seconds of a fixed event schedule ("-p<ms>" in the model name), or None."""
    if m := _MODEL_P.search(model):
        return min(float(m.group(1)), 60_000.0) / 1000.0
    return None


def first_slot(now: float, delay: float, phase: float) -> float:
    """The first instant after `now` where time mod `delay` equals `phase`."""
    return now - (now - phase) % delay + delay


def completion_body(req_id: str, model: str, created: int) -> bytes:
    return json.dumps(
        {
            "id": req_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": ANSWER,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 13,
                "completion_tokens": 31,
                "total_tokens": 44,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": None,
        },
        indent=2,  # the real API pretty-prints non-streamed bodies
    ).encode()


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class SSEBuilder:
    """Pre-formatted SSE events for one stream (the hot path is one `%` per event)."""

    def __init__(self, req_id: str, model: str, created: int):
        head = (
            '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            '"service_tier":"default","system_fingerprint":null,"choices":' % (req_id, created, json.dumps(model))
        ).encode()
        self.role = _chunk(
            b"data: " + head + b'[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"bZuWwpMP"}\n\n'
        )
        self._content = (
            b"data: " + head.replace(b"%", b"%%") + b'[{"index":0,"delta":{"content":" w%d@%d@"},"logprobs":null,'
            b'"finish_reason":null}],"usage":null,"obfuscation":"XjUSo1V9S"}\n\n'
        )
        self.finish = _chunk(
            b"data: " + head + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],'
            b'"usage":null,"obfuscation":"rxDa"}\n\n'
        )
        self.head = head

    def content(self, i: int, ts_ns: int) -> bytes:
        return _chunk(self._content % (i, ts_ns))

    def usage(self, n: int) -> bytes:
        return _chunk(
            b"data: "
            + self.head.replace(b"%", b"%%")
            + b'[],"usage":{"prompt_tokens":14,"completion_tokens":%d,"total_tokens":%d,'
            b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
            b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
            b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},'
            b'"obfuscation":"XXfZkThJc"}\n\n' % (n, n + 14)
        )

    done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self.events = 0
        self.connections = 0


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, server: FakeOpenAI):
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a stream is being written; further requests wait (HTTP/1.1)
        self.closed = False
        self._can_write: asyncio.Event | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.server.stats.connections += 1
        self.server.conns.add(self)

    def connection_lost(self, exc):
        self.closed = True
        self.server.conns.discard(self)
        if self._can_write is not None:
            self._can_write.set()

    def pause_writing(self):
        if self._can_write is None:
            self._can_write = asyncio.Event()
        self._can_write.clear()

    def resume_writing(self):
        if self._can_write is not None:
            self._can_write.set()

    def data_received(self, data: bytes):
        self.buf += data
        if len(self.buf) > 16 * 1024 * 1024:
            self._reply(413, b'{"error":{"message":"request too large"}}', close=True)
            return
        if not self.busy:
            self._process()

    # -- HTTP ----------------------------------------------------------------------------
    def _process(self) -> None:
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).split(b"\r\n")
            try:
                method, target, _version = lines[0].split(b" ", 2)
            except ValueError:
                self._reply(400, b'{"error":{"message":"bad request line"}}', close=True)
                return
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            pos = end + 4
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                chunked = bytearray()
                while True:
                    le = self.buf.find(b"\r\n", pos)
                    if le < 0:
                        return
                    size = int(bytes(self.buf[pos:le]).split(b";")[0], 16)
                    if size == 0:
                        te = self.buf.find(b"\r\n\r\n", le)
                        if te < 0:
                            return
                        pos = te + 4
                        break
                    if len(self.buf) < le + 2 + size + 2:
                        return
                    chunked += self.buf[le + 2 : le + 2 + size]
                    pos = le + 2 + size + 2
                body = bytes(chunked)
            else:
                cl = int(headers.get(b"content-length", b"0") or 0)
                if len(self.buf) < pos + cl:
                    return
                body = bytes(self.buf[pos : pos + cl])
                pos += cl
            del self.buf[:pos]
            close = headers.get(b"connection", b"").lower() == b"close"
            self._handle(method, target.split(b"?", 1)[0], body, close)

    def _reply(self, status: int, body: bytes, close: bool = False, ctype: bytes = b"application/json") -> None:
        assert self.transport is not None
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large"}.get(status, b"Error")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ndate: %s\r\ncontent-length: %d\r\n%s%s\r\n%s"
            % (
                status,
                reason,
                ctype,
                _http_date(),
                len(body),
                _STATIC_HEADERS if status == 200 else b"",
                b"connection: close\r\n" if close else b"",
                body,
            )
        )
        if close:
            self.transport.close()
            self.closed = True

    def _handle(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        srv = self.server
        srv.stats.requests += 1
        if path.endswith(b"/chat/completions") and method == b"POST":
            try:
                req = json.loads(body)
                model = str(req.get("model") or "bench")
            except (ValueError, AttributeError):
                self._reply(400, b'{"error":{"message":"invalid JSON body","type":"invalid_request_error"}}', close)
                return
            srv.counter += 1
            req_id = "chatcmpl-bench%010d" % srv.counter
            created = int(time.time())
            if req.get("stream"):
                n, delay = stream_params(model, srv.default_events, srv.default_delay_s)
                phase = stream_phase(model) if delay > 0 else None
                self.busy = True
                srv.stats.streams += 1
                task = asyncio.get_running_loop().create_task(
                    self._stream(SSEBuilder(req_id, model, created), n, delay, close, phase)
                )
                srv.tasks.add(task)
                task.add_done_callback(srv.tasks.discard)
            else:
                self._reply(200, completion_body(req_id, model, created), close)
            return
        if path == b"/stats" and method == b"GET":  # what this upstream served (bench/upstreams.py checks routing)
            stats = {"chat_completions": srv.counter, "streams": srv.stats.streams, "requests": srv.stats.requests}
            self._reply(200, json.dumps(stats).encode(), close)
            return
        if path.endswith(b"/models") and method == b"GET":
            data = [{"id": m, "object": "model", "created": 1686935002, "owned_by": "bench"} for m in srv.models]
            self._reply(200, json.dumps({"object": "list", "data": data}).encode(), close)
            return
        self._reply(404, b'{"error":{"message":"Unknown route","type":"invalid_request_error"}}', close)

    async def _stream(self, sse: SSEBuilder, n: int, delay: float, close: bool, phase: float | None = None) -> None:
        t = self.transport
        assert t is not None
        loop = asyncio.get_running_loop()
        slot = first_slot(loop.time(), delay, phase) if phase is not None else 0.0
        try:
            t.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"date: %s\r\ntransfer-encoding: chunked\r\n%s%s\r\n"
                % (_http_date(), _STATIC_HEADERS, b"connection: close\r\n" if close else b"")
            )
            t.write(sse.role)
            stats = self.server.stats
            for i in range(n):
                if phase is not None:
                    await asyncio.sleep(max(0.0, slot - loop.time()))
                    slot += delay
                elif delay > 0:
                    await asyncio.sleep(delay)
                if self._can_write is not None and not self._can_write.is_set():
                    await self._can_write.wait()
                if self.closed:
                    return
                t.write(sse.content(i, time.monotonic_ns()))
                stats.events += 1
            t.write(sse.finish)
            t.write(sse.usage(n))
            t.write(sse.done)
            if close:
                t.close()
                self.closed = True
        finally:
            self.busy = False
            if not self.closed and self.buf:
                self._process()


class FakeOpenAI:
    """`async with FakeOpenAI(port=0) as up: up.port` — or start()/stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        events: int = 20,
        delay_ms: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
        models: tuple[str, ...] = ("bench", "bench-n200-d20", "gpt-4o-mini"),
    ):
        self.host, self.port = host, port
        self.ssl_context = ssl_context  # an ssl.SSLContext: HTTPS (bench/pool.py)
        self.models = models  # what GET /models lists
        self.default_events = events
        self.default_delay_s = delay_ms / 1000.0
        self.stats = Stats()
        self.counter = 0
        self.conns: set[UpstreamProtocol] = set()
        self.tasks: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> FakeOpenAI:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: UpstreamProtocol(self), self.host, self.port, backlog=4096, reuse_address=True, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in list(self.conns):
                if c.transport is not None:
                    c.transport.close()
            for t in list(self.tasks):
                t.cancel()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def _main(args: argparse.Namespace) -> None:
    context = None
    if args.tls_cert:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    models = (
        tuple(m for m in args.models.split(",") if m) if args.models else ("bench", "bench-n200-d20", "gpt-4o-mini")
    )
    up = await FakeOpenAI(args.host, args.port, args.events, args.delay_ms, context, models).start()
    print(f"fake OpenAI upstream listening on {'https' if context else 'http'}://{up.host}:{up.port}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.max_seconds > 0:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        else:
            await stop.wait()
    except TimeoutError:
        print("upstream: --max-seconds reached, exiting", file=sys.stderr)
    finally:
        await up.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--events", type=int, default=20, help="default content events per stream")
    p.add_argument("--delay-ms", type=float, default=0.0, help="default delay before each event")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="exit by itself after this long (0: never)")
    p.add_argument("--models", default="", help="comma-separated ids GET /models lists (default: bench, ...)")
    p.add_argument("--tls-cert", help="speak HTTPS with this certificate (PEM) ...")
    p.add_argument("--tls-key", help="... and this key (PEM)")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("benchmarks stay on loopback: --host must be 127.0.0.1, localhost or ::1")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
