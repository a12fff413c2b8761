"""The Anthropic Messages translation (addon/translate/anthropic/), checked with the official `anthropic` SDK.

Answers and stream events are validated with the SDK's own types (`Message.model_validate`, the
raw stream event union), and whole streams are run through the SDK's `MessageStream` over an
`httpx.MockTransport`, so its accumulated message is compared with the whole-answer conversion.
Every recorded OpenAI stream in tests/fixtures is fed through in 1/7/64/1000-byte pieces.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx  # the transport package the anthropic SDK uses
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.types.chat import completion_create_params
from pydantic import TypeAdapter

from addon.translate.anthropic import (
    IMAGE_TOKENS,
    AnthropicError,
    MessagesStream,
    count_tokens,
    error_body,
    error_type,
    estimate_input_tokens,
    messages_request,
    messages_response,
    upstream_error,
)
from tests.driven import Driven

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = FIXTURES / "openai-recordings"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
CHAT_PARAMS = TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming)
CHAT_PARAMS_STREAMING = TypeAdapter(completion_create_params.CompletionCreateParamsStreaming)


def recorded_streams() -> dict[str, bytes]:
    """Every recorded OpenAI SSE body in tests/fixtures, by a readable name."""
    streams = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("openai-*.sse"))}
    for path in sorted((RECORDINGS / "chat-stream").glob("*.json")):
        streams[f"recording:{path.stem}"] = json.loads(path.read_text())["response"]["body"].encode()
    for path in sorted((FIXTURES / "llama-server").glob("*stream*.json")):
        streams[f"llama-server:{path.stem}"] = json.loads(path.read_text())["response"]["body"].encode()
    return streams


STREAMS = recorded_streams()


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields}


def invalid(body: Any, match: str) -> None:
    with pytest.raises(AnthropicError, match=match) as caught:
        messages_request(body, "gpt-4o-mini")
    assert caught.value.status == 400 and caught.value.kind == "invalid_request_error"
    ErrorResponse.model_validate(caught.value.body())


# ---------------------------------------------------------------------------------------------
# A tiny local SSE splitter (the proxy has its own decoder; this one only feeds the tests)


class SSESplitter:
    """Incremental: bytes in any pieces → the `data:` payloads of completed events."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, piece: bytes) -> list[str]:
        self.buffer = (self.buffer + piece).replace(b"\r\n", b"\n")
        out = []
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            out += self._data(event)
        return out

    def close(self) -> list[str]:
        event, self.buffer = self.buffer, b""
        return self._data(event.rstrip(b"\r"))

    @staticmethod
    def _data(event: bytes) -> list[str]:
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        return [b"\n".join(lines).decode()] if lines else []


def openai_chunks(body: bytes) -> list[Any]:
    splitter = SSESplitter()
    payloads = splitter.feed(body) + splitter.close()
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def convert_stream(body: bytes, pieces: int | None = None, input_tokens: int = 0) -> list[bytes]:
    """An OpenAI SSE body, split in pieces, through the splitter and MessagesStream."""
    stream = Driven(MessagesStream("claude-test", input_tokens, message_id="msg_test"))
    splitter = SSESplitter()
    out: list[bytes] = []

    def take(payloads: list[str]) -> None:
        for payload in payloads:
            out.extend(stream.finish() if payload == "[DONE]" else stream.feed_event(json.loads(payload)))

    for start in range(0, len(body), pieces or len(body) or 1):
        take(splitter.feed(body[start : start + (pieces or len(body))]))
    take(splitter.close())
    out += stream.finish()
    assert b"" not in out, "an empty piece would end a chunked response"
    assert stream.finish() == [] and stream.feed_event({"choices": []}) == []
    return out


def parse_events(raw: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """Our SSE bytes → (event name, data); each piece is whole events, each checked for its shape."""
    events = []
    for piece in raw:
        assert piece.endswith(b"\n\n")
        for text in piece.decode().split("\n\n")[:-1]:
            name_line, data_line = text.split("\n")
            assert name_line.startswith("event: ") and data_line.startswith("data: ")
            name, data = name_line[7:], json.loads(data_line[6:])
            assert data["type"] == name
            events.append((name, data))
    return events


def validate_events(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Each event by the SDK's types, and the sequence by the protocol's rules."""
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    open_index: int | None = None
    next_index = 0
    for name, data in events:
        if name != "ping":
            STREAM_EVENT.validate_python(data)
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, kind = data["index"], data["content_block"]["type"]
            next_index += 1
            last_delta = None
        elif name == "content_block_delta":
            assert data["index"] == open_index
            delta_type = data["delta"]["type"]
            assert delta_type == {"text": "text_delta", "tool_use": "input_json_delta"}.get(kind, delta_type)
            if kind == "thinking":
                assert delta_type in ("thinking_delta", "signature_delta")
            last_delta = delta_type
        elif name == "content_block_stop":
            assert data["index"] == open_index
            if kind == "thinking":
                assert last_delta == "signature_delta", "a thinking block ends with its signature"
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None


def sdk_client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://proxy.test",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def sdk_stream(raw: list[bytes]) -> tuple[Message, list[Any]]:
    """Our bytes served to the SDK's MessageStream: its events and its accumulated final message."""

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(raw))

    with sdk_client(handler).messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        events = list(stream)
        return stream.get_final_message(), events


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI stream chunks → the whole chat.completion the same answer would have been."""
    content = reasoning = refusal = ""
    calls: dict[int, dict[str, Any]] = {}
    finish, usage = None, None
    for chunk in chunks:
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            content += delta.get("content") or ""
            refusal += delta.get("refusal") or ""
            for fragment in delta.get("tool_calls") or ():
                call = calls.setdefault(
                    fragment["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                call["id"] = fragment.get("id") or call["id"]
                function = fragment.get("function") or {}
                call["function"]["name"] = function.get("name") or call["function"]["name"]
                call["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if refusal:
        message["refusal"] = refusal
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


# ---------------------------------------------------------------------------------------------
# Requests


def test_minimal_request() -> None:
    out = messages_request(
        request(system="be brief", temperature=0.5, top_p=0.9, stop_sequences=["END"]), "gpt-4o-mini"
    )
    assert out.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
    }
    assert out.warnings == [] and out.think is None and out.stream is False
    CHAT_PARAMS.validate_python(out.body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "JSON object"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        (request(max_tokens=None), "max_tokens: Field required"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        (request(max_tokens=0), "max_tokens: must be"),
        (request(max_tokens="10"), "max_tokens: must be"),
        (request(max_tokens=True), "max_tokens: must be"),
        (request(messages=None), "messages: Field required"),
        (request(messages=[]), "messages: must be a non-empty list"),
        (request(messages="hi"), "messages: must be an array"),
        (request(messages=["hi"]), r"messages\.0: must be an object"),
        (request(messages=[{"role": "tool", "content": "x"}]), r"messages\.0\.role"),
        (request(messages=[{"role": "user"}]), r"messages\.0\.content: Field required"),
        (request(messages=[{"role": "user", "content": 5}]), r"messages\.0\.content: must be"),
        (
            request(messages=[{"role": "user", "content": [{"text": "no type"}]}]),
            "content block must be an object with a type",
        ),
        (request(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), r"\.text: must be a string"),
        (request(system=[{"type": "image", "source": {}}]), r"system\.0: only text blocks"),
        (request(system=5), "system: must be a string or an array"),
        (request(temperature="hot"), "temperature: must be a number"),
        (request(top_k=1.5), "top_k: must be an integer"),
        (request(stop_sequences="END"), "stop_sequences: must be an array"),
        (request(stop_sequences=["END", 5]), r"stop_sequences\.1: must be a string"),
        (request(stream="yes"), "stream: must be a boolean"),
        (request(tools={"name": "x"}), "tools: must be an array"),
        (request(tools=[{"name": "x"}]), r"tools\.0\.input_schema: Field required"),
        (request(tools=[{"input_schema": {}}]), r"tools\.0\.name: Field required"),
        (request(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (
            request(
                tools=[{"name": "a", "input_schema": {"type": "object"}}], tool_choice={"type": "tool", "name": "b"}
            ),
            "no tool named 'b'",
        ),
        (request(tool_choice={"type": "tool"}), "tool_choice.name: Field required"),
        (request(thinking={"type": "sometimes"}), "thinking.type"),
        (request(thinking={"type": "enabled", "budget_tokens": "lots"}), "budget_tokens"),
        (request(output_config={"effort": "extreme"}), "output_config.effort"),
        (request(output_config={"format": {"type": "regex"}}), "output_config.format"),
    ],
)
def test_bad_requests_are_refused_with_anthropic_400s(body: Any, match: str) -> None:
    invalid(body, match)


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def test_system_blocks_and_system_turns() -> None:
    body = request(
        system=[text("one"), {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}],
        messages=[user(text("a"), text("b")), {"role": "system", "content": [text("env")]}],
    )
    assert messages_request(body, "m").body["messages"] == [
        {"role": "system", "content": "one\ntwo"},
        {"role": "user", "content": "a\nb"},
        {"role": "system", "content": "env"},
    ]


def test_system_turns_as_user_turns_for_strict_templates() -> None:
    body = request(
        system="one",
        messages=[{"role": "system", "content": "two"}, user(text("a")), {"role": "system", "content": [text("env")]}],
    )
    assert messages_request(body, "m", system_turns="user").body["messages"] == [
        {"role": "system", "content": "one\ntwo"},
        {"role": "user", "content": "a\n\nenv"},
    ]
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    body = request(
        messages=[
            user(text("look"), image),
            {"role": "system", "content": "env"},
            {"role": "assistant", "content": "a cat"},
            {"role": "system", "content": "env again"},
            user(text("thanks")),
        ]
    )
    assert messages_request(body, "m", system_turns="user").body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "env"},
            ],
        },
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "env again\n\nthanks"},
    ]
    with pytest.raises(ValueError):
        messages_request(body, "m", system_turns="developer")


@pytest.mark.parametrize(
    ("source", "url"),
    [
        ({"type": "base64", "media_type": "image/png", "data": PNG}, f"data:image/png;base64,{PNG}"),
        ({"type": "url", "url": "https://example.com/cat.jpg"}, "https://example.com/cat.jpg"),
    ],
)
def test_images(source: dict[str, Any], url: str) -> None:
    body = messages_request(
        request(messages=[user(text("what is it?"), {"type": "image", "source": source})]), "m"
    ).body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]
    CHAT_PARAMS.validate_python(body)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({"type": "base64", "media_type": "image/bmp", "data": PNG}, "media_type"),
        ({"type": "base64", "media_type": "image/png", "data": "not base64!"}, "not valid base64"),
        ({"type": "file", "file_id": "file_1"}, "Files API"),
        ({"type": "url"}, r"source\.url: Field required"),
        (None, r"source: Field required"),
    ],
)
def test_bad_images(source: Any, match: str) -> None:
    invalid(request(messages=[user({"type": "image", "source": source})]), match)


def test_documents() -> None:
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    body = messages_request(
        request(
            messages=[
                user(
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
                )
            ]
        ),
        "m",
    ).body
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "plain"},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}},
    ]
    invalid(
        request(messages=[user({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}})]),
        "documents are supported",
    )


def test_tool_round_trip_history() -> None:
    weather = {
        "name": "get_weather",
        "description": "Weather now",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    body = request(
        tools=[weather],
        messages=[
            user(text("Weather in Paris and Rome?")),
            assistant(
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                text("Checking."),
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ),
            user(
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [text("no"), text("data")],
                    "is_error": True,
                },
                text("Thanks"),
            ),
            assistant({"type": "redacted_thinking", "data": "xx"}),
        ],
    )
    out = messages_request(body, "gpt-4o-mini")
    assert out.body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no\ndata"},
        {"role": "user", "content": "Thanks"},
    ]  # thinking and an assistant turn of redacted thinking alone are dropped
    assert out.body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather now", "parameters": weather["input_schema"]},
        }
    ]
    assert out.warnings == []
    CHAT_PARAMS.validate_python(out.body)


def test_tool_result_images_follow_the_tool_messages() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    body = request(
        messages=[
            user(text("screenshot please")),
            assistant({"type": "tool_use", "id": "t1", "name": "shot", "input": {}}),
            user({"type": "tool_result", "tool_use_id": "t1", "content": [text("here"), image]}),
        ]
    )
    messages = messages_request(body, "m").body["messages"]
    assert messages[2] == {"role": "tool", "tool_call_id": "t1", "content": "here"}
    assert messages[3]["role"] == "user" and messages[3]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    empty = messages_request(request(messages=[user({"type": "tool_result", "tool_use_id": "t1"})]), "m").body[
        "messages"
    ]
    assert empty == [{"role": "tool", "tool_call_id": "t1", "content": ""}]


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"type": "tool_use", "name": "x", "input": {}}, r"\.id: Field required"),
        ({"type": "tool_use", "id": "t", "input": {}}, r"\.name: Field required"),
        ({"type": "tool_use", "id": "t", "name": "x", "input": "[]"}, r"\.input: must be an object"),
        ({"type": "tool_result", "content": "x"}, "tool_result blocks belong in user messages"),
    ],
)
def test_bad_assistant_blocks(block: dict[str, Any], match: str) -> None:
    invalid(request(messages=[user(text("x")), assistant(block)]), match)


def test_bad_tool_results() -> None:
    invalid(request(messages=[user({"type": "tool_result", "content": "x"})]), r"tool_use_id: Field required")
    invalid(request(messages=[user({"type": "tool_result", "tool_use_id": "t", "content": 5})]), r"\.content: must be")
    invalid(
        request(messages=[user({"type": "tool_use", "id": "t", "name": "x", "input": {}})]),
        "belong in assistant messages",
    )


def test_tools_builtin_and_deferred() -> None:
    custom = {"name": "Bash", "input_schema": {"type": "object"}, "strict": True}
    deferred = {"name": "WebFetch", "input_schema": {"type": "object"}, "defer_loading": True}
    placeholder = {
        "name": "DeferredToolPlaceholder",
        "description": "never call",
        "input_schema": {"type": "object", "properties": {}},
        "defer_loading": True,
    }
    server = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    out = messages_request(request(tools=[custom, deferred, placeholder, server]), "m")
    assert [t["function"]["name"] for t in out.body["tools"]] == ["Bash"]
    assert out.body["tools"][0]["function"]["strict"] is True
    assert out.warnings == ["built-in tools cannot run upstream and were not sent: web_search (web_search_20250305)"]
    # once a tool search has loaded it (a tool_reference in a tool result), a deferred tool is sent
    loaded = messages_request(
        request(
            tools=[custom, deferred, placeholder],
            messages=[
                user(text("fetch")),
                assistant({"type": "tool_use", "id": "t", "name": "ToolSearch", "input": {"query": "select:WebFetch"}}),
                user(
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "tool_reference", "tool_name": "WebFetch"}],
                    }
                ),
            ],
        ),
        "m",
    )
    assert [t["function"]["name"] for t in loaded.body["tools"]] == ["Bash", "WebFetch"]
    assert loaded.body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "t",
        "content": "Tool WebFetch is now available.",
    }


TOOLS = [{"name": "a", "input_schema": {"type": "object"}}, {"name": "b", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "b"}, {"type": "function", "function": {"name": "b"}}, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    body = messages_request(request(tools=TOOLS, tool_choice=choice), "m").body
    assert body["tool_choice"] == expected
    assert body.get("parallel_tool_calls") == parallel
    CHAT_PARAMS.validate_python(body)


def test_tool_choice_without_tools_is_not_sent() -> None:
    out = messages_request(request(tool_choice={"type": "any"}), "m")
    assert "tool_choice" not in out.body and out.warnings == ["tool_choice was ignored: no tools are sent upstream"]
    quiet = messages_request(request(tool_choice={"type": "none"}), "m")
    assert "tool_choice" not in quiet.body and quiet.warnings == []


def test_top_k_only_with_passthrough() -> None:
    assert messages_request(request(top_k=40), "m", passthrough=True).extra["top_k"] == 40
    out = messages_request(request(top_k=40), "m")
    assert "top_k" not in out.body and "top_k" in out.warnings[0] and "passthrough_options" in out.warnings[0]


@pytest.mark.parametrize(
    ("fields", "think", "soft"),
    [
        ({}, None, False),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, True, False),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}, "output_config": {"effort": "low"}}, "low", False),
        ({"thinking": {"type": "disabled"}}, False, False),
        ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, False, False),
        ({"thinking": {"type": "adaptive", "display": "omitted"}}, None, False),
        (
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
            "high",
            True,
        ),  # what Claude Code sends
        ({"output_config": {"effort": "xhigh"}}, "high", True),
        ({"output_config": {"effort": "max"}}, "max", True),
    ],
)
def test_thinking_becomes_a_neutral_think_value(fields: dict[str, Any], think: Any, soft: bool) -> None:
    out = messages_request(request(**fields), "m")
    assert (out.think, out.think_soft) == (think, soft)
    assert not any(k in out.body for k in ("reasoning_effort", "chat_template_kwargs", "thinking"))


def test_stream_metadata_unknown_fields_and_context_management() -> None:
    out = messages_request(
        request(
            stream=True,
            metadata={"user_id": "u"},
            service_tier="auto",
            container="c",
            context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        ),
        "m",
    )
    assert out.stream is True and out.body["stream"] is True and out.body["stream_options"] == {"include_usage": True}
    assert "metadata" not in out.body and "service_tier" not in out.body
    assert out.warnings == ["fields with no OpenAI equivalent were ignored: container, service_tier"]
    CHAT_PARAMS_STREAMING.validate_python(out.body)
    edits = messages_request(request(context_management={"edits": [{"type": "clear_tool_uses_20250919"}]}), "m")
    assert edits.warnings == ["context_management was ignored: the proxy does not edit the conversation"]


def test_structured_output() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    for fields in (
        {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        {"output_format": {"type": "json_schema", "schema": schema}},
    ):
        body = messages_request(request(**fields), "m").body
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
        CHAT_PARAMS.validate_python(body)


def test_max_tokens_is_sent_as_asked() -> None:
    """What the model can take is applied after translation, as on every route (tests/test_token_limit.py)."""
    out = messages_request(request(max_tokens=32000), "gpt-4o-mini")
    assert out.body["max_tokens"] == 32000 and out.warnings == []


def test_unknown_blocks_are_dropped_with_a_warning() -> None:
    out = messages_request(
        request(
            messages=[
                user(text("x"), {"type": "container_upload", "file_id": "f"}),
                assistant(text("y"), {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}),
            ]
        ),
        "m",
    )
    assert out.body["messages"] == [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert out.warnings == [
        "messages.0.content.1: a container_upload block has no OpenAI equivalent and was dropped",
        "messages.1.content.1: a server_tool_use block has no OpenAI equivalent and was dropped",
    ]


def claude_code_request() -> dict[str, Any]:
    """The shape of Claude Code 2.1.332's `claude -p "say hi"` request (texts shortened), as logged on loopback."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"command": {"type": "string", "description": "The command"}},
        "required": ["command"],
        "additionalProperties": False,
    }
    return {
        "model": "claude-opus-5-5",
        "messages": [
            {
                "role": "user",
                "content": [text("<system-reminder>\nAttribution ...\n</system-reminder>\n"), text("say hi")],
            },
            {
                "role": "system",
                "content": [{"type": "text", "text": "# Environment\n...", "cache_control": {"type": "ephemeral"}}],
            },
        ],
        "system": [
            text("x-anthropic-billing-header: cc_version=2.1.332; cc_entrypoint=sdk-cli;"),
            {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": "Bash", "description": "Executes a bash command.", "input_schema": schema},
            {
                "name": "DeferredToolPlaceholder",
                "description": "Reserved placeholder; never call this tool.",
                "input_schema": {"type": "object", "properties": {}},
                "defer_loading": True,
            },
        ],
        "metadata": {"user_id": '{"device_id":"d","account_uuid":"","session_id":"s"}'},
        "max_tokens": 32000,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": True,
    }


def test_claude_code_request() -> None:
    out = messages_request(claude_code_request(), "gpt-4o-mini")
    assert out.warnings == []
    assert [m["role"] for m in out.body["messages"]] == ["system", "user", "system"]
    assert [t["function"]["name"] for t in out.body["tools"]] == ["Bash"]
    assert (out.think, out.think_soft, out.stream) == ("high", True, True)
    assert out.body["max_tokens"] == 32000 and "tool_choice" not in out.body
    CHAT_PARAMS_STREAMING.validate_python(out.body)


# ---------------------------------------------------------------------------------------------
# Whole answers


CHAT_RECORDINGS = sorted(p.stem for p in (RECORDINGS / "chat").glob("*.json"))


@pytest.mark.parametrize("name", CHAT_RECORDINGS)
def test_every_recorded_answer_is_a_valid_message(name: str) -> None:
    answer = json.loads((RECORDINGS / "chat" / f"{name}.json").read_text())["response"]["body"]
    message, warnings = messages_response(answer, "claude-sonnet-4-5")
    parsed = Message.model_validate(message)
    assert warnings == []
    assert parsed.model == "claude-sonnet-4-5" and parsed.id.startswith("msg_") and parsed.role == "assistant"
    source = answer["choices"][0]["message"]
    texts = [b.text for b in parsed.content if b.type == "text"]
    assert texts == (
        [source.get("content") or source.get("refusal")] if (source.get("content") or source.get("refusal")) else []
    )
    uses = [b for b in parsed.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in source.get("tool_calls") or ()
    ]
    finish = answer["choices"][0]["finish_reason"]
    assert parsed.stop_reason == {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[finish]
    assert parsed.usage.input_tokens + (parsed.usage.cache_read_input_tokens or 0) == answer["usage"]["prompt_tokens"]
    assert parsed.usage.output_tokens == answer["usage"]["completion_tokens"]


def test_reasoning_becomes_a_thinking_block_first() -> None:
    for field in ("reasoning_content", "reasoning"):
        answer = {
            "choices": [{"message": {"role": "assistant", "content": "4", field: "2+2"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}},
        }
        message = Message.model_validate(messages_response(answer, "m")[0])
        assert [b.type for b in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == "2+2" and message.content[0].signature == ""
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
            3,
            2,
            3,
        )


def test_unparsable_tool_arguments_become_an_empty_input_with_a_warning() -> None:
    answer = json.loads((FIXTURES / "llama-server" / "chat-tools-length.json").read_text())["response"]["body"]
    message, warnings = messages_response(answer, "m")
    parsed = Message.model_validate(message)
    assert parsed.stop_reason == "max_tokens"
    assert [b.input for b in parsed.content if b.type == "tool_use"] == [{}]
    assert len(warnings) == 1 and "not a JSON object" in warnings[0]


@pytest.mark.parametrize(
    ("choice", "reason", "sequence"),
    [
        ({"finish_reason": "stop", "stop_reason": "END"}, "stop_sequence", "END"),  # vLLM names the matched stop
        ({"finish_reason": "stop", "stop_reason": "\n"}, "end_turn", None),  # not the client's: the model's own
        ({"finish_reason": "stop", "stop_reason": 128001}, "end_turn", None),  # a stop token id
        ({"finish_reason": "content_filter"}, "refusal", None),
        ({"finish_reason": None}, "end_turn", None),
    ],
)
def test_stop_reasons(choice: dict[str, Any], reason: str, sequence: str | None) -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "x"}, **choice}]}
    message = Message.model_validate(messages_response(answer, "m", ("END", "STOP"))[0])
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)


@pytest.mark.parametrize(
    "answer",
    [
        {},
        [],
        "text",
        {"error": {"message": "boom"}},
        {"choices": []},
        {"choices": [{}]},
        {"choices": ["x"]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}},
        {"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": float("nan")}},
        {"choices": [{"message": {"content": "x"}}], "usage": "lots"},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"content": "x", "tool_calls": "call"}}]},
    ],
)
def test_non_answers_are_502_api_errors(answer: Any) -> None:
    with pytest.raises(AnthropicError) as caught:
        messages_response(answer, "m")
    assert caught.value.status == 502 and caught.value.kind == "api_error"
    ErrorResponse.model_validate(caught.value.body())


def test_whole_answer_through_the_sdk() -> None:
    answer = json.loads((RECORDINGS / "chat" / "tool-call-single.json").read_text())["response"]["body"]
    message, _ = messages_response(answer, "claude-test")
    client = sdk_client(lambda _: httpx.Response(200, json=message))
    got = client.messages.create(model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert (
        got.stop_reason == "tool_use"
        and got.content[0].type == "tool_use"
        and got.to_dict() == Message.model_validate(message).to_dict()
    )


# ---------------------------------------------------------------------------------------------
# Streams


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize("pieces", [1, 7, 64, 1000])
def test_every_recorded_stream_in_pieces(name: str, pieces: int) -> None:
    body = STREAMS[name]
    whole = convert_stream(body)
    assert b"".join(convert_stream(body, pieces)) == b"".join(whole)


@pytest.mark.parametrize("name", list(STREAMS))
def test_every_recorded_stream_assembles_to_the_whole_answer(name: str) -> None:
    body = STREAMS[name]
    raw = convert_stream(body)
    validate_events(parse_events(raw))
    final, _ = sdk_stream(raw)
    expected, _ = messages_response(assemble(openai_chunks(body)), "claude-test")
    expected["id"] = "msg_test"
    assert final.model_dump(exclude_none=True) == Message.model_validate(expected).model_dump(exclude_none=True)
    assert final.content or final.stop_reason == "max_tokens", (
        "every recording answers something (or ran out of tokens)"
    )


def test_events_come_as_the_upstream_produces_them() -> None:
    stream = Driven(MessagesStream("claude-test", input_tokens=12, message_id="msg_x"))
    first = parse_events(stream.feed_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    assert [n for n, _ in first] == ["message_start", "ping"]
    assert first[0][1]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert parse_events(stream.feed_event({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})) == [
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        ),
    ]
    events = parse_events(stream.feed_event({"choices": [{"index": 0, "delta": {"content": "lo"}}]}))
    assert events == [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        )
    ]
    assert stream.feed_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) == []
    assert stream.feed_event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}) == []
    tail = parse_events(stream.finish())
    assert tail == [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"input_tokens": 9, "output_tokens": 2},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_tool_arguments_stream_as_they_arrive() -> None:
    body = STREAMS["openai-tool-calls-parallel.sse"]
    chunks = openai_chunks(body)
    fragments = [
        f["function"].get("arguments")
        for c in chunks
        for ch in c.get("choices", [])
        for f in ch["delta"].get("tool_calls") or ()
    ]
    events = parse_events(convert_stream(body))
    partials = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert partials == [f for f in fragments if f]
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [(b["type"], b["input"]) for b in starts] == [("tool_use", {}), ("tool_use", {})]
    assert len({b["id"] for b in starts}) == 2


def test_thinking_then_text_then_tools() -> None:
    stream = Driven(MessagesStream("m", message_id="msg_t"))
    raw = []
    for delta in (
        {"reasoning_content": "think"},
        {"reasoning": " more"},
        {"content": "I'll call."},
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    ):
        raw += stream.feed_event({"choices": [{"index": 0, "delta": delta}]})
    raw += stream.feed_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    raw += stream.finish()
    validate_events(parse_events(raw))
    final, _ = sdk_stream(raw)
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "think more" and final.content[0].signature == ""
    assert final.content[2].input == {"a": 1} and final.stop_reason == "tool_use"


def test_tool_calls_without_index_or_with_late_names() -> None:
    stream = Driven(MessagesStream("m", message_id="msg_t"))
    raw = stream.feed_event(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": {"x": 1}}},
                            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
                        ]
                    }
                }
            ]
        }
    )
    raw += stream.feed_event(
        {"choices": [{"delta": {"tool_calls": [{"index": 5, "function": {"arguments": '{"y"'}}]}}]}
    )
    raw += stream.feed_event(
        {
            "choices": [
                {"delta": {"tool_calls": [{"index": 5, "id": "c3", "function": {"name": "c", "arguments": ": 2}"}}]}}
            ]
        }
    )
    raw += stream.feed_event({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}) + stream.finish()
    final, _ = sdk_stream(raw)
    assert [(b.id, b.name, b.input) for b in final.content] == [
        ("c1", "a", {"x": 1}),
        ("c2", "b", {}),
        ("c3", "c", {"y": 2}),
    ]


def test_stop_sequence_and_length_in_streams() -> None:
    ended = {"choices": [{"delta": {"content": "a"}, "finish_reason": "stop", "stop_reason": "END"}]}
    stream = Driven(MessagesStream("m", message_id="msg_t", stop_sequences=("END",)))
    final, _ = sdk_stream(stream.feed_event(ended) + stream.finish())
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "END")
    # a stop the client did not ask for (the model's own, which the proxy added from the catalog): its end of turn
    stream = Driven(MessagesStream("m", message_id="msg_t", stop_sequences=("OTHER",)))
    final, _ = sdk_stream(stream.feed_event(ended) + stream.finish())
    assert (final.stop_reason, final.stop_sequence) == ("end_turn", None)
    length = convert_stream(STREAMS["recording:max-tokens-finish-length"])
    assert sdk_stream(length)[0].stop_reason == "max_tokens"


def error_event(raw: list[bytes]) -> dict[str, Any]:
    name, data = parse_events(raw)[-1]
    assert name == "error"
    ErrorResponse.model_validate(data)
    return data["error"]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        (["not an object"], "invalid stream event"),
        ([{"choices": "x"}], "choices that are not a list"),
        ([{"choices": [5]}], "choice that is not an object"),
        ([{"choices": [{"delta": "x"}]}], "delta that is not an object"),
        ([{"error": {"message": "overloaded"}}], "upstream error: overloaded"),
        ([{"choices": [{"delta": {"tool_calls": "x"}}]}], "tool_calls that are not a list"),
        ([{"choices": [{"delta": {"tool_calls": [7]}}]}], "tool call that is not an object"),
        (
            [{"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": "x"}}],
            "invalid usage count: prompt_tokens",
        ),
        ([{"choices": [{"delta": {"content": "partial"}}]}], "ended before the answer was complete"),
    ],
)
def test_odd_streams_end_in_an_error_event(chunks: list[Any], message: str) -> None:
    stream = Driven(MessagesStream("m", message_id="msg_t"))
    raw: list[bytes] = []
    for chunk in chunks:
        raw += stream.feed_event(chunk)
    raw += stream.cut()
    assert b"" not in raw
    error = error_event(raw)
    assert error["type"] == "api_error" and message in error["message"]
    assert (
        stream.ended and stream.feed_event({"choices": []}) == [] and stream.finish() == [] and stream.fail("x") == []
    )
    with pytest.raises(anthropic.APIStatusError, match=message.split(":")[0]):
        sdk_stream(raw)


def test_fail_mid_stream_and_before_anything() -> None:
    stream = Driven(MessagesStream("m", message_id="msg_t"))
    raw = stream.feed_event({"choices": [{"delta": {"content": "half"}}]}) + stream.fail("the upstream timed out", 529)
    assert error_event(raw) == {"type": "overloaded_error", "message": "the upstream timed out"}
    early = Driven(MessagesStream("m")).fail("no upstream")
    assert [n for n, _ in parse_events(early)] == ["error"]


def test_garbage_never_raises() -> None:
    odd = [
        None,
        1,
        "x",
        [],
        {},
        {"choices": None},
        {"choices": [{}]},
        {"choices": [{"delta": None}]},
        {"choices": [{"delta": {"content": 5, "reasoning": {"a": 1}, "tool_calls": [{}]}}]},
        {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        {"usage": None},
        {"choices": [{"index": None, "delta": {"content": "null index counts as 0"}}]},
    ]
    for start in range(len(odd)):
        stream = Driven(MessagesStream("m"))
        raw = [piece for chunk in odd[start:] for piece in stream.feed_event(chunk)] + stream.finish()
        assert raw and b"" not in raw and parse_events(raw)[-1][0] in ("error", "message_stop")


def test_start_can_be_sent_before_the_first_chunk() -> None:
    stream = Driven(MessagesStream("m", input_tokens=3, message_id="msg_t"))
    assert [n for n, _ in parse_events(stream.start())] == ["message_start", "ping"]
    assert stream.start() == []
    assert [n for n, _ in parse_events(stream.feed_event({"choices": [{"delta": {"content": "x"}}]}))] == [
        "content_block_start",
        "content_block_delta",
    ]


def test_unicode_and_lone_surrogates() -> None:
    stream = Driven(MessagesStream("m", message_id="msg_t"))
    raw = (
        stream.feed_event({"choices": [{"delta": {"content": "héllo ☃ \ud800"}, "finish_reason": "stop"}]})
        + stream.finish()
    )
    final, _ = sdk_stream(raw)
    assert final.content[0].text == "héllo ☃ \ufffd"


def test_no_usage_keeps_the_estimate() -> None:
    raw = convert_stream(STREAMS["openai-plain-text-no-usage.sse"], input_tokens=42)
    final, _ = sdk_stream(raw)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (42, 0)
    with_usage, _ = sdk_stream(convert_stream(STREAMS["openai-plain-text-include-usage.sse"], input_tokens=42))
    usage = next(c["usage"] for c in openai_chunks(STREAMS["openai-plain-text-include-usage.sse"]) if c.get("usage"))
    assert (with_usage.usage.input_tokens, with_usage.usage.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (599, "api_error"),
    ],
)
def test_error_bodies(status: int, kind: str) -> None:
    body = error_body(status, "why")
    assert error_type(status) == kind and body["type"] == "error" and body["error"] == {"type": kind, "message": "why"}
    assert body["request_id"].startswith("req_")
    if kind != "request_too_large":  # Anthropic documents it; the SDK's typed union lacks it
        ErrorResponse.model_validate(body)


SDK_ERRORS = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError,
    413: anthropic.RequestTooLargeError,
    429: anthropic.RateLimitError,
    500: anthropic.InternalServerError,
    503: anthropic.ServiceUnavailableError,
    529: anthropic.OverloadedError,
}


@pytest.mark.parametrize(
    "name", [*sorted(p.stem for p in (RECORDINGS / "errors").glob("*.json")), "llama-server:error-unknown-model"]
)
def test_recorded_upstream_errors(name: str) -> None:
    path = (
        FIXTURES / "llama-server" / "error-unknown-model.json"
        if name.startswith("llama")
        else RECORDINGS / "errors" / f"{name}.json"
    )
    response = json.loads(path.read_text())["response"]
    status, body = upstream_error(response["status"], json.dumps(response["body"]).encode(), "claude-test")
    ErrorResponse.model_validate(body)
    upstream_message = response["body"]["error"]["message"]
    if "model" in name:
        assert (status, body["error"]["type"]) == (404, "not_found_error")
        assert (
            body["error"]["message"].startswith("model 'claude-test' not found")
            and upstream_message in body["error"]["message"]
        )
    else:
        assert status == response["status"] and body["error"]["type"] == error_type(status)
        assert upstream_message in body["error"]["message"]
    if status in (401, 403):
        assert body["error"]["message"].startswith("the upstream rejected the API key")
    client = sdk_client(lambda _: httpx.Response(status, json=body))
    with pytest.raises(SDK_ERRORS[status]) as caught:
        client.messages.create(model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body == body


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "message"),
    [
        (503, b"<html><title>Service Unavailable</title></html>", 503, "Service Unavailable"),
        (500, b"", 500, "the upstream answered 500"),
        (502, "plain words", 502, "plain words"),
        (200, {"error": "odd"}, 502, "odd"),
        (400, {"detail": [{"msg": "bad"}]}, 400, '[{"msg": "bad"}]'),
        (404, {"error": {"message": "no route"}}, 404, "no route"),
    ],
)
def test_other_upstream_errors(status: int, body: Any, expected_status: int, message: str) -> None:
    got_status, got = upstream_error(status, body)
    assert got_status == expected_status and got["error"]["message"] == message
    ErrorResponse.model_validate(got)


def test_sdk_rejects_nothing_we_send_for_529() -> None:
    client = sdk_client(lambda _: httpx.Response(529, json=error_body(529, "busy")))
    with pytest.raises(anthropic.OverloadedError, match="busy"):
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------------------------
# count_tokens


def test_count_tokens_rule() -> None:
    schema = {"type": "object"}
    body = {
        "model": "m",
        "system": "s" * 40,  # 40
        "messages": [
            {"role": "user", "content": "u" * 20},  # 20
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t" * 8, "signature": "x"},  # 8
                    {"type": "tool_use", "id": "i", "name": "nm", "input": {"a": 1}},
                ],
            },  # 2 + 8
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "i", "content": [text("r" * 10)]},  # 10
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },  # 1600
        ],
        "tools": [{"name": "nm", "description": "d" * 6, "input_schema": schema}],  # 2 + 6 + 16
    }
    chars = 40 + 20 + 8 + 2 + len('{"a": 1}') + 10 + 2 + 6 + len(json.dumps(schema))
    expected = -(-chars // 4) + 3 * 3 + IMAGE_TOKENS
    answer = count_tokens(body)
    assert answer == {"input_tokens": expected}
    MessageTokensCount.model_validate(answer)
    assert estimate_input_tokens(body) == expected
    assert count_tokens({"model": "m", "messages": [{"role": "user", "content": "a"}]}) == {"input_tokens": 4}


def test_count_tokens_through_the_sdk() -> None:
    body = request(system="be brief", tools=TOOLS)
    client = sdk_client(lambda r: httpx.Response(200, json=count_tokens(json.loads(r.content))))
    got = client.messages.count_tokens(model=body["model"], messages=body["messages"], system="be brief", tools=TOOLS)
    assert got.input_tokens == count_tokens(body)["input_tokens"] == estimate_input_tokens(body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": "m"}, "messages: Field required"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
            "Files API",
        ),
    ],
)
def test_count_tokens_refuses_bad_requests(body: Any, match: str) -> None:
    with pytest.raises(AnthropicError, match=match) as caught:
        count_tokens(body)
    assert caught.value.status == 400
