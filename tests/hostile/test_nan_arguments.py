"""Issue 21 §7: NaN and Infinity in an upstream's tool-call arguments never reach a client as invalid JSON.

The one rule, for every translated family, streamed and whole: they become `null` (as JavaScript's
`JSON.stringify` writes them), also when cut between two fragments; text that merely says "NaN"
stays. Every byte the client gets is read by a strict JSON parser (no NaN, no Infinity).
"""

from __future__ import annotations

import json

import httpx
import pytest

from hostile.evil import EvilUpstream
from hostile.tools import strict_json

pytestmark = pytest.mark.e2e

EXPECTED = {"x": None, "y": [None, None], "z": "NaN stays text"}


def datas(body: bytes) -> list[bytes]:
    return [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]


def arguments_of(route: str, body: bytes, stream: bool) -> object:
    if route == "/api/chat":
        lines = [strict_json(line) for line in body.splitlines() if line.strip()]
        calls = [c for line in lines for c in line["message"].get("tool_calls", ())]
        assert len(calls) == 1, lines
        return calls[0]["function"]["arguments"]
    if route == "/v1/messages":
        if not stream:
            return next(b for b in strict_json(body)["content"] if b["type"] == "tool_use")["input"]
        events = [strict_json(d) for d in datas(body)]
        return strict_json("".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"))
    if not stream:
        item = next(i for i in strict_json(body)["output"] if i["type"] == "function_call")
        return strict_json(item["arguments"])
    events = [strict_json(d) for d in datas(body)]
    deltas = strict_json("".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"))
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert strict_json(done["arguments"]) == deltas
    return deltas


@pytest.mark.parametrize("route", ["/api/chat", "/v1/messages", "/v1/responses"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_nan_and_infinity_in_tool_arguments_become_null(start, evil: EvilUpstream, route: str, stream: bool) -> None:
    dump = start()
    hi = [{"role": "user", "content": "hi"}]
    body: dict = {"model": "evil:nan-arguments", "stream": stream}
    body |= {"input": "hi"} if route == "/v1/responses" else {"messages": hi}
    if route == "/v1/messages":
        body["max_tokens"] = 100
    answer = httpx.post(dump.url + route, json=body, timeout=20)
    assert answer.status_code == 200, answer.text
    for line in answer.content.splitlines():  # every line of every answer is strict JSON, or SSE around it
        text = line[5:].strip() if line.startswith(b"data:") else line.strip()
        if text and not line.startswith(b"event:"):
            strict_json(text)
    assert arguments_of(route, answer.content, stream) == EXPECTED
    assert json.dumps(EXPECTED)  # (the expected value itself is plain JSON)
