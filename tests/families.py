"""Every family's converters and SDK readers, shared by the cross-family corpus tests.

What the proxy sends a client from one upstream chat-completions answer, per family (Ollama
`/api/chat` and `/api/generate`, Anthropic `/v1/messages`, OpenAI `/v1/responses`), streamed from
SSE pieces and whole; and what each family's real SDK (ollama, anthropic, openai) reads of it:
text, refusal, thinking, tool calls as [name, parsed arguments], and the finish (stop, length,
tool_calls or content_filter). Used by tests/test_quirks.py (hand-written quirks) and
tests/test_flow_corpus.py (the recorded flows).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai

from addon.translate.anthropic import MessagesStream, messages_response
from addon.translate.ndjson import ollama_stream
from addon.translate.response import Clock, whole_answer
from addon.translate.responses import ResponsesStream, responses_answer
from addon.translate.stream import ChunkStream

FAMILIES = ["chat", "generate", "messages", "responses"]
TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("get_weather", "get_time", "plot")]


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict(text: str | bytes) -> Any:
    return json.loads(text, parse_constant=_refuse)


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
# What each family's SDK reads of it: text, refusal (a Responses refusal part; the other families
# carry a refusal as text), thinking, [[name, arguments]], finish


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
    finish = {"stop": "tool_calls" if calls else "stop", "length": "length", "content_filter": "content_filter"}[
        reason or ""
    ]
    return {"text": text, "refusal": "", "thinking": thinking, "calls": calls, "finish": finish}


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
    finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length", "refusal": "content_filter"}[
        message.stop_reason or ""
    ]
    return {
        "text": "".join(b.text for b in blocks if b.type == "text"),
        "refusal": "",
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
    text = refusal = thinking = ""
    calls = []
    for item in response.output:
        if item.type == "message":
            text += "".join(p.text for p in item.content if p.type == "output_text")
            refusal += "".join(p.refusal for p in item.content if p.type == "refusal")
        elif item.type == "reasoning":
            thinking += "".join(s.text for s in item.summary)
        elif item.type == "function_call":
            arguments = strict(item.arguments) if item.arguments else {}
            calls.append([item.name, arguments if isinstance(arguments, dict) else {}])
    if response.status == "incomplete":
        reason = response.incomplete_details.reason if response.incomplete_details else None
        finish = {"max_output_tokens": "length", "content_filter": "content_filter"}[reason or ""]
    else:
        assert response.status == "completed", response
        finish = "tool_calls" if calls else "stop"
    return {"text": text, "refusal": refusal, "thinking": thinking, "calls": calls, "finish": finish}


def read(family: str, data: bytes, stream: bool) -> dict[str, Any]:
    if family in ("chat", "generate"):
        return read_ollama(family, data, stream)
    if family == "messages":
        return read_messages(data, stream)
    return read_responses(data, stream)
