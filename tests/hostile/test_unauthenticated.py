"""§2 Unauthenticated clients must not exhaust memory; request bodies have a size limit.

With `ollama_api_key` set, a request without the key is answered 401 as soon as its headers are
in, before its body is read (and the body is never kept); a body larger than `request_body_limit`
(default 16 MB, for every Ollama and /v1 route) gets 413 the same way when its Content-Length says
so, and once the limit is crossed when it is chunked.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import threading
import time

import httpx
import pytest

from hostile.evil import MB, EvilUpstream
from hostile.tools import CLIENT_KEY, HELLO, Answer, error_message, peak_rss_mb, read_answer, reset_peak

pytestmark = pytest.mark.e2e


def head(path: str, length: int | None, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_until_answered(
    port: int,
    request_head: bytes,
    total: int,
    piece: int = MB,
    seconds: float = 60,
    wait_after: float = 5,
    pause: float = 0.0,
) -> tuple[Answer | None, int]:
    """Send the head, then up to `total` body bytes in `piece`s, stopping as soon as an answer
    arrives; then wait up to `wait_after` s for one. (the answer or None, body bytes sent)."""
    sent = 0
    block = b" " * piece
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request_head)
        deadline = time.monotonic() + seconds
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(block[: min(piece, total - sent)])
                except (BrokenPipeError, ConnectionResetError):
                    break
            if pause:
                time.sleep(pause)
        try:
            answer, _ = read_answer(sock, wait_after)
        except (TimeoutError, ConnectionError):
            answer = None
        return answer, sent


@pytest.fixture
def locked(start):
    return start(f"ollama_api_key={CLIENT_KEY}")


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_no_key_is_refused_before_the_body_is_read(locked, evil: EvilUpstream, path: str) -> None:
    """The client declares 200 MB and sends 256 KB: the 401 must come without the rest."""
    for authorization in (None, "Bearer wrong-key"):
        headers = {"Authorization": authorization} if authorization else {}
        answer, sent = send_until_answered(
            locked.port, head(path, 200 * MB, headers), 256 * 1024, piece=64 * 1024, wait_after=3
        )
        assert answer is not None and answer.status == 401, f"no 401 after {sent} of 200 MB: {answer}"
        assert error_message(answer.body).startswith("unauthorized")
    assert evil.answered() == []


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_body_over_the_default_limit_is_refused_before_it_is_read(shared, evil: EvilUpstream, path: str) -> None:
    answer, sent = send_until_answered(shared.port, head(path, 100 * MB), 256 * 1024, piece=64 * 1024, wait_after=3)
    assert answer is not None and answer.status == 413, f"no 413 after {sent} of 100 MB: {answer}"
    message = error_message(answer.body)
    assert "too large" in message and "request_body_limit" in message, message
    assert evil.answered() == []


def test_request_body_limit_option(start, evil: EvilUpstream) -> None:
    dump = start("request_body_limit=1m")
    small = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "x" * 500_000}]}
    assert httpx.post(dump.url + "/api/chat", json=small, timeout=20).status_code == 200
    big = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    for path in ("/api/chat", "/v1/chat/completions"):
        response = httpx.post(dump.url + path, json=big, timeout=20)
        assert response.status_code == 413 and "request_body_limit" in error_message(response.content)
    # Chunked (no Content-Length): refused once the limit is crossed.
    chunked = httpx.post(dump.url + "/api/chat", content=iter([json.dumps(big).encode()]), timeout=20)
    assert chunked.status_code == 413
    assert len(evil.answered()) == 1


def test_trickling_clients_without_a_key_are_refused_at_once(locked, evil: EvilUpstream) -> None:
    """Two clients trickle a body a byte at a time: they get their 401 after the headers, not after
    the body, and a client with the key is served meanwhile."""
    results: list[tuple[Answer | None, int]] = []

    def trickle() -> None:
        results.append(
            send_until_answered(
                locked.port, head("/api/chat", 10 * MB), 2000, piece=1, seconds=8, wait_after=2, pause=0.001
            )
        )

    threads = [threading.Thread(target=trickle) for _ in range(2)]
    for thread in threads:
        thread.start()
    client = httpx.Client(base_url=locked.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    for _ in range(10):
        assert client.post("/api/chat", json={"model": "m", "messages": HELLO, "stream": False}).status_code == 200
    for thread in threads:
        thread.join(20)
    assert len(results) == 2
    for answer, sent in results:
        assert answer is not None and answer.status == 401 and sent < 2000, f"trickled {sent} bytes: {answer}"


# ---------------------------------------------------------------------------------------------
# Heavy: floods measured by the proxy's peak RSS


@pytest.mark.hostile_heavy
def test_unauthenticated_floods_keep_memory_bounded(locked) -> None:
    """Five clients send 200 MB bodies without the key at once: all get 401, the proxy's peak
    memory grows by less than 64 MB (today: the bodies are read whole, > 1 GB)."""
    pid = locked.process.pid
    httpx.get(locked.url + "/api/version", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    reset_peak(pid)
    before = peak_rss_mb(pid)
    results: list[tuple[Answer | None, int]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                send_until_answered(locked.port, head("/api/chat", 200 * MB), 200 * MB, seconds=60, wait_after=30)
            )
        )
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    growth = peak_rss_mb(pid) - before
    assert growth < 64, f"peak RSS grew by {growth:.0f} MB"
    assert len(results) == 5 and all(a is not None and a.status == 401 for a, _ in results), results


@pytest.mark.hostile_heavy
def test_a_large_multimodal_request_is_served(start, evil: EvilUpstream) -> None:
    """Three 10 MB images (≈ 40 MB of JSON) with a raised limit (the default, 16 MB, takes one such photo)."""
    dump = start("request_body_limit=64m")
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(10 * MB)).decode()
    body = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "look", "images": [image] * 3}]}
    response = httpx.post(dump.url + "/api/chat", json=body, timeout=120)
    assert response.status_code == 200, response.text[:300]
    sent = evil.answered()[-1].body["messages"][-1]["content"]
    assert sum(len(part.get("image_url", {}).get("url", "")) for part in sent) > 40 * MB


# ---------------------------------------------------------------------------------------------
# What mitmproxy would buffer before it can parse anything (any client, with or without a key)


def test_request_headers_that_never_end_get_431(shared) -> None:
    """Go's http.Server (Ollama) allows 1 MB of headers; mitmproxy alone would buffer them forever."""
    start = b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: "
    answer, sent = send_until_answered(shared.port, start, 64 * MB, wait_after=3)
    assert answer is not None and answer.status == 431, f"no 431 after {sent} bytes: {answer}"
    assert "too large" in error_message(answer.body)
    assert sent < 64 * MB


def test_a_chunk_size_line_that_never_ends_is_cut_off(shared, evil: EvilUpstream) -> None:
    head_only = b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, sent = send_until_answered(shared.port, head_only, 64 * MB, seconds=10, wait_after=1)
    assert sent < 64 * MB, "the proxy read 64 MB of one chunk-size line"
    assert evil.answered() == []
    assert httpx.get(shared.url + "/api/version").status_code == 200


def test_bytes_piling_up_behind_a_request_are_bounded(start, evil: EvilUpstream) -> None:
    """A request whose answer is slow, then more bytes than any next request may have: the connection is closed."""
    dump = start("request_body_limit=1m")
    body = json.dumps({"model": "evil:hang", "messages": HELLO, "stream": False}).encode()
    request = head("/api/chat", len(body)) + body
    _, sent = send_until_answered(dump.port, request, 64 * MB, seconds=20, wait_after=1)
    evil.release.set()
    assert sent < 64 * MB, "the proxy buffered 64 MB sent behind a request"


def test_refused_connections_are_closed(locked) -> None:
    """Every connection the proxy refuses is closed on its side too (no descriptor, no unread
    buffer left behind): clients refused while they were still sending, and a malformed chunked body."""
    pid = locked.process.pid
    httpx.get(locked.url + "/api/version", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    before = len(os.listdir(f"/proc/{pid}/fd"))
    statuses: list[int | None] = []

    def refused(chunked: bool) -> None:
        answer, _ = send_until_answered(
            locked.port, head("/api/chat", None if chunked else 200 * MB), 8 * MB, seconds=10
        )
        statuses.append(answer.status if answer else None)

    threads = [threading.Thread(target=refused, args=(i % 2 == 0,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    malformed = head("/api/chat", None, {"Authorization": f"Bearer {CLIENT_KEY}"}) + b"zz\r\n"
    send_until_answered(locked.port, malformed, 8 * MB, seconds=5, wait_after=1)
    assert statuses == [401] * 12
    deadline = time.monotonic() + 5
    while len(os.listdir(f"/proc/{pid}/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(os.listdir(f"/proc/{pid}/fd")) <= before, os.listdir(f"/proc/{pid}/fd")


def test_a_chunked_body_is_refused_once_it_crosses_the_limit(start, evil: EvilUpstream) -> None:
    """No declared length: the 413 comes when the limit is crossed, not after the whole body."""
    dump = start("request_body_limit=1m")
    chunk = b"%x\r\n" % MB + b" " * MB + b"\r\n"
    with socket.create_connection(("127.0.0.1", dump.port), timeout=20) as sock:
        sock.sendall(head("/v1/chat/completions", None))
        sent = 0
        deadline = time.monotonic() + 20
        while sent < 64 * MB and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                break
            if writable:
                try:
                    sock.sendall(chunk)
                except OSError:
                    break
                sent += len(chunk)
        answer, _ = read_answer(sock, 5)
    assert answer.status == 413 and "request_body_limit" in error_message(answer.body), answer
    assert sent < 16 * MB, f"{sent} bytes sent before the 413"
    assert evil.answered() == []
    deadline = time.monotonic() + 3
    while "POST /v1/chat/completions · 413" not in dump.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "POST /v1/chat/completions · 413" in dump.log()  # its log line
