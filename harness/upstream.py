"""A real OpenAI-compatible HTTP server on loopback for the tests, speaking the recorded wire format.

What it answers is chosen by the request's `model`:
- `rec:<dir>/<name>` replays `tests/fixtures/openai-recordings/<dir>/<name>.json` (status, content
  type and body exactly as recorded, SSE bodies event by event);
- `missing-model` (or any `no-such-…`) answers OpenAI's recorded 404 `model_not_found`;
- anything else is echoed: the answer is "echo: <last user text>", streamed word by word when
  the request streams, shaped like the recordings (role chunk, content chunks, finish chunk,
  usage chunk when `stream_options.include_usage`, `[DONE]`).
`GET /models` answers `models` (default: the recorded OpenAI list); `POST /embeddings` replays
`rec:` models, answers OpenAI's recorded 404 for `missing-model`, and otherwise returns for each
input the unnormalised vector [len(text), index, 3, 4] (ignoring `dimensions`), in reverse order
with their `index` set, as the API allows.
Tests can also queue exact answers with `queue(...)`, queue assistant messages (text, tool calls,
a stream that breaks off) shaped to each chat request with `queue_reply(...)`, set `event_delay` to pause between SSE
events, or set `pause_after` to hold every stream after that many chunks until `resume` is set,
which proves without any clock that the proxy relays before the upstream has finished.
Every request is kept in `requests`, and each finished stream counts in `completed`.

Several upstreams (addon/upstreams/): `FakeOpenAI(key=...)` accepts only `Authorization: Bearer
<key>` (anything else gets OpenAI's 401, after being logged in `requests`, whose headers keep the
Authorization sent: `authorizations()` lists them); `UpstreamServer.kill()` stops it the way a
crashed server stops (listening socket and open connections closed: the next connect is refused)
and `revive()` listens again on the same port; `several()` runs `TRIO`, three upstreams with their
own keys and model lists, one model (`shared-model`) served by two of them, and
`servers_catalog()` writes the `[servers.NAME]` tables that point a proxy at them.

Faults: `queue(..., hang=s)` waits before answering, `close_after=n` ends the connection after n
chunks (`reset=True`: with a TCP reset instead of a close), `truncate=True` sends fewer body
bytes than Content-Length says. While the server waits (hang, pause) it watches its connection:
when the proxy closes it, the wait ends and `aborted` counts it, which proves that the proxy
stopped the upstream request. Models named `fault:<name>` answer one of `FAULTS` (for
concurrent tests, where a queue would be shared). `UpstreamServer(tls=(cert, key))` speaks HTTPS;
`accepted` counts the connections it accepted.
"""

from __future__ import annotations

import json
import re
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "openai-recordings"


def recording(name: str) -> dict[str, Any]:
    """One recorded OpenAI exchange: {"request": ..., "response": {"status", "headers", "body"}}."""
    loaded: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text())
    return loaded


def sse_events(body: str) -> list[bytes]:
    """A raw SSE body cut into its events, each with its blank-line terminator."""
    return [(event + "\n\n").encode() for event in body.split("\n\n") if event.strip()]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Canned:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    delay: float = 0.0
    hang: float = 0.0  # seconds to wait before answering at all
    close_after: int | None = None  # reset the connection after this many chunks
    reset: bool = False  # with close_after: a TCP reset rather than an orderly close
    truncate: bool = False  # send half the body of a Content-Length answer, then close
    stall: float = 0.0  # send half the body of a Content-Length answer, then wait this long before the rest


@dataclass
class FakeOpenAI:
    event_delay: float = 0.0
    pause_after: int | None = None
    resume: threading.Event = field(default_factory=threading.Event)
    completed: int = 0
    aborted: int = 0
    requests: list[Received] = field(default_factory=list)
    _queue: deque[Canned] = field(default_factory=deque)
    models: list[dict[str, Any]] | None = None  # None: the recorded OpenAI list
    models_gate: threading.Event | None = None  # when set, GET /models waits for it before answering
    _replies: deque[Reply] = field(default_factory=deque)
    key: str | None = None  # when set, the only key accepted (Authorization: Bearer <key>); kept by reset()
    name: str = ""  # a label for messages (several upstreams)

    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request received (None: none was sent), in order."""
        return [r.headers.get("authorization") for r in self.requests]

    def reset(self) -> None:
        self.models = None
        self.models_gate = None
        self._replies.clear()
        self.requests.clear()
        self._queue.clear()
        self.event_delay = 0.0
        self.pause_after = None
        self.resume = threading.Event()
        self.completed = 0
        self.aborted = 0

    def queue(
        self,
        status: int = 200,
        body: bytes | str | dict[str, Any] | list[bytes] = b"",
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Answer the next request exactly so (a list of byte chunks is sent as a chunked stream)."""
        if isinstance(body, dict):
            body, headers = json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})}
        chunks = body if isinstance(body, list) else [body.encode() if isinstance(body, str) else body]
        self._queue.append(Canned(status, headers or {}, chunks, **kwargs))

    def queue_reply(
        self,
        content: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        *,
        thinking: str = "",
        break_off: bool = False,
    ) -> None:
        """Answer the next chat completion with this assistant message, streamed or not as it asks.

        `tool_calls` are `{"name": ..., "arguments": {...}}`; streamed, their arguments arrive in
        fragments as OpenAI sends them; `thinking` comes as `reasoning_content`. `break_off` ends the stream cleanly after the content,
        without finish reason or `[DONE]`. Other requests (model lists) do not use up the reply.
        """
        self._replies.append(Reply(content, tool_calls or [], break_off, thinking))

    def answer(self, received: Received) -> Canned:
        if self.key is not None and received.headers.get("authorization") != f"Bearer {self.key}":
            return FAULTS["401"]()
        if self._queue:
            return self._queue.popleft()
        if self._replies and received.method == "POST" and received.path.endswith("/chat/completions"):
            return self._replies.popleft().canned(
                received.body if isinstance(received.body, dict) else {}, self.event_delay
            )
        body = received.body if isinstance(received.body, dict) else {}
        model = str(body.get("model", ""))
        if received.method == "GET" and received.path.endswith("/models"):
            if self.models_gate is not None:
                self.models_gate.wait(15)
            listing = (
                recording("models/list")["response"]["body"]
                if self.models is None
                else {"object": "list", "data": self.models}
            )
            return Canned(200, {"content-type": "application/json"}, [json.dumps(listing).encode()])
        if model.startswith("fault:") and model[6:] in FAULTS:
            return FAULTS[model[6:]]()
        embeddings = received.path.endswith("/embeddings")
        if model == "missing-model" or model.startswith("no-such-"):
            model = "rec:errors/404-embeddings-model-not-found" if embeddings else "rec:errors/404-model-not-found"
        if model.startswith("rec:"):
            return self._replay(recording(model[4:]))
        if embeddings:
            return self._embeddings(body)
        return self._echo(body, received.path)

    def _embeddings(self, body: dict[str, Any]) -> Canned:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 3.0, 4.0]}
            for i, t in enumerate(inputs)
        ]
        tokens = sum(len(str(t).split()) for t in inputs)
        answer = {
            "object": "list",
            "data": data[::-1],
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Canned(200, {"content-type": "application/json"}, [json.dumps(answer).encode()])

    def _replay(self, exchange: dict[str, Any]) -> Canned:
        response = exchange["response"]
        content_type = response["headers"].get("content-type", "application/json")
        if isinstance(response["body"], str):
            return Canned(
                response["status"], {"content-type": content_type}, sse_events(response["body"]), self.event_delay
            )
        return Canned(
            response["status"], {"content-type": content_type}, [json.dumps(response["body"], indent=2).encode()]
        )

    def _echo(self, body: dict[str, Any], path: str) -> Canned:
        text = "echo: " + _last_user_text(body)
        model = body.get("model", "")
        usage = {"prompt_tokens": 7, "completion_tokens": len(text.split()), "total_tokens": 7 + len(text.split())}
        legacy = path.endswith("/completions") and not path.endswith("chat/completions")
        if not body.get("stream"):
            if legacy:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
                answer = {
                    "id": "cmpl-echo",
                    "object": "text_completion",
                    "created": 1767968229,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            else:
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                answer = {
                    "id": "chatcmpl-echo",
                    "object": "chat.completion",
                    "created": 1767968229,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            return Canned(200, {"content-type": "application/json"}, [json.dumps(answer, indent=2).encode()])
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {
            "id": "chatcmpl-echo",
            "object": "text_completion" if legacy else "chat.completion.chunk",
            "created": 1767968229,
            "model": model,
        }
        extra = {"usage": None} if include_usage else {}

        def event(choice: dict[str, Any]) -> bytes:
            return f"data: {json.dumps({**head, **extra, 'choices': [choice]})}\n\n".encode()

        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        if legacy:
            events = [event({"index": 0, "text": p, "finish_reason": None}) for p in pieces]
            events.append(event({"index": 0, "text": "", "finish_reason": "stop"}))
        else:
            events = [
                event(
                    {"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None}
                )
            ]
            events += [event({"index": 0, "delta": {"content": p}, "finish_reason": None}) for p in pieces]
            events.append(event({"index": 0, "delta": {}, "finish_reason": "stop"}))
        if include_usage:
            events.append(f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        return Canned(200, {"content-type": "text/event-stream; charset=utf-8"}, events, self.event_delay)


@dataclass
class Reply:
    content: str
    tool_calls: list[dict[str, Any]]
    break_off: bool
    thinking: str = ""

    def canned(self, body: dict[str, Any], delay: float) -> Canned:
        model = body.get("model", "")
        head = {"id": "chatcmpl-reply", "created": 1767968229, "model": model}
        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        finish = "tool_calls" if self.tool_calls else "stop"
        calls: list[dict[str, Any]] = [
            {
                "index": i,
                "id": f"call_{i}{c['name']}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(self.tool_calls)
        ]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": self.content or None, "refusal": None}
            if self.thinking:
                message["reasoning_content"] = self.thinking
            if calls:
                message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
            answer = {
                **head,
                "object": "chat.completion",
                "usage": usage,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            }
            return Canned(200, {"content-type": "application/json"}, [json.dumps(answer).encode()])

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"reasoning_content": word}) for word in re.findall(r"\s*\S+", self.thinking)]
        events += [event({"content": word}) for word in re.findall(r"\s*\S+", self.content)]
        if self.break_off:
            return Canned(200, {"content-type": "text/event-stream; charset=utf-8"}, events, delay)
        for call in calls:  # the name first, then the arguments in two fragments
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            events.append(
                event({"tool_calls": [{**call, "function": {"name": call["function"]["name"], "arguments": ""}}]})
            )
            for piece in (arguments[:half], arguments[half:]):
                events.append(event({"tool_calls": [{"index": call["index"], "function": {"arguments": piece}}]}))
        events.append(event({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode()
            )
        events.append(b"data: [DONE]\n\n")
        return Canned(200, {"content-type": "text/event-stream; charset=utf-8"}, events, delay)


def _last_user_text(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return str(body["prompt"])
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return str(content or "")
    return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.open.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.open.discard(self.connection)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        received = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server.fake
        fake.requests.append(received)
        canned = fake.answer(received)
        if canned.hang and not self._wait(canned.hang):
            return
        self.send_response(canned.status)
        for name, value in canned.headers.items():
            self.send_header(name, value)
        pause_after = fake.pause_after if len(canned.chunks) > 1 else None
        streamed = len(canned.chunks) > 1 or canned.delay or canned.close_after is not None
        if streamed:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(canned.chunks[0])))
        self.end_headers()
        try:
            if not streamed:
                body = canned.chunks[0]
                if canned.stall:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if not self._wait(canned.stall):
                        return
                    body = body[len(body) // 2 :]
                self.wfile.write(body[: len(body) // 2] if canned.truncate else body)
                if canned.truncate:
                    self.wfile.flush()
                    self.close_connection = True
                return
            for number, chunk in enumerate(canned.chunks):
                if canned.close_after is not None and number >= canned.close_after:
                    self.wfile.flush()
                    if canned.reset:
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if number and canned.delay:
                    time.sleep(canned.delay)
                if number == pause_after:
                    self.wfile.flush()
                    if not self._wait(15, fake.resume):
                        return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            fake.completed += 1
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _wait(self, seconds: float, until: threading.Event | None = None) -> bool:
        """Wait (for `until`, at most `seconds`); False, counted in `aborted`, if the proxy hung up meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until is not None and until.is_set()):
            readable, _, _ = select.select([self.connection], [], [], 0.02)
            if readable:
                try:
                    gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                except (OSError, ssl.SSLError):
                    gone = True
                if gone:
                    self.server.fake.aborted += 1
                    self.close_connection = True
                    return False
        return True

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connects under load (then they take a 1 s SYN retry)
    fake: FakeOpenAI
    accepted = 0  # connections accepted (with TLS: handshakes begun), e.g. to prove connection reuse

    def get_request(self) -> tuple[socket.socket, Any]:
        connection = super().get_request()
        self.accepted += 1
        return connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open: set[socket.socket] = set()  # connections being served, for kill()


POLL = 0.05  # seconds between the server loop's checks for shutdown (stopping one takes up to this long)


class UpstreamServer:
    """Runs a FakeOpenAI on 127.0.0.1 (or `host`, in a test's own network namespace) in a background thread."""

    def __init__(
        self, fake: FakeOpenAI | None = None, tls: tuple[str, str] | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.fake = fake or FakeOpenAI()
        self._tls = tls
        self.host = host
        self._server = self._listen(port)
        self.port = self._server.server_address[1]
        self.base_url = f"{'https' if tls else 'http'}://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL,), daemon=True)
        self._running = False

    def _listen(self, port: int) -> _Server:
        server = _Server((self.host, port), _Handler)
        server.fake = self.fake
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        return server

    def __enter__(self) -> UpstreamServer:
        self._thread.start()
        self._running = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running:
            self._server.shutdown()
            self._running = False
        self._server.server_close()

    def kill(self) -> None:
        """Stop like a crashed server: no more listening (connects are refused), open connections reset."""
        if self._running:
            self._server.shutdown()
            self._running = False
        self._server.server_close()
        for connection in list(self._server.open):
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def revive(self) -> None:
        """Listen again on the same port, with the same fake (its request log goes on)."""
        if self._running:
            return
        self._server = self._listen(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL,), daemon=True)
        self._thread.start()
        self._running = True

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._server.accepted


def _sse(*events: dict[str, Any] | str) -> list[bytes]:
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]


_ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
_WORD = {"choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]}
_STOP = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
_SSE = {"content-type": "text/event-stream"}
_JSON = {"content-type": "application/json"}

# Upstream faults by name, for `fault:<name>` models (fresh Canned each time).
FAULTS: dict[str, Callable[[], Canned]] = {
    "401": lambda: Canned(
        401,
        _JSON,
        [json.dumps({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}).encode()],
    ),
    "429": lambda: Canned(
        429, {**_JSON, "retry-after": "7"}, [json.dumps({"error": {"message": "Rate limit reached"}}).encode()]
    ),
    "500": lambda: Canned(500, _JSON, [json.dumps({"error": {"message": "The server had an error"}}).encode()]),
    "503-html": lambda: Canned(
        503, {"content-type": "text/html"}, [b"<html><head><title>503 Service Unavailable</title></head></html>"]
    ),
    "502-empty": lambda: Canned(502, {}, [b""]),
    "malformed-sse": lambda: Canned(200, _SSE, [*_sse(_ROLE, _WORD), b"data: {not json\n\n"]),
    "no-done": lambda: Canned(200, _SSE, [*_sse(_ROLE, _WORD), b": keep-alive\n\n"]),
    "error-event": lambda: Canned(200, _SSE, _sse(_ROLE, {"error": {"message": "overloaded"}})),
    "reset": lambda: Canned(200, _SSE, _sse(_ROLE, _WORD, _WORD, _STOP, "[DONE]"), close_after=2, reset=True),
    "close": lambda: Canned(200, _SSE, _sse(_ROLE, _WORD, _WORD, _STOP, "[DONE]"), close_after=2),
    "truncated-json": lambda: Canned(
        200, _JSON, [json.dumps({"choices": [{"message": {"content": "x" * 100}}]}).encode()], truncate=True
    ),
    "not-json": lambda: Canned(200, _JSON, [b"<html>oops</html>"]),
    "hang": lambda: Canned(200, _JSON, [b"{}"], hang=30),
    "slow": lambda: Canned(200, _SSE, _sse(_ROLE, *[_WORD] * 40, _STOP, "[DONE]"), delay=0.05),
}


# ---------------------------------------------------------------------------------------------
# Several upstreams


@dataclass(frozen=True)
class UpstreamSpec:
    name: str
    key: str
    models: tuple[str, ...]
    patterns: tuple[str, ...] = ()  # the [servers.NAME] models patterns servers_catalog() writes


# Three upstreams with their own keys and model lists; `shared-model` is served by alpha and beta.
TRIO: tuple[UpstreamSpec, ...] = (
    UpstreamSpec(
        "alpha", "sk-alpha-0123456789abcdef", ("shared-model", "alpha-only", "meta-llama/Llama-3.2-3B-Instruct")
    ),
    UpstreamSpec("beta", "sk-beta-0123456789abcdef", ("shared-model", "beta-only")),
    UpstreamSpec("gamma", "sk-gamma-0123456789abcdef", ("gamma-only",), patterns=("gamma/*",)),
)


@contextmanager
def several(specs: Sequence[UpstreamSpec] = TRIO) -> Iterator[dict[str, UpstreamServer]]:
    """Run one keyed FakeOpenAI per spec on loopback; name → server, in order."""
    with ExitStack() as stack:
        servers: dict[str, UpstreamServer] = {}
        for spec in specs:
            fake = FakeOpenAI(key=spec.key, name=spec.name)
            fake.models = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": spec.name} for m in spec.models
            ]
            servers[spec.name] = stack.enter_context(UpstreamServer(fake))
        yield servers


def env_name(spec: UpstreamSpec) -> str:
    return f"TEST_{spec.name.upper()}_KEY"


def servers_catalog(
    servers: dict[str, UpstreamServer],
    specs: Sequence[UpstreamSpec] = TRIO,
    extra: str = "",
    settings: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """The catalog TOML text with a [servers.NAME] table per upstream (keys by environment
    variable), and the environment the proxy needs for it. `extra`: more TOML ([models."x"] ...);
    `settings`: more lines of a server's table, by name (e.g. {"gamma": "upstream_timeout = 1"})."""
    tables = []
    for spec in specs:
        patterns = ", ".join(json.dumps(p) for p in spec.patterns)
        more = (settings or {}).get(spec.name)
        tables.append(
            f"[servers.{spec.name}]\nbase_url = {json.dumps(servers[spec.name].base_url)}\n"
            f"api_key_env = {json.dumps(env_name(spec))}\n"
            + (f"models = [{patterns}]\n" if spec.patterns else "")
            + (f"{more}\n" if more else "")
        )
    environment = {env_name(spec): spec.key for spec in specs}
    return "\n".join(tables) + ("\n" + extra if extra else ""), environment
