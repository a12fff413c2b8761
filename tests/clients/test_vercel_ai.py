"""The Vercel AI SDK (npm `ai`) with its Ollama provider (npm `ollama-ai-provider-v2`) on Node.js,
driven by node/vercel_ai.mjs through the proxy.

`ollama(model)` speaks /api/chat, `ollama.completion(model)` /api/generate, `ollama.embedding(model)`
/api/embed. The provider validates every answer with a zod schema: its generate schema requires
`context`, which is what the proxy's generate answers must carry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from harness.upstream import UpstreamServer

Vercel = Callable[..., Any]


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert "threw" not in result, result["threw"]
    return result


def test_generate_text_chat(vercel_ai: Vercel, upstream: UpstreamServer) -> None:
    result = ok(vercel_ai("generate_text", kind="chat", prompt="hello there", system="be brief"))
    assert result["text"] == "echo: hello there"
    assert result["finishReason"] == "stop" and result["usage"] == {"inputTokens": 7, "outputTokens": 3}
    sent = upstream.fake.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]


def test_generate_text_completion(vercel_ai: Vercel, upstream: UpstreamServer) -> None:
    """ollama.completion() posts to /api/generate and rejects an answer without `context`
    ("Invalid JSON response … expected array" at path context) — the proxy sends `context: []`."""
    result = ok(vercel_ai("generate_text", kind="completion", prompt="why is the sky blue"))
    # the provider writes the prompt as a "user:/assistant:" transcript; the fake upstream echoes it
    prompt = "user:\nwhy is the sky blue\n\nassistant:\n"
    assert result["text"] == "echo: " + prompt
    assert result["finishReason"] == "stop"
    assert result["usage"] == {"inputTokens": 7, "outputTokens": len(result["text"].split())}  # the fake's counts
    sent = upstream.fake.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.body["messages"] == [{"role": "user", "content": prompt}]


def test_stream_text_chat(vercel_ai: Vercel) -> None:
    result = ok(vercel_ai("stream_text", kind="chat", prompt="one two three"))
    assert result["deltas"] == ["echo:", " one", " two", " three"]
    assert result["text"] == "echo: one two three" and result["errors"] == []
    assert result["finishReason"] == "stop" and result["usage"] == {"inputTokens": 7, "outputTokens": 4}


def test_stream_text_completion(vercel_ai: Vercel) -> None:
    """ollama.completion() validates every stream line with the schema of the final answer, which
    requires `context`. Ollama sends `context` on the final line only, so against Ollama the provider
    drops every text line ("Failed to parse NDJSON line") and streamText gives no text; the proxy
    sends `context: []` on every generate line, and the text arrives piece by piece."""
    result = ok(vercel_ai("stream_text", kind="completion", prompt="one two three"))
    assert result["text"].startswith("echo: user:") and "one two three" in result["text"]
    assert len(result["deltas"]) > 1 and "".join(result["deltas"]) == result["text"]
    assert result["finishReason"] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["generateText", "streamText"])
def test_tool_round_trip(vercel_ai: Vercel, upstream: UpstreamServer, stream: bool) -> None:
    """The fake upstream asks for add(2, 3); the SDK runs the tool, sends its result back and gets the answer."""
    upstream.fake.queue_reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}])
    upstream.fake.queue_reply("2 + 3 = 5")
    result = ok(vercel_ai("tools", kind="chat", stream=stream))
    assert result.get("errors", []) == []
    first, second = result["steps"]
    assert first["finishReason"] == "tool-calls"
    assert [(c["toolName"], c["input"]) for c in first["toolCalls"]] == [("add", {"a": 2, "b": 3})]
    assert [(r["toolName"], r["input"], r["output"]) for r in first["toolResults"]] == [("add", {"a": 2, "b": 3}, "5")]
    assert second["text"] == result["text"] == "2 + 3 = 5" and second["finishReason"] == "stop"
    asked, answered = (r.body for r in upstream.fake.requests[-2:])
    assert asked["tools"][0]["function"]["name"] == "add"
    assert asked["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    call = answered["messages"][1]["tool_calls"][0]
    assert call["id"] == first["toolCalls"][0]["toolCallId"] and json.loads(call["function"]["arguments"]) == {
        "a": 2,
        "b": 3,
    }
    assert answered["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": "5"}


def test_generate_object_chat(vercel_ai: Vercel, upstream: UpstreamServer) -> None:
    """The zod schema goes upstream as a strict json_schema response_format; the answer is parsed and validated."""
    upstream.fake.queue_reply('{"colour": "red", "count": 3}')
    result = ok(vercel_ai("generate_object", kind="chat", prompt="a colour and a count"))
    assert result["object"] == {"colour": "red", "count": 3} and result["finishReason"] == "stop"
    response_format = upstream.fake.requests[-1].body["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["required"] == ["colour", "count"]


def test_generate_object_rejects_an_answer_off_the_schema(vercel_ai: Vercel, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply('{"colour": "red", "count": "three"}')
    threw = vercel_ai("generate_object", kind="chat", prompt="a colour and a count")["threw"]
    assert threw["name"] == "AI_NoObjectGeneratedError"


def test_generate_object_completion(vercel_ai: Vercel, upstream: UpstreamServer) -> None:
    """ollama.completion() sends no `format` (the provider warns that it does not support it): the
    object comes from the text alone, parsed and validated by the SDK."""
    upstream.fake.queue_reply('{"colour": "blue", "count": 7}')
    result = ok(vercel_ai("generate_object", kind="completion", prompt="a colour and a count"))
    assert result["object"] == {"colour": "blue", "count": 7}
    assert result["warnings"] == [{"type": "unsupported", "feature": "responseFormat (JSON)"}]
    assert "response_format" not in upstream.fake.requests[-1].body


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def test_embed(vercel_ai: Vercel, upstream: UpstreamServer) -> None:
    # the fake upstream's vectors are [len(text), index, 3, 4], normalised by the proxy like Ollama's
    result = ok(vercel_ai("embed", model="nomic-embed-text", value="abc"))
    assert result["embedding"] == pytest.approx(_unit([3, 0, 3, 4]))
    assert upstream.fake.requests[-1].body["input"] == ["abc"]
    assert upstream.fake.requests[-1].body["model"] == "text-embedding-3-small"
    many = ok(vercel_ai("embed_many", model="nomic-embed-text", values=["a", "bbb"]))
    assert [pytest.approx(e) for e in many["embeddings"]] == [_unit([1, 0, 3, 4]), _unit([3, 1, 3, 4])]


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_unknown_model_is_an_api_call_error(vercel_ai: Vercel, kind: str) -> None:
    threw = vercel_ai("generate_text", kind=kind, model="no-such-model", prompt="hi")["threw"]
    assert threw["name"] == "AI_APICallError" and threw["statusCode"] == 404
