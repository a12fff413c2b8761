"""Load-generating client for the benchmarks: raw asyncio HTTP/1.1 (stdlib only).

It speaks just enough HTTP/1.1 (keep-alive, Content-Length, chunked, close-delimited) to time
every body piece as it is read, and reads SSE (`data: ...`) or Ollama NDJSON streams line by
line. Each content event carries the upstream's write time (`@<monotonic ns>@`, see
upstream.py), so `read time - write time` is the per-event relay delay.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field

from bench.upstream import MARK_RE

USER_MSG = [{"role": "user", "content": "Hello, how are you?"}]


def chat_body(api: str, model: str, stream: bool) -> bytes:
    """A chat request body for `api` "openai" (/v1/chat/completions) or "ollama" (/api/chat)."""
    if api == "openai":
        d: dict = {"model": model, "messages": USER_MSG, "stream": stream}
        if stream:
            d["stream_options"] = {"include_usage": True}
    else:
        d = {"model": model, "messages": USER_MSG, "stream": stream}
    return json.dumps(d).encode()


class HTTPError(Exception):
    pass


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes | None
    t_headers: int  # monotonic ns when the header block was read


class Conn:
    def __init__(self, host: str, port: int, ssl=None):
        self.host, self.port = host, port
        self.ssl = ssl  # an ssl.SSLContext for HTTPS
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20, ssl=self.ssl)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    @property
    def is_open(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    async def request(self, method: str, path: str, body: bytes = b"", on_chunk=None) -> Response:
        """Send one request and read the response.

        With `on_chunk(data, t_ns)` the body is handed over piece by piece as read (and
        Response.body is None); otherwise it is collected.
        """
        if not self.is_open:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUser-Agent: bench/1\r\nAccept: */*\r\n"
        if body or method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        r = self.reader
        try:
            raw = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            self.close()
            raise HTTPError(f"connection closed before response ({len(e.partial)} bytes)") from None
        t_headers = time.monotonic_ns()
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            self.close()
            raise HTTPError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        collected: list[bytes] | None = None if on_chunk else []
        emit = on_chunk if on_chunk else (lambda data, t: collected.append(data))  # type: ignore[union-attr]
        keep_alive = headers.get(b"connection", b"").lower() != b"close"
        if method == "HEAD" or status in (204, 304):
            pass
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (await r.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                data = await r.readexactly(size + 2)
                emit(data[:-2], time.monotonic_ns())
        elif b"content-length" in headers:
            left = int(headers[b"content-length"])
            while left > 0:
                data = await r.read(min(left, 1 << 16))
                if not data:
                    raise HTTPError("connection closed inside the body")
                left -= len(data)
                emit(data, time.monotonic_ns())
        else:  # close-delimited
            keep_alive = False
            while data := await r.read(1 << 16):
                emit(data, time.monotonic_ns())
        if not keep_alive:
            self.close()
        return Response(status, headers, b"".join(collected) if collected is not None else None, t_headers)


class StreamTracker:
    """Splits a streamed body into lines; records (upstream write ns, client read ns) per event."""

    def __init__(self, fmt: str):
        self.fmt = fmt  # "sse" or "ndjson"
        self.buf = b""
        self.events: list[tuple[int, int]] = []
        self.done = False
        self.error: bytes | None = None
        self.first_line: bytes | None = None

    def feed(self, data: bytes, t: int) -> None:
        buf = self.buf + data if self.buf else data
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        search = MARK_RE.search
        for line in lines:
            if not line or line == b"\r":
                continue
            m = search(line)
            if m:
                self.events.append((int(m.group(1)), t))
                if self.fmt == "ndjson" and b'"done":true' in line.replace(b" ", b""):
                    self.done = True
                continue
            if self.first_line is None:
                self.first_line = line[:300]
            if self.fmt == "sse":
                if line.startswith((b"data: [DONE]", b"data:[DONE]")):
                    self.done = True
                elif line.startswith(b"data:") and b'"error"' in line and self.error is None:
                    self.error = line[:300]
            else:
                compact = line.replace(b" ", b"")
                if b'"done":true' in compact:
                    self.done = True
                if b'"error"' in compact and self.error is None:
                    self.error = line[:300]


@dataclass
class StreamResult:
    ok: bool
    status: int = 0
    events: list[tuple[int, int]] = field(default_factory=list)
    t_sent: int = 0
    t_end: int = 0
    error: str = ""


async def one_stream(conn: Conn, path: str, body: bytes, fmt: str, expect_events: int, timeout: float) -> StreamResult:
    tr = StreamTracker(fmt)
    t_sent = time.monotonic_ns()
    try:
        resp = await asyncio.wait_for(conn.request("POST", path, body, on_chunk=tr.feed), timeout)
    except (OSError, HTTPError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        conn.close()
        return StreamResult(False, 0, tr.events, t_sent, time.monotonic_ns(), f"{type(e).__name__}: {e}"[:200])
    except TimeoutError:
        conn.close()
        return StreamResult(False, 0, tr.events, t_sent, time.monotonic_ns(), "timeout")
    t_end = time.monotonic_ns()
    if resp.status != 200:
        return StreamResult(False, resp.status, tr.events, t_sent, t_end, f"HTTP {resp.status}")
    if tr.error is not None:
        return StreamResult(False, 200, tr.events, t_sent, t_end, f"error line: {tr.error[:120]!r}")
    if not tr.done:
        return StreamResult(False, 200, tr.events, t_sent, t_end, "stream ended without done/[DONE]")
    if len(tr.events) != expect_events:
        return StreamResult(False, 200, tr.events, t_sent, t_end, f"{len(tr.events)} of {expect_events} events arrived")
    return StreamResult(True, 200, tr.events, t_sent, t_end)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no data."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100.0 * len(s) + 0.5) - 1))
    return s[k]


def summarize_errors(errors: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in errors:
        out[e] = out.get(e, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:5])


# -- measurements ---------------------------------------------------------------------------


async def closed_loop(
    host: str, port: int, path: str, body: bytes, concurrency: int, duration: float, warmup: float = 0.5
) -> dict:
    """Non-streaming requests, `concurrency` keep-alive connections, for `duration` seconds.
    The Python fallback when wrk is absent (it is slower than wrk: see RESULTS.md)."""
    lat: list[float] = []
    errors: list[str] = []
    count = 0
    t_start = time.monotonic()
    t_measure = t_start + warmup
    t_stop = t_measure + duration

    async def worker() -> None:
        nonlocal count
        c = Conn(host, port)
        try:
            while (now := time.monotonic()) < t_stop:
                t0 = time.perf_counter()
                try:
                    resp = await asyncio.wait_for(c.request("POST", path, body), 10)
                    ok = resp.status == 200
                    err = "" if ok else f"HTTP {resp.status}"
                except (OSError, HTTPError, asyncio.IncompleteReadError, TimeoutError) as e:
                    c.close()
                    ok, err = False, type(e).__name__
                dt = time.perf_counter() - t0
                if now >= t_measure:
                    if ok:
                        lat.append(dt * 1000)
                        count += 1
                    else:
                        errors.append(err)
                if not ok:
                    await asyncio.sleep(0.01)
        finally:
            c.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "tool": "python",
        "requests": count,
        "rps": count / duration,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "errors": len(errors),
        "error_kinds": summarize_errors(errors),
    }


def _delay_stats(results: list[StreamResult], nominal_gap_ms: float) -> dict:
    relay: list[float] = []
    gap_err: list[float] = []
    client_gaps: list[float] = []
    coalesced = 0
    pairs = 0
    for r in results:
        ev = r.events
        for i, (w, rd) in enumerate(ev):
            relay.append((rd - w) / 1e6)
            if i:
                up_gap = (w - ev[i - 1][0]) / 1e6
                cl_gap = (rd - ev[i - 1][1]) / 1e6
                client_gaps.append(cl_gap)
                gap_err.append(abs(cl_gap - up_gap))
                pairs += 1
                if up_gap >= 1.0 and cl_gap < 0.2 * up_gap:
                    coalesced += 1
    return {
        "events": len(relay),
        "relay_p50_ms": pct(relay, 50),
        "relay_p99_ms": pct(relay, 99),
        "relay_max_ms": max(relay) if relay else None,
        "gap_nominal_ms": nominal_gap_ms,
        "gap_client_p50_ms": pct(client_gaps, 50),
        "gap_error_p50_ms": pct(gap_err, 50),
        "gap_error_p99_ms": pct(gap_err, 99),
        "coalesced": coalesced,
        "gap_pairs": pairs,
    }


async def stream_series(
    host: str, port: int, path: str, body: bytes, fmt: str, n: int, count: int, timeout: float
) -> list[StreamResult]:
    """`count` streams one after another on one keep-alive connection."""
    c = Conn(host, port)
    results: list[StreamResult] = []
    try:
        for _ in range(count):
            results.append(await one_stream(c, path, body, fmt, n, timeout))
    finally:
        c.close()
    return results


def relay_stats(results: list[StreamResult], delay_ms: float) -> dict:
    """Per-event relay delays and inter-arrival errors, pooled over `results`."""
    out = _delay_stats([r for r in results if r.events], delay_ms)
    errs = [r.error for r in results if not r.ok]
    out.update(streams=len(results), errors=len(errs), error_kinds=summarize_errors(errs))
    return out


def ttft_stats(results: list[StreamResult]) -> dict:
    """Request sent -> first content event read, pooled over `results`."""
    ttft = [(r.events[0][1] - r.t_sent) / 1e6 for r in results if r.ok and r.events]
    total = [(r.t_end - r.t_sent) / 1e6 for r in results if r.ok and r.events]
    errs = [r.error for r in results if not (r.ok and r.events)]
    return {
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p99_ms": pct(ttft, 99),
        "total_p50_ms": pct(total, 50),
        "samples": len(ttft),
        "errors": len(errs),
        "error_kinds": summarize_errors(errs),
    }


async def relay_test(
    host: str, port: int, path: str, body: bytes, fmt: str, n: int, delay_ms: float, streams: int, timeout: float
) -> dict:
    return relay_stats(await stream_series(host, port, path, body, fmt, n, streams, timeout), delay_ms)


async def ttft_test(
    host: str, port: int, path: str, body: bytes, fmt: str, n: int, requests: int, timeout: float
) -> dict:
    return ttft_stats(await stream_series(host, port, path, body, fmt, n, requests, timeout))


async def stream_throughput(
    host: str, port: int, path: str, body: bytes, fmt: str, n: int, concurrency: int, timeout: float
) -> dict:
    """`concurrency` streams of `n` back-to-back events (no delay): events relayed per second."""
    t0 = time.monotonic()

    async def one() -> StreamResult:
        c = Conn(host, port)
        try:
            return await one_stream(c, path, body, fmt, n, timeout)
        finally:
            c.close()

    results = await asyncio.gather(*(one() for _ in range(concurrency)))
    wall = time.monotonic() - t0
    events = sum(len(r.events) for r in results)
    errs = [r.error for r in results if not r.ok]
    return {
        "events": events,
        "seconds": wall,
        "events_per_s": events / wall if wall else None,
        "errors": len(errs),
        "error_kinds": summarize_errors(errs),
    }


async def held_streams(
    host: str,
    port: int,
    path: str,
    api: str,
    model: str,
    fmt: str,
    n: int,
    delay_ms: float,
    count: int,
    ramp_s: float,
    timeout: float,
) -> dict:
    """`count` concurrent streams of `model`, opened over `ramp_s` seconds, each `n` events
    `delay_ms` apart (so all are open at once for a while). Each stream has a phase of its own
    on the upstream's fixed schedule (see upstream.py), spread evenly over the period: the
    upstream writes as evenly when the streams are held whichever proxy opened them, and how
    fast a proxy opens them cannot bunch their events for good. Errors = failed connects,
    non-200s, truncated or incomplete streams."""
    t0 = time.monotonic()
    rng = random.Random(count)
    phases = [delay_ms * i / max(count, 1) for i in range(count)]
    rng.shuffle(phases)

    async def one(i: int) -> StreamResult:
        body = chat_body(api, f"{model}-p{phases[i]:.3f}", True)
        await asyncio.sleep(ramp_s * i / max(count, 1) + rng.random() * 0.001)
        c = Conn(host, port)
        try:
            return await one_stream(c, path, body, fmt, n, timeout)
        finally:
            c.close()

    results = await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.monotonic() - t0
    errs = [r.error for r in results if not r.ok]
    st = _delay_stats([r for r in results if r.events], delay_ms)
    # how many were open at the same time: max overlap of [t_sent, t_end]
    marks = sorted([(r.t_sent, 1) for r in results] + [(r.t_end, -1) for r in results])
    cur = peak = 0
    for _, d in marks:
        cur += d
        peak = max(peak, cur)
    # "steady": only events written once every stream had its first event, i.e. when all
    # connections were set up; separates the cost of holding streams from that of opening them
    firsts = [r.events[0][1] for r in results if r.events]
    steady: list[float] = []
    if firsts:
        t_all = max(firsts)
        steady = [(rd - w) / 1e6 for r in results for w, rd in r.events if w > t_all]
    # how evenly the upstream wrote in that window: the events written in the same millisecond
    # as the median event (equal across setups when the schedule does not depend on the proxy)
    per_ms: dict[int, int] = {}
    for r in results:
        for w, _ in r.events:
            if firsts and w > t_all:
                per_ms[w // 1_000_000] = per_ms.get(w // 1_000_000, 0) + 1
    burst = sorted(c for c in per_ms.values() for _ in range(c))
    return {
        "count": count,
        "ok": count - len(errs),
        "errors": len(errs),
        "error_kinds": summarize_errors(errs),
        "seconds": wall,
        "peak_open": peak,
        "relay_p50_ms": st["relay_p50_ms"],
        "relay_p99_ms": st["relay_p99_ms"],
        "steady_events": len(steady),
        "steady_p50_ms": pct(steady, 50),
        "steady_p99_ms": pct(steady, 99),
        "steady_burst_p50": pct([float(b) for b in burst], 50),
    }


async def sanity(host: str, port: int, api: str, path: str, model_stream: str, stream: bool = True) -> str | None:
    """None if a non-stream and a stream request both give the expected shape, else why not."""
    fmt = "sse" if api == "openai" else "ndjson"
    c = Conn(host, port)
    try:
        resp = await asyncio.wait_for(c.request("POST", path, chat_body(api, "bench", False)), 15)
        if resp.status != 200:
            return f"non-stream: HTTP {resp.status}: {(resp.body or b'')[:200]!r}"
        try:
            d = json.loads(resp.body or b"")
        except ValueError:
            return f"non-stream: not JSON: {(resp.body or b'')[:200]!r}"
        content = d["choices"][0]["message"]["content"] if api == "openai" else (d.get("message") or {}).get("content")
        if not content or "computer program" not in content:
            return f"non-stream: unexpected body {(resp.body or b'')[:200]!r}"
        if not stream:
            return None
        r = await one_stream(c, path, chat_body(api, model_stream, True), fmt, 3, 15)
        if not r.ok:
            return f"stream: {r.error}"
    except (OSError, HTTPError, TimeoutError, asyncio.IncompleteReadError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        c.close()
    return None


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None
