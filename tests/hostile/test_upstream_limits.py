"""§6 Upstream time and size limits that hold.

- `upstream_timeout` also covers a TLS handshake that never completes (504), counts bytes of a
  non-streamed body still arriving (a slow but live body is not cut), and does not blame the
  upstream for a client that stopped reading (backpressure).
- One SSE event (or line) may be at most `sse_event_limit` (default 16 MB); more is a clear error at
  the end of the stream, and the work stays linear (CPU time is measured from /proc, never the clock).
- One non-streamed answer may be at most `upstream_body_limit` (default 256 MB) once decoded: a
  larger `Content-Length` is refused at its headers, a gzip bomb (the proxy asked for identity)
  is decoded at most that far; both are a 502 with a message naming the option, and the proxy's
  peak memory stays bounded by the limit (measured as VmHWM from /proc).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hostile.evil import MB, EvilUpstream, Tarpit
from hostile.test_echoed_secrets import body_for
from hostile.tools import (
    HELLO,
    Fetched,
    cpu_seconds,
    fetch,
    peak_rss_mb,
    request_bytes,
    reset_peak,
    strict_json,
    with_cpu_budget,
)

pytestmark = pytest.mark.e2e


def ask(port: int, path: str, act: str, stream: bool, **kwargs) -> Fetched:
    return fetch(port, request_bytes("POST", path, body_for(path, f"evil:{act}", stream)), **kwargs)


def last_error(got: Fetched) -> str:
    """The error a stream ends with: an NDJSON `{"error"}` line or a /v1 `data: {"error": {...}}` event."""
    tail = bytes(got.last).decode("utf-8", "replace").strip()
    line = tail.rsplit("\n", 1)[-1].strip()
    if line.startswith("data:"):
        line = line[5:].strip()
    try:
        error = strict_json(line).get("error")
    except ValueError:
        return ""
    return (error.get("message") if isinstance(error, dict) else error) or ""


def error_of(got: Fetched) -> str:
    try:
        error = strict_json(bytes(got.first)).get("error")
    except ValueError:
        return ""
    return (error.get("message") if isinstance(error, dict) else error) or ""


# ---------------------------------------------------------------------------------------------
# Time


def test_tls_handshake_that_never_completes_is_a_504(start) -> None:
    with Tarpit() as tarpit:
        dump = start("upstream_timeout=1", base_url=f"https://127.0.0.1:{tarpit.port}/v1")
        calls = [("/api/chat", False), ("/api/chat", True), ("/v1/chat/completions", False)]
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda call: ask(dump.port, call[0], "ok", call[1], seconds=6), calls))
        assert tarpit.connections >= 1
    for (path, stream), got in zip(calls, answers, strict=False):
        assert got.status == 504, (path, stream, got)
        assert "upstream_timeout" in error_of(got), got


def test_slow_but_live_body_is_not_cut(start, evil: EvilUpstream) -> None:
    """The upstream trickles a whole answer over 3 s, never silent for more than 0.15 s; upstream_timeout is 1 s."""
    dump = start("upstream_timeout=1")
    calls = [("/api/chat", False), ("/v1/chat/completions", False), ("/api/embed", False)]
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda call: ask(dump.port, call[0], "slow-body", call[1], seconds=20), calls))
    for (path, _), got in zip(calls, answers, strict=False):
        assert got.status == 200 and got.complete, (path, got)
        strict_json(bytes(got.first))


def test_a_client_that_stops_reading_is_not_blamed_on_the_upstream(start, evil: EvilUpstream) -> None:
    """A 24 MB stream; the client reads 1 MB and then nothing for 3 s (upstream_timeout 1 s): the
    proxy stops reading the upstream meanwhile (backpressure), which is no upstream silence."""
    dump = start("upstream_timeout=1")
    got = ask(dump.port, "/api/chat", "flood", True, seconds=60, pause_after=MB, pause=3, keep=64 * 1024)
    assert got.status == 200 and got.complete, got
    assert b'"done":true' in bytes(got.last) and b'"error"' not in bytes(got.last), bytes(got.last[-500:])
    got = ask(dump.port, "/v1/chat/completions", "flood", True, seconds=60, pause_after=MB, pause=3, keep=64 * 1024)
    assert got.status == 200 and got.complete and bytes(got.last).rstrip().endswith(b"data: [DONE]"), got


# ---------------------------------------------------------------------------------------------
# Size


def test_limits_are_options(start, evil: EvilUpstream) -> None:
    dump = start("sse_event_limit=64k", "upstream_body_limit=1m")
    for path in ("/api/chat", "/v1/chat/completions"):
        got = ask(dump.port, path, "huge-event", True, seconds=5, keep=64 * 1024)
        assert got.length < 2 * MB and "sse_event_limit" in last_error(got), (path, got)
        got = ask(dump.port, path, "huge-body", False, seconds=5, keep=64 * 1024)
        assert got.status == 502 and "upstream_body_limit" in error_of(got), (path, got)


def streamed_with_budget(dump, path: str, act: str, budget: float) -> tuple[Fetched, float]:
    return with_cpu_budget(
        dump.process.pid, budget, lambda abort: ask(dump.port, path, act, True, abort=abort, keep=256 * 1024)
    )


@pytest.mark.hostile_heavy
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_64_mb_event_costs_bounded_cpu_and_ends_with_an_error(start, evil: EvilUpstream, path: str) -> None:
    dump = start()
    got, spent = streamed_with_budget(dump, path, "huge-event", budget=6)
    assert spent < 6, f"{spent:.1f} s of CPU for one 64 MB event"
    assert got.status == 200 and "sse_event_limit" in last_error(got), got
    assert got.length < 24 * MB, "the event was cut at the limit, not relayed"
    assert (
        httpx.post(dump.url + "/api/chat", json={"model": "m", "messages": HELLO, "stream": False}).status_code == 200
    )


@pytest.mark.hostile_heavy
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_data_lines_without_a_blank_line_are_cut(start, evil: EvilUpstream, path: str) -> None:
    """96 MB of `data:` lines that never end their event: cut at sse_event_limit, memory bounded."""
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got, spent = streamed_with_budget(dump, path, "no-blank-line", budget=10)
    growth = peak_rss_mb(pid) - before
    assert "sse_event_limit" in last_error(got), got
    assert got.length < 24 * MB, got
    assert growth < 16 + 64, f"peak RSS grew by {growth:.0f} MB"
    assert spent < 10


BOMB_ROUTES = [("/api/chat", False), ("/api/embed", False), ("/v1/chat/completions", False), ("/v1/embeddings", False)]


@pytest.mark.hostile_heavy
@pytest.mark.parametrize(("path", "stream"), BOMB_ROUTES)
def test_gzip_bomb_is_a_502_and_memory_stays_bounded(start, evil: EvilUpstream, path: str, stream: bool) -> None:
    dump = start("upstream_body_limit=16m")
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got = ask(dump.port, path, "gzip-bomb", stream, seconds=60, keep=64 * 1024)
    growth = peak_rss_mb(pid) - before
    assert got.status == 502 and "upstream_body_limit" in error_of(got), got
    assert growth < 16 + 64, f"peak RSS grew by {growth:.0f} MB"


@pytest.mark.hostile_heavy
def test_gzip_bomb_with_the_default_limit(start, evil: EvilUpstream) -> None:
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got = ask(dump.port, "/api/chat", "gzip-bomb", False, seconds=60, keep=64 * 1024)
    growth = peak_rss_mb(pid) - before
    assert got.status == 502 and "upstream_body_limit" in error_of(got), got
    assert growth < 256 + 96, f"peak RSS grew by {growth:.0f} MB"


@pytest.mark.hostile_heavy
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_300_mb_answer_is_refused_at_its_headers(start, evil: EvilUpstream, path: str) -> None:
    """Content-Length 300 MB > upstream_body_limit (default 256 MB): 502 before the body is read."""
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    cpu = cpu_seconds(pid)
    got = ask(dump.port, path, "huge-body", False, seconds=60, keep=64 * 1024)
    growth = peak_rss_mb(pid) - before
    assert got.status == 502 and "upstream_body_limit" in error_of(got), got
    assert growth < 64, f"peak RSS grew by {growth:.0f} MB"
    assert cpu_seconds(pid) - cpu < 2
