"""Issue 21 §4: a compressed upstream stream is decoded piece by piece, not gathered whole.

The proxy asks for `identity`; an upstream may compress its SSE stream anyway (gzip here; the
decoder is the same for br, zstd and deflate: tests/test_guard_upstream.py). Its events reach the
client as they arrive, `sse_event_limit` applies to them on every route, a piece that expands
beyond it (a bomb) ends the stream with an error, and the proxy's memory (VmHWM from /proc) stays
bounded.
"""

from __future__ import annotations

import socket
import time

import pytest

from hostile.evil import MB, EvilUpstream
from hostile.test_echoed_secrets import body_for
from hostile.test_upstream_limits import ask, last_error, streamed_with_budget
from hostile.tools import peak_rss_mb, request_bytes, reset_peak

pytestmark = pytest.mark.e2e

STREAM_ROUTES = ["/api/chat", "/v1/chat/completions"]


@pytest.mark.parametrize("path", STREAM_ROUTES)
def test_a_compressed_stream_arrives_event_by_event(shared, evil: EvilUpstream, path: str) -> None:
    """The first event reaches the client while the upstream still holds the rest of its stream."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", shared.port), timeout=8) as sock:
        sock.sendall(request_bytes("POST", path, body_for(path, "evil:gzip-trickle", True)))
        deadline = time.monotonic() + 8
        while b"first then the rest" not in received:
            assert time.monotonic() < deadline, f"the first event did not come before the rest: {bytes(received)!r}"
            received += sock.recv(65536)
        assert b"content-encoding" not in received.lower().partition(b"\r\n\r\n")[0]
        evil.release.set()
        while not received.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            assert piece, bytes(received)
            received += piece
    assert (b'"done":true' if path == "/api/chat" else b"data: [DONE]") in received


@pytest.mark.hostile_heavy
@pytest.mark.parametrize("path", STREAM_ROUTES)
def test_a_compressed_64_mb_event_is_cut_at_sse_event_limit(start, evil: EvilUpstream, path: str) -> None:
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got, spent = streamed_with_budget(dump, path, "gzip-huge-event", budget=8)
    growth = peak_rss_mb(pid) - before
    assert got.status == 200 and "sse_event_limit" in last_error(got), got
    assert got.length < 24 * MB, "the event was cut at the limit, not relayed"
    assert growth < 16 + 64, f"peak RSS grew by {growth:.0f} MB"
    assert spent < 8


@pytest.mark.hostile_heavy
@pytest.mark.parametrize("path", STREAM_ROUTES)
def test_a_compressed_stream_bomb_is_cut(start, evil: EvilUpstream, path: str) -> None:
    """300 MB of small valid events in 0.3 MB of gzip: no piece may expand beyond sse_event_limit."""
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got, spent = streamed_with_budget(dump, path, "gzip-stream-bomb", budget=10)
    growth = peak_rss_mb(pid) - before
    assert "expands beyond" in last_error(got) and "cannot be decoded" not in last_error(got), got
    assert growth < 16 + 64, f"peak RSS grew by {growth:.0f} MB"
    assert spent < 10


@pytest.mark.hostile_heavy
@pytest.mark.parametrize("path", STREAM_ROUTES)
def test_a_compressed_flood_is_relayed_whole_without_being_gathered(start, evil: EvilUpstream, path: str) -> None:
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got = ask(dump.port, path, "gzip-flood", True, seconds=60, keep=64 * 1024)
    growth = peak_rss_mb(pid) - before
    assert got.status == 200 and got.complete and not last_error(got), got
    assert got.length > (4 if path == "/api/chat" else 20) * MB, "every event was relayed"
    assert growth < 48, f"peak RSS grew by {growth:.0f} MB (24 MB gathered whole costs about 3 times that)"
