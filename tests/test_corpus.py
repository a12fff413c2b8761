"""A corpus of malformed and hostile requests, sent through a real mitmdump running the addon.

Every request must get an Ollama-style 4xx answer (`{"error": "..."}` JSON, or Ollama's plain
`404 page not found` / `405 method not allowed`), nothing may reach the upstream, no traceback
or HTML page may reach the client, and the proxy must keep serving afterwards.
"""

from __future__ import annotations

import base64
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
USER = {"role": "user", "content": "hi"}


@dataclass
class Case:
    name: str
    method: str = "POST"
    path: str = "/api/chat"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # the exact status expected, else any 4xx
    raw: bytes | None = None  # sent as is on a socket (malformed HTTP)
    closes: bool = False  # mitmproxy closes the connection without an answer (see docs/limits.md)


def j(obj) -> bytes:
    return json.dumps(obj).encode()


def corpus() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # -- bodies that are not a JSON object ------------------------------------------------------
    not_json = [
        b"",
        b" ",
        b"\n",
        b"{",
        b"}",
        b"{]",
        b"[",
        b"nul",
        b"null",
        b"true",
        b"1",
        b'"text"',
        b"[]",
        b"[{}]",
        b"{'model': 'm'}",
        b'{"model": "m",}',
        b'{"model": "m"} trailing',
        b'{"model" "m"}',
        b'{"model": m}',
        b"\x00\x01\x02",
        b"\xef\xbb\xbf{}",
        b'{"model": "m", "messages": [}',
        b'{"model": "m", "options": {"temperature": NaN}, "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "m", "options": {"temperature": Infinity}, "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "\xe9t\xe9", "messages": []}',
        b'{"model": "m", "prompt": "\xff\xfe"}',
        b"model=m&prompt=hi",
        b"--boundary\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--boundary--",
        b"<xml><model>m</model></xml>",
        b"\xff" * 100,
    ]
    for route in ("/api/chat", "/api/generate"):
        for number, body in enumerate(not_json):
            add(Case(f"{route} not json #{number}", path=route, body=body, status=400))

    # -- wrong types and values, field by field --------------------------------------------------
    chat_base = {"model": "m", "messages": [USER], "stream": False}
    chat_bad = {
        "model": [3, 3.5, True, [], {}, ["m"]],
        "messages": ["hi", 3, {}, {"role": "user"}, ["hi"], [3], [None], [[USER]]],
        "stream": ["yes", 1, 0, [], {}, "true"],
        "format": [3, ["json"], "xml", True],
        "options": [
            "fast",
            3,
            [1],
            {"temperature": "hot"},
            {"stop": 5},
            {"num_predict": "x"},
            {"seed": [1]},
            {"top_p": {}},
            {"stop": [1, 2]},
            {"num_ctx": "big"},
        ],
        "keep_alive": [[5], {"m": 5}, True],
        "think": ["extreme", 2, [], "HIGH"],
        "tools": ["all", {"type": "function"}, 3, ["x"]],
        "logprobs": ["yes", 1],
        "top_logprobs": [21, -1, "3", 2.5],
        "truncate": ["no"],
        "shift": [1],
    }
    message_bad = {
        "role": [3, "", "function", "robot", None, ["user"]],
        "content": [3, ["hi"], {"text": "hi"}, True],
        "images": [
            "abc",
            [3],
            ["***"],
            [""],
            ["aGVsbG8"],
            ["aGVsbG8="],
            [f"data:image/png;base64,{PNG}"],
            [PNG + "!"],
            [{"data": PNG}],
            ["@" * 5000],
        ],
        "tool_calls": [
            "call",
            [3],
            [{"function": 3}],
            [{"function": {"arguments": {}}}],
            [{"function": {"name": 3}}],
            [{"function": {"name": "f", "arguments": 3}}],
            [{"id": 3, "function": {"name": "f"}}],
        ],
        "thinking": [3],
        "tool_name": [3],
        "tool_call_id": [[1]],
    }
    for name, values in chat_bad.items():
        for value in values:
            add(Case(f"chat {name}={value!r}"[:80], body=j({**chat_base, name: value}), status=400))
    for name, values in message_bad.items():
        for value in values:
            add(
                Case(
                    f"chat message {name}={value!r}"[:80],
                    body=j({**chat_base, "messages": [{**USER, name: value}]}),
                    status=400,
                )
            )

    generate_base = {"model": "m", "prompt": "hi", "stream": False}
    generate_bad = {
        "prompt": [3, ["hi"], {}, True],
        "suffix": [3, []],
        "system": [3, ["s"]],
        "template": [3],
        "context": ["abc", ["a"], [1.5], {}],
        "raw": ["yes", 1],
        "images": ["abc", ["***"], [3], ["aGVsbG8="], [""]],
        "stream": ["no", 0],
        "options": [[1], {"temperature": "warm"}],
        "think": ["max-ish"],
        "format": [["json"]],
    }
    for name, values in generate_bad.items():
        for value in values:
            add(
                Case(
                    f"generate {name}={value!r}"[:80],
                    path="/api/generate",
                    body=j({**generate_base, name: value}),
                    status=400,
                )
            )
    add(
        Case(
            "generate raw with system",
            path="/api/generate",
            body=j({**generate_base, "raw": True, "system": "s"}),
            status=400,
        )
    )
    add(
        Case(
            "generate raw with context",
            path="/api/generate",
            body=j({**generate_base, "raw": True, "context": [1]}),
            status=400,
        )
    )
    add(
        Case(
            "generate suffix with images",
            path="/api/generate",
            body=j({**generate_base, "suffix": "x", "images": [PNG]}),
            status=400,
        )
    )

    # -- missing or empty model ------------------------------------------------------------------
    add(Case("chat without model", body=j({"messages": [USER]}), status=400))
    add(Case("chat empty model", body=j({"model": "", "messages": [USER]}), status=400))
    add(Case("chat null model", body=j({"model": None, "messages": [USER]}), status=400))
    add(Case("generate without model", path="/api/generate", body=j({"prompt": "hi"}), status=400))
    add(Case("generate empty model", path="/api/generate", body=j({"model": "", "prompt": "hi"}), status=404))
    add(Case("chat empty object", body=b"{}", status=400))
    add(Case("generate empty object", path="/api/generate", body=b"{}", status=400))

    # -- huge bodies and deep nesting ------------------------------------------------------------
    add(Case("huge garbage", body=b"x" * 3_000_000, status=400))
    add(
        Case(
            "huge unterminated string",
            body=b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * 3_000_000,
            status=400,
        )
    )
    add(Case("huge array of wrong items", body=j({"model": "m", "messages": [3] * 200_000}), status=400))
    add(
        Case(
            "huge invalid image", body=j({**chat_base, "messages": [{**USER, "images": ["!" * 2_000_000]}]}), status=400
        )
    )
    add(
        Case(
            "huge non-image",
            body=j({**chat_base, "messages": [{**USER, "images": [base64.b64encode(b"\0" * 1_500_000).decode()]}]}),
            status=400,
        )
    )
    for depth in (10_000, 100_000):  # Ollama's Go decoder stops at 10,000 levels, Python's json earlier
        add(Case(f"nested arrays {depth}", body=b"[" * depth + b"]" * depth, status=400))
        add(Case(f"nested objects {depth}", body=b'{"a":' * depth + b"1" + b"}" * depth, status=400))
        add(
            Case(
                f"nested format {depth}",
                body=b'{"model": "m", "messages": [], "format": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}",
                status=400,
            )
        )
        add(
            Case(
                f"nested content {depth}",
                path="/api/generate",
                body=b'{"model": "m", "prompt": ' + b"[" * depth + b"]" * depth + b"}",
                status=400,
            )
        )

    # -- unknown routes, wrong methods -----------------------------------------------------------
    for path in (
        "/api/nothing",
        "/api",
        "/api/",
        "/api/chat/",
        "/api/chat/extra",
        "/api/CHAT",
        "/API/chat",
        "/v2/chat",
        "/api/generate/x",
        "/favicon.ico",
        "/%00",
        "/api/chat%00",
        "/..%2f..%2fetc%2fpasswd",
        "/" + "a" * 8000,
        "/api/%E2%98%83",
        "/api/chat;x",
        "/index.html",
        "/.env",
        "/admin",
    ):
        add(Case(f"unknown route {path[:40]}", method="GET", path=path, status=404))
        add(Case(f"unknown route POST {path[:40]}", method="POST", path=path, body=j(chat_base), status=404))
    for path in ("/api/chat", "/api/generate"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO"):
            add(
                Case(
                    f"{method} {path}",
                    method=method,
                    path=path,
                    body=b"" if method in ("GET", "HEAD") else j(chat_base),
                    status=405,
                )
            )
    for method in ("POST", "PUT", "DELETE"):
        add(Case(f"{method} /api/version", method=method, path="/api/version", status=405))
        add(Case(f"{method} /", method=method, path="/", status=405))

    # -- content types and encodings -------------------------------------------------------------
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ):
        add(
            Case(
                f"{content_type} form body",
                body=b"model=m&messages=hi",
                headers={"Content-Type": content_type},
                status=400,
            )
        )
    add(Case("gzip that is not gzip", body=j(chat_base), headers={"Content-Encoding": "gzip"}, status=400))
    add(Case("brotli that is not brotli", body=j(chat_base), headers={"Content-Encoding": "br"}, status=400))
    add(Case("zstd that is not zstd", body=j(chat_base), headers={"Content-Encoding": "zstd"}, status=400))
    add(Case("deflate that is not deflate", body=b"\x00garbage", headers={"Content-Encoding": "deflate"}, status=400))
    add(
        Case(
            "latin-1 body",
            body='{"model": "m", "messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"),
            status=400,
        )
    )
    add(
        Case(
            "utf-16 without a BOM is not JSON we read", body=j(chat_base).decode().encode("utf-16-le")[:-1], status=400
        )
    )

    # -- malformed HTTP (sent raw on a socket) ---------------------------------------------------
    raw_cases = {
        "garbage request line": b"GARBAGE\r\n\r\n",
        "bad content-length": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        "negative content-length": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        "two content-lengths": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "header without colon": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nBroken header\r\nContent-Length: 2\r\n\r\n{}",
        "unsupported version": b"POST /api/chat HTTP/3.7\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        "nul in header": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
        "unknown transfer-encoding": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: rot13\r\n\r\n{}",
    }
    for name, raw in raw_cases.items():
        add(Case(f"raw: {name}", raw=raw))
    # A broken body framing is detected by mitmproxy's HTTP/1 layer after the headers were accepted:
    # it closes the connection before any hook runs, so there is no answer to give.
    add(
        Case(
            "raw: bad chunk size",
            closes=True,
            raw=b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
    )
    return cases


def send(url: str, case: Case) -> tuple[int, str, bytes]:
    """(status, content type, body) of the proxy's answer."""
    if case.raw is not None:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(case.raw)
            data = b""
            while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + _length(data):
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        if case.closes and data == b"":
            return 0, "", b""
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), f"{case.name}: no HTTP answer: {data[:200]!r}"
        content_type = next(
            (line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("content-type:")), ""
        )
        return int(lines[0].split()[1]), content_type, body
    headers = {"Content-Type": "application/json", **case.headers}
    response = httpx.request(case.method, url + case.path, content=case.body or None, headers=headers, timeout=30)
    return response.status_code, response.headers.get("content-type", ""), response.content


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_the_corpus_is_large() -> None:
    cases = corpus()
    assert len(cases) >= 200
    assert len({c.name for c in cases}) == len(cases), "case names are unique"


def test_every_bad_request_gets_an_ollama_style_4xx(spawn, upstream: UpstreamServer) -> None:
    dump: Mitmdump = spawn("reverse", f"openai_base_url={upstream.base_url}", "openai_api_key=sk-corpus-secret")
    cases = corpus()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda case: send(dump.url, case), cases))
    problems = []
    for case, (status, content_type, body) in zip(cases, answers, strict=True):
        text = body.decode("utf-8", "replace")
        if case.closes and status == 0:
            continue
        if not 400 <= status < 500 or (case.status is not None and status != case.status):
            problems.append(f"{case.name}: status {status}: {text[:200]}")
        elif "Traceback" in text or "<html" in text.lower() or "<!doctype" in text.lower():
            problems.append(f"{case.name}: leaked {text[:200]}")
        elif case.method == "HEAD":
            continue
        elif content_type.startswith("application/json"):
            error = json.loads(body).get("error")
            if not isinstance(error, str) or not error:
                problems.append(f"{case.name}: no error message: {text[:200]}")
        elif (status, text) not in ((404, "404 page not found"), (405, "405 method not allowed")):
            problems.append(f"{case.name}: not Ollama-style: {status} {content_type} {text[:200]}")
    assert not problems, "\n".join(problems)
    assert upstream.fake.requests == [], "no bad request went upstream"
    # The proxy survived all of them and still serves.
    assert httpx.get(dump.url + "/api/version").status_code == 200
    good = httpx.post(dump.url + "/api/chat", json={"model": "m", "messages": [USER], "stream": False}, timeout=10)
    assert good.json()["message"]["content"] == "echo: hi"
    log = dump.log()
    assert "Traceback" not in log and "Addon error" not in log and "has crashed" not in log, log[-4000:]
    assert dump.process.poll() is None


def test_hostile_but_valid_requests_are_served(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    """Odd requests that Ollama accepts: served, never a crash."""
    lone = httpx.post(
        proxy.url + "/api/chat",
        content=b'{"model": "m", "stream": false, "messages": [{"role": "user", "content": "a\\ud800b"}]}',
        timeout=10,
    )
    assert lone.status_code == 200 and lone.json()["message"]["content"] == "echo: a\ufffdb"
    deep = (
        b'{"model": "m", "stream": false, "messages": [{"role": "user", "content": "x"}], "format": '
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b"}"
    )
    assert httpx.post(proxy.url + "/api/chat", content=deep, timeout=10).status_code == 200
    big = "word " * 400_000  # a 2 MB prompt
    answer = httpx.post(proxy.url + "/api/generate", json={"model": "m", "prompt": big, "stream": False}, timeout=30)
    assert answer.status_code == 200 and answer.json()["response"] == "echo: " + big
    assert "Traceback" not in proxy.log()


def test_body_size_limit_answers_413_json(spawn, upstream: UpstreamServer) -> None:
    """mitmproxy's body_size_limit caps what a client may send; the answer is Ollama-style JSON."""
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", "body_size_limit=100k")
    response = httpx.post(dump.url + "/api/generate", json={"model": "m", "prompt": "x" * 200_000}, timeout=10)
    assert response.status_code == 413 and "error" in response.json()
    assert (
        httpx.post(
            dump.url + "/api/generate", json={"model": "m", "prompt": "ok", "stream": False}, timeout=10
        ).status_code
        == 200
    )
