"""Issue 21 §1: a compressed request body is decoded with a bound, on every route.

`request_body_limit` bounds the decoded size too: a 426-byte brotli body that decodes to 512 MB
gets 413 at the limit, with memory bounded by it (before: +516 MB). A body in a supported
encoding (gzip, deflate, br, zstd) is served as if it had been sent plain; another encoding is
415 with `Accept-Encoding`; bytes that do not decode are 400.
"""

from __future__ import annotations

import functools
import gzip
import json
import zlib

import brotli
import httpx
import pytest

from hostile.evil import MB, EvilUpstream
from hostile.tools import HELLO, error_message, peak_rss_mb, reset_peak

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

pytestmark = pytest.mark.e2e

ROUTES = [
    ("/api/chat", {"model": "m", "messages": HELLO, "stream": False}),
    ("/api/generate", {"model": "m", "prompt": "hi", "stream": False}),
    ("/api/embed", {"model": "m", "input": "hi"}),
    ("/v1/chat/completions", {"model": "m", "messages": HELLO}),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": HELLO}),
    ("/v1/responses", {"model": "m", "input": "hi"}),
]
ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


@functools.cache
def bomb(size: int) -> bytes:
    """A JSON object that brotli makes a few hundred bytes of: `{"model": "m", "x": "      …"}`."""
    return brotli.compress(b'{"model": "m", "x": "' + b" " * size + b'"}', quality=5)


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_compressed_requests_are_served(shared, evil: EvilUpstream, encoding: str) -> None:
    for path, body in ROUTES:
        data = ENCODERS[encoding](json.dumps(body).encode())
        answer = httpx.post(shared.url + path, content=data, headers={"Content-Encoding": encoding}, timeout=10)
        assert answer.status_code == 200, (path, answer.text[:300])
        sent = evil.answered()[-1]
        assert "content-encoding" not in sent.headers
        assert sent.body is not None


def test_a_compression_bomb_is_413_at_the_limit(start, evil: EvilUpstream) -> None:
    dump = start("request_body_limit=16m")
    data = bomb(512 * MB)
    assert len(data) < 2048
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    for path, _ in ROUTES:
        answer = httpx.post(dump.url + path, content=data, headers={"Content-Encoding": "br"}, timeout=60)
        assert answer.status_code == 413, (path, answer.text[:300])
        message = error_message(answer.content)
        assert "too large" in message and "request_body_limit" in message
    assert peak_rss_mb(pid) - before < 16 + 48
    assert evil.answered() == []


def test_a_bomb_just_under_the_limit_is_decoded(start, evil: EvilUpstream) -> None:
    dump = start("request_body_limit=16m")
    answer = httpx.post(dump.url + "/api/chat", content=bomb(15 * MB), headers={"Content-Encoding": "br"}, timeout=60)
    assert answer.status_code == 200, answer.text[:300]  # decoded: a chat without messages (Ollama's "load")


@pytest.mark.hostile_heavy
def test_a_bomb_at_the_default_limit_keeps_memory_bounded(start, evil: EvilUpstream) -> None:
    dump = start()
    data = bomb(512 * MB)
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    answer = httpx.post(dump.url + "/api/chat", content=data, headers={"Content-Encoding": "br"}, timeout=120)
    assert answer.status_code == 413
    assert peak_rss_mb(pid) - before < 64 + 64


def test_a_multipart_transcription_is_decoded_with_the_same_bound(start, evil: EvilUpstream) -> None:
    dump = start("request_body_limit=1m")
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + b"\0" * (8 * MB)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = httpx.post(
        dump.url + "/v1/audio/transcriptions",
        content=gzip.compress(form),
        headers={"Content-Encoding": "gzip", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert answer.status_code == 413, answer.text[:300]
    assert evil.answered() == []


@pytest.mark.parametrize("encoding", ["compress", "gzip, br", "x-unknown"])
def test_an_unsupported_encoding_is_415(shared, evil: EvilUpstream, encoding: str) -> None:
    answer = httpx.post(shared.url + "/api/chat", content=b"{}", headers={"Content-Encoding": encoding}, timeout=10)
    assert answer.status_code == 415
    assert "gzip" in (answer.headers.get("accept-encoding") or "")
    assert "Content-Encoding" in error_message(answer.content)
    assert evil.answered() == []


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_bytes_that_do_not_decode_are_400(shared, evil: EvilUpstream, encoding: str) -> None:
    answer = httpx.post(
        shared.url + "/v1/chat/completions", content=b"not compressed at all", headers={"Content-Encoding": encoding}
    )
    assert answer.status_code == 400, answer.text[:300]
    assert "cannot decode" in error_message(answer.content)
    assert evil.answered() == []
