"""Soak: thousands of mixed requests with injected faults through one mitmdump, on loopback.

Every request must be answered as expected (nothing lost, no hang), the proxy's memory must stay
stable (VmRSS of the mitmdump process, with a generous bound), and its log must stay clean.
Bounded: a fixed number of requests, each with a client timeout; no assertion on timings.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "3000"))
WORKERS = 16
MEMORY_GROWTH_LIMIT_MB = 60  # generous: a leak of even 20 KB per request would exceed it

CHAT = "/api/chat"
GENERATE = "/api/generate"
USER = [{"role": "user", "content": "soak test words"}]

Check = Callable[[int, dict[str, str], bytes], bool]


def lines_of(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def stream_done(status: int, headers: dict[str, str], body: bytes) -> bool:
    lines = lines_of(body)
    return status == 200 and bool(lines) and lines[-1].get("done") is True and "error" not in lines[-1]


def stream_error(status: int, headers: dict[str, str], body: bytes) -> bool:
    lines = lines_of(body)
    return status == 200 and bool(lines) and "error" in lines[-1]


def json_status(expected: int, key: str = "error") -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> bool:
        return status == expected and key in json.loads(body)

    return check


def text_is(expected: int, text: str) -> Check:
    return lambda status, headers, body: status == expected and body.decode() == text


# name → (weight, method, path, body, check)
KINDS: dict[str, tuple[int, str, str, object, Check]] = {
    "chat stream": (20, "POST", CHAT, {"model": "m", "messages": USER}, stream_done),
    "chat whole": (10, "POST", CHAT, {"model": "m", "messages": USER, "stream": False}, json_status(200, "message")),
    "generate stream": (6, "POST", GENERATE, {"model": "m", "prompt": "p q"}, stream_done),
    "generate whole": (
        6,
        "POST",
        GENERATE,
        {"model": "m", "prompt": "p q", "stream": False},
        json_status(200, "response"),
    ),
    "tool calls (recorded)": (
        3,
        "POST",
        CHAT,
        {"model": "rec:chat-stream/tool-calls-parallel", "messages": USER},
        stream_done,
    ),
    "v1 stream": (
        3,
        "POST",
        "/v1/chat/completions",
        {"model": "m", "messages": USER, "stream": True},
        lambda s, h, b: s == 200 and b.rstrip().endswith(b"data: [DONE]"),
    ),
    "v1 whole": (2, "POST", "/v1/chat/completions", {"model": "m", "messages": USER}, json_status(200, "choices")),
    "tags": (2, "GET", "/api/tags", None, json_status(200, "models")),
    "version": (4, "GET", "/api/version", None, json_status(200, "version")),
    "root": (2, "GET", "/", None, text_is(200, "Ollama is running")),
    "load": (2, "POST", CHAT, {"model": "m", "messages": []}, stream_done),
    "bad json": (3, "POST", CHAT, b"{not json", json_status(400)),
    "bad type": (3, "POST", GENERATE, {"model": "m", "prompt": 3}, json_status(400)),
    "bad image": (
        2,
        "POST",
        CHAT,
        {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["***"]}]},
        json_status(400),
    ),
    "unknown route": (2, "GET", "/api/nothing", None, text_is(404, "404 page not found")),
    "wrong method": (2, "DELETE", CHAT, None, text_is(405, "405 method not allowed")),
    "unknown model": (2, "POST", CHAT, {"model": "missing-model", "messages": USER}, json_status(404)),
    "upstream 401": (2, "POST", CHAT, {"model": "fault:401", "messages": USER}, json_status(401)),
    "upstream 429": (
        2,
        "POST",
        CHAT,
        {"model": "fault:429", "messages": USER, "stream": False},
        lambda s, h, b: s == 429 and h.get("retry-after") == "7",
    ),
    "upstream 500": (2, "POST", CHAT, {"model": "fault:500", "messages": USER}, json_status(500)),
    "upstream 503 html": (2, "POST", GENERATE, {"model": "fault:503-html", "prompt": "x"}, json_status(503)),
    "upstream 502 empty": (2, "POST", CHAT, {"model": "fault:502-empty", "messages": USER}, json_status(502)),
    "malformed sse": (2, "POST", CHAT, {"model": "fault:malformed-sse", "messages": USER}, stream_error),
    "no done": (2, "POST", CHAT, {"model": "fault:no-done", "messages": USER}, stream_error),
    "error event": (2, "POST", GENERATE, {"model": "fault:error-event", "prompt": "x"}, stream_error),
    "reset mid-stream": (2, "POST", CHAT, {"model": "fault:reset", "messages": USER}, stream_error),
    "close mid-stream": (2, "POST", CHAT, {"model": "fault:close", "messages": USER}, stream_error),
    "truncated body": (
        2,
        "POST",
        CHAT,
        {"model": "fault:truncated-json", "messages": USER, "stream": False},
        json_status(502),
    ),
    "not json": (2, "POST", CHAT, {"model": "fault:not-json", "messages": USER, "stream": False}, json_status(502)),
    "client leaves": (
        3,
        "POST",
        CHAT,
        {"model": "fault:slow", "messages": USER},
        lambda s, h, b: s == 200 and b != b"",
    ),
}
# Rare and slow: an upstream that never answers (upstream_timeout=3 → 504).
HANGS = 12


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def run_one(client: httpx.Client, kind: str) -> tuple[str, bool, str]:
    if kind == "hang":
        method, path, body, check = (
            "POST",
            CHAT,
            {"model": "fault:hang", "messages": USER, "stream": False},
            json_status(504),
        )
    else:
        _, method, path, body, check = KINDS[kind]
    content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    try:
        with client.stream(method, path, content=content) as response:
            if kind == "client leaves":
                data = next(response.iter_raw(), b"")  # one piece, then hang up mid-stream
            else:
                data = response.read()
            ok = check(response.status_code, dict(response.headers), data)
            return kind, ok, "" if ok else f"{response.status_code} {data[:300]!r}"
    except Exception as e:  # noqa: BLE001 - every failure is a lost request, reported below
        return kind, False, f"{type(e).__name__}: {e}"


def test_soak(upstream: UpstreamServer, tmp_path) -> None:
    dump = Mitmdump(
        tmp_path, "reverse", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", "upstream_timeout=3"
    )
    try:
        rng = random.Random(5)
        names = list(KINDS)
        weights = [KINDS[n][0] for n in names]
        plan = rng.choices(names, weights, k=REQUESTS)
        for position in rng.sample(range(REQUESTS // 4, REQUESTS), HANGS):
            plan[position] = "hang"
        local = threading.local()

        def work(kind: str) -> tuple[str, bool, str]:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=dump.url, timeout=20)
            return run_one(local.client, kind)

        warm_up = REQUESTS // 10
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(work, plan[:warm_up]))
            rss_start = rss_mb(dump.process.pid)
            started = time.monotonic()
            results += list(pool.map(work, plan[warm_up:]))
            elapsed = time.monotonic() - started
        time.sleep(0.5)
        rss_end = rss_mb(dump.process.pid)

        answered = Counter(kind for kind, ok, _ in results if ok)
        failures = [(kind, why) for kind, ok, why in results if not ok]
        print(
            f"\nsoak: {len(results)} requests ({len(results) - warm_up} measured in {elapsed:.1f} s, "
            f"{(len(results) - warm_up) / elapsed:.0f}/s), {sum(answered.values())} answered as expected; "
            f"mitmdump VmRSS {rss_start:.1f} MB after warm-up → {rss_end:.1f} MB at the end; kinds: {dict(answered)}"
        )
        assert len(results) == REQUESTS
        assert not failures, f"{len(failures)} requests lost or wrong, e.g. {failures[:5]}"
        assert answered["hang"] == HANGS
        assert rss_end - rss_start < MEMORY_GROWTH_LIMIT_MB, f"memory grew from {rss_start:.1f} to {rss_end:.1f} MB"
        # Still serving, and nothing went wrong inside.
        assert httpx.get(dump.url + "/api/version").status_code == 200
        log = dump.log()
        assert "Traceback" not in log and "Addon error" not in log and "has crashed" not in log, log[-3000:]
        assert TEST_KEY not in log
    finally:
        dump.stop()
