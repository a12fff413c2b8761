"""Issue 20: the same upstream answer reaches every API family the same way.

The corpus in tests/fixtures/quirks/ (README there: which server does what) holds, per quirk of
real servers, a stream (`.sse`) and a whole answer (`.json`), and what they mean
(`expected.json`: text, thinking, tool calls by name and parsed arguments, finish). Each is
converted by the proxy's own converters for Ollama `/api/chat` (and `/api/generate` where there
are no calls), Anthropic `/v1/messages` and OpenAI `/v1/responses`, streamed and whole, and read
back by each family's real SDK (ollama, anthropic, openai), whose reading must give the expected
answer. Streams are also cut into pieces every which way (hypothesis): the answer must not change.
Bytes no strict JSON parser reads (NaN, Infinity) must never reach a client.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.translate.anthropic import MessagesStream, messages_response
from addon.translate.ndjson import ollama_stream
from addon.translate.response import Clock, whole_answer
from addon.translate.responses import ResponsesStream, responses_answer
from addon.translate.stream import ChunkStream

QUIRKS = Path(__file__).parent / "fixtures" / "quirks"
EXPECTED: dict[str, Any] = json.loads((QUIRKS / "expected.json").read_text())
NAMES = sorted(EXPECTED)
FAMILIES = ["chat", "generate", "messages", "responses"]
TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("get_weather", "get_time", "plot")]


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict(text: str | bytes) -> Any:
    return json.loads(text, parse_constant=_refuse)


def sse_body(name: str) -> bytes:
    return (QUIRKS / f"{name}.sse").read_bytes()


def whole_body(name: str) -> Any:
    return json.loads((QUIRKS / f"{name}.json").read_text())  # lenient: the upstream may send NaN


def has_calls(name: str) -> bool:
    return bool(EXPECTED[name]["expected"]["calls"])


# ---------------------------------------------------------------------------------------------
# What the proxy sends, per family: streamed (from SSE pieces) and whole


def converter(family: str) -> ChunkStream:
    if family in ("chat", "generate"):
        return ollama_stream(family, "m", Clock(time.time_ns()))  # type: ignore[arg-type]
    if family == "messages":
        return ChunkStream(MessagesStream("m", 5))
    return ChunkStream(ResponsesStream("m", {"model": "m", "input": "hi", "tools": TOOLS}))


def streamed(family: str, body: bytes, cuts: list[int] | None = None) -> bytes:
    stream = converter(family)
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts or ())})
    out = [stream.feed(body[a:b]) for a, b in itertools.pairwise(points)]
    return b"".join(out) + stream.finish()


def whole(family: str, body: Any) -> bytes:
    if family in ("chat", "generate"):
        answer, _ = whole_answer(family, body, "m", Clock(time.time_ns()))  # type: ignore[arg-type]
        return json.dumps(answer, ensure_ascii=False).encode()
    if family == "messages":
        message, _ = messages_response(body, "m")
        return json.dumps(message, ensure_ascii=False).encode()
    return json.dumps(responses_answer(body, "m", {"model": "m", "input": "hi", "tools": TOOLS})).encode()


# ---------------------------------------------------------------------------------------------
# What each family's SDK reads of it: (text, thinking, [(name, arguments)], finish)


def read_ollama(family: str, data: bytes, stream: bool) -> dict[str, Any]:
    for line in data.splitlines():
        strict(line)
    client = ollama.Client(
        host="http://ollama.test",
        transport=httpx.MockTransport(lambda _: httpx.Response(200, content=data)),
    )
    if family == "chat":
        parts = client.chat(model="m", messages=[{"role": "user", "content": "hi"}], stream=stream)
    else:
        parts = client.generate(model="m", prompt="hi", stream=stream)
    text, thinking, calls, reason = "", "", [], None
    for part in parts if stream else [parts]:
        if family == "chat":
            text += part.message.content or ""
            thinking += part.message.thinking or ""
            calls += [[c.function.name, dict(c.function.arguments)] for c in part.message.tool_calls or ()]
        else:
            text += part.response or ""
            thinking += part.thinking or ""
        reason = part.done_reason if part.done else reason
    finish = {"stop": "tool_calls" if calls else "stop", "length": "length"}[reason or ""]
    return {"text": text, "thinking": thinking, "calls": calls, "finish": finish}


def read_messages(data: bytes, stream: bool) -> dict[str, Any]:
    if not stream:
        strict(data)
    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://proxy.test",
        max_retries=0,
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(
                lambda _: httpx2.Response(
                    200,
                    content=data,
                    headers={"content-type": "text/event-stream" if stream else "application/json"},
                )
            )
        ),
    )
    ask: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        for line in data.splitlines():
            if line.startswith(b"data:"):
                strict(line[5:])
        partial = [
            strict(line[5:])["delta"]["partial_json"]
            for line in data.splitlines()
            if line.startswith(b"data:") and b'"input_json_delta"' in line
        ]
        assert all(isinstance(p, str) for p in partial)
        with client.messages.stream(**ask) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**ask)
    blocks = message.content
    calls = [[b.name, b.input] for b in blocks if b.type == "tool_use"]
    for block in blocks:
        if block.type == "tool_use":
            strict(json.dumps(block.input))
    finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}[message.stop_reason or ""]
    return {
        "text": "".join(b.text for b in blocks if b.type == "text"),
        "thinking": "".join(b.thinking for b in blocks if b.type == "thinking"),
        "calls": calls,
        "finish": finish,
    }


def read_responses(data: bytes, stream: bool) -> dict[str, Any]:
    kind = "text/event-stream" if stream else "application/json"
    client = openai.OpenAI(
        api_key="test",
        base_url="http://responses.test/v1",
        max_retries=0,
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(lambda _: httpx2.Response(200, content=data, headers={"content-type": kind}))
        ),
    )
    if stream:
        with client.responses.stream(model="m", input="hi") as events:
            ends = ("response.completed", "response.incomplete", "response.failed")
            response = next(e.response for e in events if e.type in ends)
    else:
        response = client.responses.create(model="m", input="hi")
    text = thinking = ""
    calls = []
    for item in response.output:
        if item.type == "message":
            text += "".join(p.text for p in item.content if p.type == "output_text")
        elif item.type == "reasoning":
            thinking += "".join(s.text for s in item.summary)
        elif item.type == "function_call":
            arguments = strict(item.arguments) if item.arguments else {}
            calls.append([item.name, arguments if isinstance(arguments, dict) else {}])
    if response.status == "incomplete":
        finish = "length"
    else:
        assert response.status == "completed", response
        finish = "tool_calls" if calls else "stop"
    return {"text": text, "thinking": thinking, "calls": calls, "finish": finish}


def read(family: str, data: bytes, stream: bool) -> dict[str, Any]:
    if family in ("chat", "generate"):
        return read_ollama(family, data, stream)
    if family == "messages":
        return read_messages(data, stream)
    return read_responses(data, stream)


def expected_for(name: str, family: str) -> dict[str, Any]:
    expected = dict(EXPECTED[name]["expected"])
    if family == "generate":
        expected["calls"] = []  # generate has no tools: its text, thinking and finish only
        if expected["finish"] == "tool_calls":
            expected["finish"] = "stop"
    return expected


def families_for(name: str) -> list[str]:
    return [f for f in FAMILIES if not (f == "generate" and has_calls(name))]


CASES = [(name, family) for name in NAMES for family in families_for(name)]


@pytest.mark.parametrize(("name", "family"), CASES)
def test_every_family_reads_the_same_answer_from_a_stream(name: str, family: str) -> None:
    assert read(family, streamed(family, sse_body(name)), stream=True) == expected_for(name, family)


@pytest.mark.parametrize(("name", "family"), CASES)
def test_every_family_reads_the_same_answer_from_a_whole_answer(name: str, family: str) -> None:
    assert read(family, whole(family, whole_body(name)), stream=False) == expected_for(name, family)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(CASES),
    st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=25),
)
def test_any_chunking_of_a_stream_gives_the_same_answer(case: tuple[str, str], cuts: list[int]) -> None:
    name, family = case
    assert read(family, streamed(family, sse_body(name), cuts), stream=True) == expected_for(name, family)


def test_the_corpus_covers_what_the_issue_names() -> None:
    named = {
        "arguments-object",
        "fragments-without-index",
        "parallel-interleaved",
        "whole-calls-in-one-chunk",
        "repeated-id-and-name",
        "call-without-id",
        "empty-and-null-content",
        "reasoning-content",
        "reasoning-field",
        "finish-with-content",
        "usage-absent",
        "no-done",
        "tool-calls-finish-without-calls",
        "calls-with-finish-stop",
        "keep-alives",
        "nan-in-arguments",
        "other-choices",
    }
    assert named <= set(NAMES)
    for name in NAMES:
        assert EXPECTED[name]["source"], f"{name}: say which servers do this"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stream_cut_short_is_an_error_in_every_family(family: str) -> None:
    body = sse_body("plain")
    cut = body[: body.index(b'"finish_reason": "stop"') - 200]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    stream = converter(family)
    out = stream.feed(cut) + stream.finish()
    assert stream.ended and stream.error == "the upstream stream ended before the answer was complete"
    assert b"ended before the answer was complete" in out
