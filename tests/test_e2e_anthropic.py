"""End to end: the official `anthropic` SDK → a real mitmdump with the addon (/v1/messages) → the loopback upstream.

Answers are validated against the SDK's own types (`Message`, `RawMessageStreamEvent`,
`ErrorResponse`), not by field presence; what went upstream is checked on the fake upstream.
"""

from __future__ import annotations

import base64
import json

import anthropic
import httpx
import pytest
from anthropic.types import ErrorResponse, Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def client(proxy: Mitmdump) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-test", max_retries=0, timeout=20)


def raw_events(proxy: Mitmdump, body: dict, path: str = "/v1/messages") -> list[tuple[str, dict]]:
    """The SSE events of a streamed answer, each validated as the SDK's RawMessageStreamEvent (ping and error apart)."""
    response = httpx.post(proxy.url + path, json={**body, "stream": True}, timeout=20)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            data = json.loads(fields["data"])
            assert data["type"] == fields["event"]
            if data["type"] not in ("ping", "error"):  # neither is in the SDK's union of message events
                STREAM_EVENT.validate_python(data)
            events.append((fields["event"], data))
    return events


def whole(client: anthropic.Anthropic, **body) -> Message:
    """A non-streamed answer, validated as the SDK's Message."""
    raw = client.messages.with_raw_response.create(**body)
    return Message.model_validate(raw.http_response.json())


def test_a_whole_answer(client: anthropic.Anthropic, upstream: UpstreamServer) -> None:
    message = whole(client, model="claude-sonnet-5-5", max_tokens=1024, messages=HELLO, system="be brief")
    assert message.model == "claude-sonnet-5-5" and message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn" and (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    sent = upstream.fake.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert not {"x-api-key", "anthropic-version", "anthropic-beta"} & set(sent.headers)
    assert sent.body == {
        "model": "claude-sonnet-5-5",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "max_tokens": 1024,
    }


def test_a_stream_event_by_event(client: anthropic.Anthropic, proxy: Mitmdump) -> None:
    events = raw_events(proxy, {"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": HELLO})
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["usage"]["output_tokens"] == 3 and events[-2][1]["delta"]["stop_reason"] == "end_turn"
    with client.messages.stream(model="claude-haiku-5-5", max_tokens=100, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == "echo: hello there"
        final = stream.get_final_message()
    assert final.model == "claude-haiku-5-5" and final.usage.output_tokens == 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip(
    client: anthropic.Anthropic, proxy: Mitmdump, upstream: UpstreamServer, stream: bool
) -> None:
    upstream.fake.queue_reply("Let me look.", [{"name": "get_weather", "arguments": {"city": "Paris"}}])
    upstream.fake.queue_reply("18 degrees in Paris.")
    ask = [{"role": "user", "content": "weather in Paris?"}]
    body = {"model": "claude-sonnet-5-5", "max_tokens": 500, "tools": [WEATHER], "tool_choice": {"type": "auto"}}
    if stream:
        with client.messages.stream(**body, messages=ask) as events:
            first = events.get_final_message()
    else:
        first = whole(client, **body, messages=ask)
    assert first.stop_reason == "tool_use" and [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    assert upstream.fake.requests[-1].body["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees"}
    history = [
        *ask,
        {"role": "assistant", "content": first.model_dump()["content"]},
        {"role": "user", "content": [result]},
    ]
    second = whole(client, **body, messages=history)
    assert second.content[0].text == "18 degrees in Paris."
    sent = upstream.fake.requests[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call.id and sent[-2]["content"] == "Let me look."
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}


def test_images(client: anthropic.Anthropic, upstream: UpstreamServer) -> None:
    content = [
        {"type": "text", "text": "what are these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    message = whole(client, model="claude-sonnet-5-5", max_tokens=100, messages=[{"role": "user", "content": content}])
    assert message.content[0].text == "echo: what are these?"
    assert upstream.fake.requests[-1].body["messages"][0]["content"] == [
        {"type": "text", "text": "what are these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_thinking(client: anthropic.Anthropic, proxy: Mitmdump, upstream: UpstreamServer) -> None:
    """Thinking goes upstream as reasoning_effort; the reasoning comes back as a thinking block, streamed too."""
    upstream.fake.queue_reply("42", thinking="six times seven")
    body = {"model": "o4-mini", "max_tokens": 2000, "messages": [{"role": "user", "content": "6*7?"}]}
    message = whole(client, **body, thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "six times seven" and message.content[1].text == "42"
    sent = upstream.fake.requests[-1].body
    assert sent["reasoning_effort"] == "medium" and sent["max_completion_tokens"] == 2000 and "max_tokens" not in sent

    upstream.fake.queue_reply("42", thinking="six times seven")
    events = raw_events(proxy, {**body, "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}})
    deltas = [e["delta"]["type"] for n, e in events if n == "content_block_delta"]
    assert deltas == ["thinking_delta"] * 3 + ["signature_delta", "text_delta"]
    assert upstream.fake.requests[-1].body["reasoning_effort"] == "low"
    whole(client, **{**body, "model": "gpt-4o-mini"}, thinking={"type": "adaptive"}, output_config={"effort": "high"})
    assert "reasoning_effort" not in upstream.fake.requests[-1].body, "gpt-4o-mini cannot think: not sent"


def test_structured_output(client: anthropic.Anthropic, upstream: UpstreamServer) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string"}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    upstream.fake.queue_reply('{"colour": "blue"}')
    message = whole(
        client,
        model="claude-sonnet-5-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "a colour"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert json.loads(message.content[0].text) == {"colour": "blue"}
    assert upstream.fake.requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def test_count_tokens_is_answered_locally(
    client: anthropic.Anthropic, proxy: Mitmdump, upstream: UpstreamServer
) -> None:
    counted = client.messages.count_tokens(model="claude-sonnet-5-5", messages=HELLO, system="be brief")
    assert (
        isinstance(counted, MessageTokensCount) and counted.input_tokens == 8
    )  # ceil(19 characters / 4) + 3 for the message
    raw = httpx.post(proxy.url + "/v1/messages/count_tokens?beta=true", json={"model": "m", "messages": HELLO})
    assert raw.json() == {"input_tokens": 6}
    assert upstream.fake.requests == []


def test_the_beta_route(client: anthropic.Anthropic, upstream: UpstreamServer) -> None:
    """Claude Code calls `/v1/messages?beta=true` with `anthropic-beta` headers: served alike."""
    message = client.beta.messages.create(
        model="claude-sonnet-5-5", max_tokens=100, messages=HELLO, betas=["interleaved-thinking-2025-05-14"]
    )
    assert message.content[0].text == "echo: hello there"
    assert "anthropic-beta" not in upstream.fake.requests[-1].headers


def error_of(e: anthropic.APIStatusError) -> ErrorResponse:
    return ErrorResponse.model_validate(e.response.json())


def test_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="missing-model", max_tokens=10, messages=HELLO)
    assert error_of(missing.value).error.type == "not_found_error"
    assert error_of(missing.value).error.message.startswith("model 'missing-model' not found")
    with pytest.raises(anthropic.NotFoundError):  # a stream asked of a model that does not exist: no stream at all
        client.messages.create(model="missing-model", max_tokens=10, messages=HELLO, stream=True)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="fault:429", max_tokens=10, messages=HELLO)
    assert (
        error_of(limited.value).error.type == "rate_limit_error"
        and limited.value.response.headers["retry-after"] == "7"
    )
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.create(model="fault:500", max_tokens=10, messages=HELLO, stream=True)
    assert error_of(failed.value).error.type == "api_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="m", max_tokens=10, messages=[])
    assert error_of(bad.value).error.type == "invalid_request_error"


@pytest.mark.parametrize("fault", ["break", "reset", "error-event"])
def test_a_broken_stream_raises(client: anthropic.Anthropic, upstream: UpstreamServer, fault: str) -> None:
    """A stream that breaks off after it started ends with `event: error`, which the SDK raises."""
    model = "claude-sonnet-5-5" if fault == "break" else f"fault:{fault}"
    if fault == "break":
        upstream.fake.queue_reply("partial answer", break_off=True)
    with (
        pytest.raises(anthropic.APIStatusError) as error,
        client.messages.stream(model=model, max_tokens=10, messages=HELLO) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert error.value.body["error"]["type"] == "api_error"
