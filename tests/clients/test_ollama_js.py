"""ollama-js (npm `ollama`) on Node.js, driven by node/ollama_js.mjs through the proxy."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from harness.upstream import UpstreamServer, recording

from .conftest import THINKING_MODEL

Js = Callable[..., Any]


def test_version(js: Js) -> None:
    version = js("version")["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)


def test_chat(js: Js, upstream: UpstreamServer) -> None:
    answer = js("chat", prompt="hello there")
    assert answer["model"] == "llama3.2"
    assert answer["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert answer["done"] is True and answer["done_reason"] == "stop"
    assert answer["prompt_eval_count"] == 7 and answer["eval_count"] == 3
    assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini"


def test_chat_stream(js: Js) -> None:
    parts = js("chat_stream", prompt="one two three")["parts"]
    assert "".join(p["message"]["content"] for p in parts) == "echo: one two three"
    assert [p["done"] for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1]["done_reason"] == "stop" and parts[-1]["eval_count"] == 4


def test_generate(js: Js, upstream: UpstreamServer) -> None:
    answer = js("generate", prompt="why is the sky blue", system="be brief")
    assert answer["response"] == "echo: why is the sky blue" and answer["done"] is True
    assert upstream.fake.requests[-1].body["messages"][0] == {"role": "system", "content": "be brief"}
    parts = js("generate_stream", prompt="a b")["parts"]
    assert "".join(p["response"] for p in parts) == "echo: a b"
    assert parts[-1]["done"] is True and not any(p["done"] for p in parts[:-1])


def test_embed(js: Js, upstream: UpstreamServer) -> None:
    answer = js("embed", model="nomic-embed-text", input=["a", "bbb"])
    assert answer["model"] == "nomic-embed-text"
    first, second = answer["embeddings"]
    # the fake upstream's vectors are [len(text), index, 3, 4], normalised by the proxy like Ollama's
    assert math.isclose(math.hypot(*first), 1) and math.isclose(math.hypot(*second), 1)
    assert first[0] < second[0]
    assert upstream.fake.requests[-1].body["model"] == "text-embedding-3-small"
    legacy = js("embeddings", model="nomic-embed-text", prompt="abc")
    assert legacy["embedding"][0] == 3.0  # /api/embeddings: not normalised, as in Ollama


def test_list_and_show(js: Js) -> None:
    names = [m["name"] for m in js("list")["models"]]
    assert {"llama3.2:latest", "nomic-embed-text:latest"} <= set(names)
    show = js("show", model="llama3.2")
    assert "tools" in show["capabilities"]
    arch = show["model_info"]["general.architecture"]
    assert show["model_info"][f"{arch}.context_length"] == 128000


def test_ps(js: Js) -> None:
    assert "llama3.2:latest" in [m["name"] for m in js("ps")["models"]]


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_chat_with_image_schema_and_options(js: Js, upstream: UpstreamServer) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    upstream.fake.queue_reply('{"colour": "red"}')
    answer = js("chat_everything", prompt="what colour?", images=[PNG], format=schema)
    assert json.loads(answer["message"]["content"]) == {"colour": "red"}
    sent = upstream.fake.requests[-1].body
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.3, 100, ["\n\n"])


def test_pull_of_a_served_model_succeeds(js: Js) -> None:
    result = js("pull")
    assert result["parts"][-1]["status"] == "success" and result["whole"]["status"] == "success"


def test_model_management_is_refused_clearly(js: Js) -> None:
    threw = js("delete")["threw"]
    assert threw["name"] == "ResponseError" and threw["status_code"] == 501 and "not supported" in threw["message"]


def test_thinking(js: Js, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("42", thinking="six times seven")
    answer = js("chat_think", model=THINKING_MODEL, prompt="the answer?", think="high")
    assert answer["message"]["thinking"] == "six times seven" and answer["message"]["content"] == "42"
    assert upstream.fake.requests[-1].body["reasoning_effort"] == "high"


def test_abort_a_stream_then_go_on(js: Js, upstream: UpstreamServer) -> None:
    upstream.fake.pause_after = 3  # the upstream holds the stream after a few words until resumed
    try:
        result = js("abort", prompt="a long answer to stop")
    finally:
        upstream.fake.resume.set()
    assert result["parts"] and not any(p["done"] for p in result["parts"])
    assert result["threw"]["name"] == "AbortError"
    upstream.fake.pause_after = None
    assert js("chat", prompt="still there")["message"]["content"] == "echo: still there"


def _tool_round_trip(js: Js, upstream: UpstreamServer, scenario: str) -> None:
    upstream.fake.queue_reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}])
    upstream.fake.queue_reply("2 + 3 = 5")
    result = js(scenario)
    assert "threw" not in result, result
    call = result["first"]["tool_calls"][0]
    assert call["function"]["name"] == "add" and call["function"]["arguments"] == {"a": 2, "b": 3}
    assert result["results"] == [{"name": "add", "arguments": {"a": 2, "b": 3}, "output": "5"}]
    assert result["final"]["content"] == "2 + 3 = 5"
    first, second = (r.body for r in upstream.fake.requests[-2:])
    assert first["tools"][0]["function"]["name"] == "add"
    sent_call = second["messages"][1]["tool_calls"][0]
    assert json.loads(sent_call["function"]["arguments"]) == {"a": 2, "b": 3}
    assert second["messages"][2] == {"role": "tool", "content": "5", "tool_call_id": sent_call["id"]}


def test_tool_round_trip(js: Js, upstream: UpstreamServer) -> None:
    _tool_round_trip(js, upstream, "tools")


def test_tool_round_trip_streamed(js: Js, upstream: UpstreamServer) -> None:
    _tool_round_trip(js, upstream, "tools_stream")


def test_unknown_model_is_a_response_error(js: Js) -> None:
    threw = js("chat", model="no-such-model", prompt="hi")["threw"]
    assert threw["name"] == "ResponseError" and threw["status_code"] == 404
    assert "no-such-model" in threw["message"] and "not found" in threw["message"]


def test_a_rate_limited_stream_is_a_response_error(js: Js, upstream: UpstreamServer) -> None:
    exchange = recording("errors/429-rate-limit-requests-per-min")["response"]
    upstream.fake.queue(exchange["status"], exchange["body"], {"retry-after": "20"})
    threw = js("chat_stream", prompt="hi")["threw"]
    assert threw["name"] == "ResponseError" and threw["status_code"] == 429 and "Rate limit" in threw["message"]


def test_a_stream_that_breaks_off_upstream_ends_in_an_error_ollama_js_throws(js: Js, upstream: UpstreamServer) -> None:
    """The upstream ends its stream after some text, without a finish reason or [DONE]: the proxy
    sends a final {"error"} line, which ollama-js throws, after the text that did arrive."""
    upstream.fake.queue_reply("the start of an answer", break_off=True)
    result = js("stream_until_error", prompt="tell me")
    assert "".join(p["message"]["content"] for p in result["parts"]) == "the start of an answer"
    assert not any(p["done"] for p in result["parts"])
    assert "threw" in result, "ollama-js finished a broken stream without an error"
    assert result["threw"]["name"] == "Error" and "upstream" in result["threw"]["message"]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


TEXT = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "some"}), _chunk({"content": " text"})]
# How an upstream stream may end → the done_reason ollama-js sees, or a fragment of the error it throws.
ENDINGS = {
    "finish-and-done": ([*TEXT, _chunk({}, "stop"), b"data: [DONE]\n\n"], "stop"),
    "finish-without-done": ([*TEXT, _chunk({}, "stop")], "stop"),
    "done-without-finish": ([*TEXT, b"data: [DONE]\n\n"], "stop"),
    "length": ([*TEXT, _chunk({}, "length"), b"data: [DONE]\n\n"], "length"),
    "neither": (TEXT, "ended before the answer was complete"),
    "error-event": (
        [*TEXT, b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'],
        "upstream error: overloaded",
    ),
    "invalid-data": ([*TEXT, b"data: {not json\n\n"], "invalid stream event"),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_stream_ends_in_done_or_an_error_ollama_js_reports(js: Js, upstream: UpstreamServer, ending: str) -> None:
    """However the upstream's stream ends, ollama-js gets a final done object or an {"error"} line
    from the proxy, never a stream that just stops ("Did not receive done or success response")."""
    events, expected = ENDINGS[ending]
    upstream.fake.queue(200, events, {"content-type": "text/event-stream"})
    result = js("stream_until_error", prompt="hi")
    assert "".join(p["message"]["content"] for p in result["parts"]) == "some text"
    if expected in ("stop", "length"):
        assert "threw" not in result, result["threw"]
        assert [p["done"] for p in result["parts"]][-1] is True and result["parts"][-1]["done_reason"] == expected
    else:
        assert result["threw"]["name"] == "Error" and expected in result["threw"]["message"]
        assert not any(p["done"] for p in result["parts"])


def test_a_reset_upstream_connection_gives_ollama_js_an_error(js: Js, upstream: UpstreamServer) -> None:
    """The upstream connection is reset mid-stream: ollama-js throws instead of hanging or
    reporting a truncated answer as complete."""
    events = [
        f"data: {json.dumps({'object': 'chat.completion.chunk', 'model': 'm', 'choices': [{'index': 0, 'delta': {'content': w}, 'finish_reason': None}]})}\n\n".encode()
        for w in ("one", " two", " three")
    ]
    upstream.fake.queue(200, events, {"content-type": "text/event-stream"}, close_after=2)
    result = js("stream_until_error", prompt="count")
    assert "threw" in result, "ollama-js finished a broken stream without an error"
    assert not any(p["done"] for p in result["parts"])
