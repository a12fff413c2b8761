"""The Responses API family (addon/translate/responses/): requests, answers, streams and errors.

Answers and events are checked against the official `openai` SDK: its pydantic types, and its own
`client.responses.create()` / `client.responses.stream()` run over the converted bytes through an
`httpx2.MockTransport`. Every recorded OpenAI stream in tests/fixtures goes through the stream
converter in 1/7/64/1000-byte pieces (split by a tiny SSE decoder here: decoding SSE is the
house's job) and must complete to the same Response as the whole-answer conversion.
"""

from __future__ import annotations

import itertools
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import completion_create_params
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from addon.translate import responses as R
from addon.translate.responses import (
    ResponsesError,
    ResponsesStream,
    error_body,
    responses_answer,
    responses_request,
    upstream_error,
)
from harness.upstream import RECORDINGS, recording
from tests.driven import Driven

FIXTURES = Path(__file__).parent / "fixtures"
_EVENT_TYPES = {
    m.model_fields["type"].annotation.__args__[0]: m for m in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
CHAT_PARAMS = TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming)
CHAT_STREAM_PARAMS = TypeAdapter(completion_create_params.CompletionCreateParamsStreaming)


# ---------------------------------------------------------------------------------------------
# Helpers


_COUNTERS: dict[str, Iterator[int]] = {}


@pytest.fixture(autouse=True)
def counted_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids from a counter, so a stream and a whole answer can be compared field by field."""
    reset_ids()

    def counted(prefix: str) -> str:
        return f"{prefix}_{next(_COUNTERS.setdefault(prefix, itertools.count()))}"

    for module in (R.answer, R.stream):  # where ids are made
        monkeypatch.setattr(module, "new_id", counted)


def reset_ids() -> None:
    _COUNTERS.clear()


class TinySSE:
    """Just enough of an SSE decoder for the tests: bytes in any pieces → the JSON of each `data:`."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, piece: bytes) -> list[Any]:
        self.buffer += piece.replace(b"\r\n", b"\n")
        out = []
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
            if data and data != b"[DONE]":
                out.append(json.loads(data))
        return out


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Our own output split back into (event name, data), checking the framing of each event."""
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        name, data = block.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        out.append((name[7:].decode(), json.loads(data[6:])))
    assert raw.endswith(b"\n\n")
    return out


def stream_bodies() -> dict[str, bytes]:
    """Every recorded chat-completions SSE body in tests/fixtures."""
    bodies = {f"sse:{p.stem}": p.read_bytes() for p in sorted(FIXTURES.glob("openai-*.sse"))}
    for p in sorted((RECORDINGS / "chat-stream").glob("*.json")):
        bodies[f"recording:{p.stem}"] = recording(f"chat-stream/{p.stem}")["response"]["body"].encode()
    for name in ("chat-stream", "chat-tools-stream"):
        bodies[f"llama-server:{name}"] = json.loads((FIXTURES / "llama-server" / f"{name}.json").read_text())[
            "response"
        ]["body"].encode()
    return bodies


STREAMS = stream_bodies()
REQUEST = {
    "model": "gpt-4o-mini",
    "input": "hi",
    "stream": True,
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather",
            "strict": False,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "instructions": "Be brief.",
    "temperature": 0.5,
}


def convert_stream(
    body: bytes, pieces: int | None = None, request: dict[str, Any] = REQUEST
) -> tuple[bytes, ResponsesStream, list[dict[str, Any]]]:
    reset_ids()
    decoder = TinySSE()
    converter = Driven(ResponsesStream("client-model", request, response_id="resp_test", created_at=1700000000))
    chunks: list[dict[str, Any]] = []
    out: list[bytes] = []
    size = pieces or len(body)
    for start in range(0, len(body), size):
        for chunk in decoder.feed(body[start : start + size]):
            chunks.append(chunk)
            events = converter.feed_event(chunk)
            assert all(events), "an empty piece would end a chunked response"
            out += events
    out += converter.finish()
    return b"".join(out), converter, chunks


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole chat.completion that a stream of chunks stands for."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    finish, usage = None, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            for key in ("content", "refusal", "reasoning_content", "reasoning"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(
                    call["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                slot["id"] = slot["id"] or call.get("id")
                slot["function"]["name"] += (call.get("function") or {}).get("name") or ""
                slot["function"]["arguments"] += (call.get("function") or {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    answer = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage:
        answer["usage"] = usage
    return answer


def without_clock(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "completed_at"}


def sdk_client(handler: Any) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="test",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def serve_bytes(body: bytes, content_type: str = "text/event-stream", status: int = 200) -> Any:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return httpx2.Response(status, content=body, headers={"content-type": content_type})

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def translated(body: dict[str, Any], model: str) -> tuple[dict[str, Any], Any, list[str]]:
    """(chat body, think, warnings) of a translated request."""
    translation = responses_request(body, model)
    assert translation.route == "chat/completions" and translation.extra == {}
    assert translation.think_soft is True, "Codex sends a reasoning effort with every request"
    return dict(translation.body), translation.think, translation.warnings


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    chat, _think, _warnings = translated(body, "upstream-model")
    (CHAT_STREAM_PARAMS if chat.get("stream") else CHAT_PARAMS).validate_python(chat)
    return chat


def refused(body: dict[str, Any], status: int = 400) -> ResponsesError:
    with pytest.raises(ResponsesError) as info:
        responses_request(body, "upstream-model")
    assert info.value.status == status
    assert info.value.body()["error"]["type"] == "invalid_request_error"
    return info.value


# ---------------------------------------------------------------------------------------------
# Requests


def test_string_input_and_instructions() -> None:
    chat = chat_body({"model": "m", "input": "hello", "instructions": "You are terse."})
    assert chat == {
        "model": "upstream-model",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"}],
    }


def test_message_items_roles_and_parts() -> None:
    chat = chat_body(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "dev rules"},
                {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "A cat.", "annotations": []}],
                },
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}],
                },
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "dev rules\n\nsys"},  # adjacent system messages joined
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "I can't."},
    ]


def test_adjacent_system_messages_are_joined_but_not_across_turns() -> None:
    chat = chat_body(
        {
            "model": "m",
            "instructions": "I",
            "input": [
                {
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
                },
                {"role": "system", "content": "c"},
                {"role": "user", "content": "u"},
                {"role": "system", "content": "later"},
            ],
        }
    )
    assert chat["messages"] == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "I"},
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b"},
                {"type": "text", "text": "c"},
            ],
        },
        {"role": "user", "content": "u"},
        {"role": "system", "content": "later"},
    ]


def test_function_calls_merge_into_one_assistant_message_and_outputs_become_tool_messages() -> None:
    chat = chat_body(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "think"}],
                    "encrypted_content": "x",
                },
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "id": "fc_2",
                    "call_id": "call_2",
                    "name": "get_weather",
                    "arguments": '{"city":"Rome"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
                {"role": "user", "content": "thanks"},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "user", "content": "thanks"},
    ]


def test_function_call_alone_has_null_content_and_assistant_text_after_it_joins_it() -> None:
    chat = chat_body(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"role": "assistant", "content": "calling f"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        }
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "calling f",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "ok"}
    lone = chat_body(
        {"model": "m", "input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]}
    )
    assert lone["messages"][0]["content"] is None


def test_images_in_tool_outputs_follow_the_tool_results_as_a_user_message() -> None:
    chat = chat_body(
        {
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "c1", "name": "screenshot", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "screenshot", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [
                        {"type": "input_text", "text": "here"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                },
                {"type": "function_call_output", "call_id": "c2", "output": "none"},
            ],
        }
    )
    assert [m["role"] for m in chat["messages"]] == ["assistant", "tool", "tool", "user"]
    assert chat["messages"][1]["content"] == "here"
    assert chat["messages"][3]["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]


def test_reasoning_items_are_dropped_with_a_warning() -> None:
    chat, think, warnings = translated(
        {
            "model": "m",
            "input": [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "hi"}],
        },
        "u",
    )
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert think is None and warnings == [
        "1 reasoning input item(s) were dropped: chat completions has no portable field for them"
    ]


@pytest.mark.parametrize(
    ("part", "param", "words"),
    [
        ({"type": "input_image", "file_id": "file-123"}, "input[0].content[0].file_id", "file_id"),
        ({"type": "input_image"}, "input[0].content[0].image_url", "image_url"),
        (
            {"type": "input_file", "file_data": "x", "filename": "a.pdf"},
            "input[0].content[0]",
            "file inputs are not supported",
        ),
        ({"type": "input_audio", "input_audio": {}}, "input[0].content[0].type", "'input_audio'"),
    ],
)
def test_unsupported_content_parts_are_refused_clearly(part: dict[str, Any], param: str, words: str) -> None:
    error = refused({"model": "m", "input": [{"role": "user", "content": [part]}]})
    assert error.param == param and words in error.message


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"role": "tool", "content": "x"}, "input[0].role"),
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
        ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "input[0].name"),
        ({"type": "function_call_output", "output": "x"}, "input[0].call_id"),
        ({"type": "web_search_call", "id": "ws_1", "status": "completed"}, "input[0].type"),
        ({"content": "no type, no role"}, "input[0].type"),
        ("just a string", "input[0]"),
        ({"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}, "input[0].content"),
    ],
)
def test_bad_input_items_are_refused(item: Any, param: str) -> None:
    assert refused({"model": "m", "input": [item]}).param == param


@pytest.mark.parametrize(
    "body", [{"model": "m"}, {"model": "m", "input": 3}, {"model": "m", "input": {"role": "user"}}]
)
def test_input_is_required_as_a_string_or_items(body: dict[str, Any]) -> None:
    assert refused(body).param == "input"


def test_function_tools_keep_strict_and_reach_chat_shape() -> None:
    chat = chat_body(
        {
            **REQUEST,
            "tools": [
                {
                    "type": "function",
                    "name": "a",
                    "description": "A",
                    "parameters": {"type": "object", "properties": {}},
                    "strict": True,
                },
                {"type": "function", "name": "b", "parameters": None, "strict": None},
            ],
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "a",
                "description": "A",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "b"}},
    ]


@pytest.mark.parametrize(
    "kind",
    [
        "file_search",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "custom",
        "shell",
        "apply_patch",
        "tool_search",
    ],
)
def test_built_in_tools_are_refused_naming_the_type(kind: str) -> None:
    error = refused({"model": "m", "input": "hi", "tools": [REQUEST["tools"][0], {"type": kind, "name": "x"}]})
    assert error.param == "tools[1].type" and repr(kind) in error.message


@pytest.mark.parametrize("kind", ["web_search", "web_search_preview"])
def test_web_search_is_dropped_with_a_warning(kind: str) -> None:
    chat, _, warnings = translated(
        {"model": "m", "input": "hi", "tools": [{"type": kind, "external_web_access": False}]}, "u"
    )
    assert "tools" not in chat and warnings == [
        f"tools[0]: the built-in {kind} tool was dropped: there is no web search here"
    ]


NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents.",
    "tools": [
        {
            "type": "function",
            "name": "spawn_agent",
            "description": "Spawn.",
            "strict": False,
            "parameters": {"type": "object", "properties": {"task": {"type": "string"}}},
        },
        {"type": "function", "name": "close_agent", "parameters": {"type": "object", "properties": {}}},
    ],
}


def test_namespace_tools_become_prefixed_functions() -> None:
    chat = chat_body({"model": "m", "input": "x", "tools": [REQUEST["tools"][0], NAMESPACE]})
    assert [t["function"]["name"] for t in chat["tools"]] == [
        "get_weather",
        "multi_agent_v1__spawn_agent",
        "multi_agent_v1__close_agent",
    ]
    assert chat["tools"][1]["function"]["description"] == "Spawn." and chat["tools"][1]["function"]["strict"] is False
    assert (
        refused(
            {"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "mcp"}]}]}
        ).param
        == "tools[0].tools[0].type"
    )


def test_namespaced_calls_are_answered_with_their_namespace_and_replayed_flat() -> None:
    request = {"model": "m", "input": "x", "tools": [NAMESPACE]}
    call = {"id": "call_1", "type": "function", "function": {"name": "multi_agent_v1__close_agent", "arguments": "{}"}}
    answer = responses_answer(
        {"choices": [{"message": {"role": "assistant", "tool_calls": [call]}, "finish_reason": "tool_calls"}]},
        "m",
        request,
    )
    item = Response.model_validate(answer).output[0]
    assert (item.type, item.name, item.namespace) == ("function_call", "close_agent", "multi_agent_v1")  # type: ignore[union-attr]
    stream = Driven(ResponsesStream("m", request))
    events = [
        sse_events(e)[0] for e in stream.feed_event({"choices": [{"delta": {"tool_calls": [{"index": 0, **call}]}}]})
    ]
    added = next(d for n, d in events if n == "response.output_item.added")
    assert (added["item"]["name"], added["item"]["namespace"]) == ("close_agent", "multi_agent_v1")
    history = chat_body(
        {
            **request,
            "input": [{**answer["output"][0]}, {"type": "function_call_output", "call_id": "call_1", "output": "ok"}],
        }
    )
    assert history["messages"][0]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    chat = chat_body({**REQUEST, "tool_choice": choice, "parallel_tool_calls": False})
    assert chat["tool_choice"] == expected and chat["parallel_tool_calls"] is False


def test_tool_choice_allowed_tools_narrows_the_tools() -> None:
    tools = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}} for n in ("a", "b")]
    chat = chat_body(
        {
            "model": "m",
            "input": "x",
            "tools": tools,
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]},
        }
    )
    assert chat["tool_choice"] == "required" and [t["function"]["name"] for t in chat["tools"]] == ["b"]


@pytest.mark.parametrize("choice", [{"type": "function", "name": "nope"}, {"type": "web_search_preview"}, "sometimes"])
def test_bad_tool_choice_is_refused(choice: Any) -> None:
    assert refused({**REQUEST, "tool_choice": choice}).param.startswith("tool_choice")


def test_without_tools_tool_choice_and_parallel_calls_are_not_sent() -> None:
    chat = chat_body({"model": "m", "input": "x", "tool_choice": "auto", "parallel_tool_calls": True, "tools": []})
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat and "tools" not in chat
    assert refused({"model": "m", "input": "x", "tool_choice": "required"}).param == "tool_choice"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {
                "type": "json_schema",
                "name": "city",
                "strict": True,
                "description": "A city",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "description": "A city",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                },
            },
        ),
    ],
)
def test_text_format_becomes_response_format(fmt: dict[str, Any], expected: Any) -> None:
    chat = chat_body({"model": "m", "input": "x", "text": {"format": fmt}})
    assert chat.get("response_format") == expected


@pytest.mark.parametrize(
    "text", [{"format": {"type": "xml"}}, {"format": {"type": "json_schema", "name": "x"}}, "json"]
)
def test_bad_text_format_is_refused(text: Any) -> None:
    assert refused({"model": "m", "input": "x", "text": text}).param.startswith("text")


@pytest.mark.parametrize(
    ("effort", "think"),
    [
        (None, None),
        ("none", False),
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "max"),
        ("max", "max"),
    ],
)
def test_reasoning_effort_becomes_a_think_decision(effort: str | None, think: Any) -> None:
    chat, decided, _ = translated({"model": "m", "input": "x", "reasoning": {"effort": effort, "summary": "auto"}}, "u")
    assert decided == think
    assert "reasoning_effort" not in chat and "reasoning" not in chat  # the caller sends it in its think style


def test_unknown_reasoning_effort_is_refused_with_ollamas_words() -> None:
    error = refused({"model": "m", "input": "x", "reasoning": {"effort": "extreme"}})
    assert (
        error.message.startswith('invalid reasoning value: "extreme" (must be "minimal"')
        and error.param == "reasoning.effort"
    )


def test_sampling_limits_and_stream() -> None:
    chat = chat_body(
        {"model": "m", "input": "x", "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stream": True}
    )
    assert (chat["max_tokens"], chat["temperature"], chat["top_p"]) == (50, 0.2, 0.9)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    chat, _, _ = translated({"model": "m", "input": "x", "max_output_tokens": 50}, "o4-mini")
    assert chat["max_tokens"] == 50 and "stream" not in chat, "the model's own field is chosen after translation"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_output_tokens", 0),
        ("max_output_tokens", "9"),
        ("max_output_tokens", True),
        ("temperature", "hot"),
        ("top_p", float("nan")),
        ("stream", "yes"),
        ("instructions", ["a"]),
    ],
)
def test_bad_scalars_are_refused(field: str, value: Any) -> None:
    assert refused({"model": "m", "input": "x", field: value}).param == field


def test_fields_with_nothing_to_send_are_accepted_quietly() -> None:
    chat, _think, warnings = translated(
        {
            "model": "m",
            "input": "x",
            "user": "u1",
            "metadata": {"k": "v"},
            "truncation": "disabled",
            "include": ["reasoning.encrypted_content"],
            "store": False,
            "prompt_cache_key": "k",
            "service_tier": "auto",
            "stream_options": {"include_obfuscation": False},
            "background": False,
            "safety_identifier": "s",
            "client_metadata": {"x-codex-window-id": "w"},
        },
        "u",
    )
    assert chat == {"model": "u", "messages": [{"role": "user", "content": "x"}]} and warnings == []


def test_fields_not_honoured_are_reported() -> None:
    _, _, warnings = translated(
        {"model": "m", "input": "x", "top_logprobs": 3, "frobnicate": 1, "text": {"verbosity": "low"}}, "u"
    )
    assert warnings == [
        "text.verbosity was ignored: chat completions has no portable equivalent",
        "fields with no chat-completions equivalent were ignored: top_logprobs",
        "unknown fields were ignored: frobnicate",
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"conversation": {"id": "conv_123"}}, "conversation"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ],
)
def test_stateful_requests_are_refused_as_stateless(extra: dict[str, Any], param: str) -> None:
    error = refused({"model": "m", "input": "x", **extra})
    assert error.param == param and "stateless" in error.message


def test_non_object_body_is_refused() -> None:
    with pytest.raises(ResponsesError) as info:
        responses_request([], "u")  # type: ignore[arg-type]
    assert info.value.status == 400


# ---------------------------------------------------------------------------------------------
# Answers


CHAT_ANSWERS = sorted(p.stem for p in (RECORDINGS / "chat").glob("*.json"))


@pytest.mark.parametrize("name", CHAT_ANSWERS)
def test_every_recorded_answer_converts_to_a_valid_response(name: str) -> None:
    exchange = recording(f"chat/{name}")
    answer = exchange["response"]["body"]
    response = responses_answer(answer, "client-model", REQUEST)
    parsed = Response.model_validate(response)
    message = answer["choices"][0]["message"]
    assert parsed.model == "client-model" and parsed.id.startswith("resp_") and parsed.object == "response"
    assert parsed.output_text == (message.get("content") or "")
    assert parsed.usage is not None and parsed.usage.input_tokens == answer["usage"]["prompt_tokens"]
    assert parsed.usage.output_tokens == answer["usage"]["completion_tokens"]
    assert parsed.usage.total_tokens == answer["usage"]["total_tokens"]
    calls = [o for o in parsed.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or ()
    ]
    length = answer["choices"][0]["finish_reason"] == "length"
    assert parsed.status == ("incomplete" if length else "completed")
    assert (parsed.incomplete_details.reason if parsed.incomplete_details else None) == (
        "max_output_tokens" if length else None
    )


def test_answer_items_in_order_with_text_kept_beside_tool_calls() -> None:
    answer = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "User wants weather.",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }
    response = responses_answer(answer, "gpt-4o-mini", REQUEST)
    Response.model_validate(response)
    assert response["output"] == [
        {"id": "rs_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "User wants weather."}]},
        {
            "id": "msg_0",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []}],
        },
        {
            "id": "fc_0",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_9",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
        },
    ]
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 15,
    }


def test_answer_echoes_the_request() -> None:
    request = {
        **REQUEST,
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "top_p": 0.7,
        "max_output_tokens": 99,
        "reasoning": {"effort": "low", "summary": "auto"},
        "metadata": {"a": "b"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": False}},
    }
    answer = {"choices": [{"message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}]}
    response = responses_answer(answer, "gpt-4o-mini", request, response_id="resp_fixed", created_at=123)
    parsed = Response.model_validate(response)
    assert (parsed.id, parsed.created_at, parsed.instructions, parsed.temperature, parsed.top_p) == (
        "resp_fixed",
        123,
        "Be brief.",
        0.5,
        0.7,
    )
    assert response["tools"] == REQUEST["tools"] and response["tool_choice"] == request["tool_choice"]
    assert (
        response["parallel_tool_calls"] is False
        and response["max_output_tokens"] == 99
        and response["metadata"] == {"a": "b"}
    )
    assert response["reasoning"] == {"effort": "low", "summary": "auto"} and response["text"] == request["text"]
    assert response["store"] is False and response["previous_response_id"] is None
    assert response["usage"]["total_tokens"] == 0  # no usage from the upstream: zeros, as Ollama answers
    bare = Response.model_validate(responses_answer(answer, "m", {"model": "m", "input": "x"}))
    assert (bare.tools, bare.tool_choice, bare.parallel_tool_calls, bare.temperature, bare.top_p) == (
        [],
        "auto",
        True,
        1.0,
        1.0,
    )
    assert bare.text is not None and bare.text.format is not None and bare.text.format.type == "text"


def test_refusal_and_empty_answers() -> None:
    refusal = responses_answer(
        {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."}, "finish_reason": "stop"}]},
        "m",
        {},
    )
    assert refusal["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
    empty = responses_answer(
        {"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]}, "m", {}
    )
    assert empty["output"][0]["content"][0]["text"] == "" and Response.model_validate(empty).output_text == ""


def test_length_marks_the_cut_item_incomplete() -> None:
    answer = recording("chat/max-tokens-finish-length")["response"]["body"]
    response = responses_answer(answer, "m", REQUEST)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][-1]["status"] == "incomplete" and response["completed_at"] is None
    llama = json.loads((FIXTURES / "llama-server" / "chat-tools-length.json").read_text())["response"]["body"]
    cut = Response.model_validate(responses_answer(llama, "m", REQUEST))
    assert [(o.type, o.status) for o in cut.output] == [("function_call", "incomplete")]


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"error": {"message": "boom"}},
        {"error": "boom"},
        {"choices": []},
        {"choices": [{}]},
        {"choices": "x"},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "ten"}},
        {"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": True}},
        {"choices": [{"message": {"content": "x"}}], "usage": "lots"},
        [],
        "text",
        None,
    ],
)
def test_answers_that_are_not_chat_completions_are_bad_gateway(answer: Any) -> None:
    with pytest.raises(ResponsesError) as info:
        responses_answer(answer, "m", {})
    assert info.value.status == 502 and info.value.body()["error"]["type"] == "api_error"


def test_upstream_error_in_a_200_body_names_its_message() -> None:
    with pytest.raises(ResponsesError) as info:
        responses_answer({"error": {"message": "model overloaded", "type": "server_error"}}, "m", {})
    assert "model overloaded" in info.value.message


def test_sdk_reads_a_converted_answer() -> None:
    answer = recording("chat/tool-call-single")["response"]["body"]
    handler = serve_bytes(json.dumps(responses_answer(answer, "gpt-4o-mini", REQUEST)).encode(), "application/json")
    result = sdk_client(handler).responses.create(model="gpt-4o-mini", input="hi", tools=REQUEST["tools"])  # type: ignore[arg-type]
    call = next(o for o in result.output if o.type == "function_call")
    assert call.call_id == answer["choices"][0]["message"]["tool_calls"][0]["id"]
    assert json.loads(call.arguments) == json.loads(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    )


# ---------------------------------------------------------------------------------------------
# Streams


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("pieces", [1, 7, 64, 1000])
def test_every_recorded_stream_in_any_pieces(name: str, pieces: int) -> None:
    whole, _, _ = convert_stream(STREAMS[name])
    cut, _, _ = convert_stream(STREAMS[name], pieces)
    strip = lambda raw: [(n, without_clock(d["response"]) if "response" in d else d) for n, d in sse_events(raw)]  # noqa: E731
    assert strip(cut) == strip(whole)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_recorded_stream_is_valid_and_completes_to_the_whole_answer(name: str) -> None:
    raw, converter, chunks = convert_stream(STREAMS[name], 64)
    events = sse_events(raw)
    for event_name, data in events:
        assert event_name == data["type"]
        _EVENT_TYPES[data["type"]].model_validate(data)  # readable errors first
        assert type(STREAM_EVENT.validate_python(data)) is _EVENT_TYPES[data["type"]]  # then the SDK's own union
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert [n for n, _ in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1][0] in ("response.completed", "response.incomplete")
    assert all(
        n not in ("response.created", "response.in_progress", "response.completed", "response.incomplete")
        for n, _ in events[2:-1]
    )
    for n, d in events:  # never an empty delta
        if n.endswith(".delta"):
            assert d["delta"]
    final = events[-1][1]["response"]
    assert final == converter.response
    reset_ids()
    whole = responses_answer(assemble(chunks), "client-model", REQUEST, response_id="resp_test", created_at=1700000000)
    assert without_clock(final) == without_clock(whole)
    Response.model_validate(final)


def test_event_sequence_for_reasoning_then_text() -> None:
    raw, converter, _ = convert_stream(STREAMS["sse:openai-reasoning-content-handmade"])
    names = [n for n, _ in sse_events(raw)]
    assert names[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
    ]
    assert names[7:11] == [
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert converter.response is not None
    assert converter.response["output"][0]["summary"] == [{"type": "summary_text", "text": "Two plus two is four."}]


def test_event_sequence_for_tool_calls() -> None:
    raw, converter, _ = convert_stream(STREAMS["recording:tool-calls-parallel"])
    events = sse_events(raw)
    added = [d for n, d in events if n == "response.output_item.added"]
    assert [(d["output_index"], d["item"]["type"], d["item"]["status"], d["item"]["arguments"]) for d in added] == [
        (0, "function_call", "in_progress", ""),
        (1, "function_call", "in_progress", ""),
    ]
    for index in (0, 1):
        deltas = "".join(
            d["delta"]
            for n, d in events
            if n == "response.function_call_arguments.delta" and d["output_index"] == index
        )
        done = next(d for n, d in events if n == "response.function_call_arguments.done" and d["output_index"] == index)
        assert deltas == done["arguments"] == converter.response["output"][index]["arguments"]  # type: ignore[index]
        json.loads(deltas)


@pytest.mark.parametrize(
    "name",
    [
        "recording:plain-text-include-usage",
        "recording:tool-calls-parallel",
        "sse:openai-reasoning-content-handmade",
        "recording:refusal",
        "recording:max-tokens-finish-length",
    ],
)
def test_sdk_stream_accumulates_our_events(name: str) -> None:
    raw, converter, _ = convert_stream(STREAMS[name])
    client = sdk_client(serve_bytes(raw))
    with client.responses.stream(model="client-model", input="hi", tools=REQUEST["tools"]) as stream:  # type: ignore[arg-type]
        seen = [event.type for event in stream]
        if converter.response and converter.response["status"] == "completed":
            final = stream.get_final_response()
            assert final.model_dump(mode="json", exclude_none=True) == Response.model_validate(
                converter.response
            ).model_dump(mode="json", exclude_none=True)
            assert final.output_text == "".join(
                p["text"]
                for o in converter.response["output"]
                if o["type"] == "message"
                for p in o["content"]
                if p["type"] == "output_text"
            )
    assert seen[0] == "response.created" and seen[-1] in ("response.completed", "response.incomplete")
    raw_events = list(client.responses.create(model="client-model", input="hi", stream=True))
    assert [e.type for e in raw_events] == [n for n, _ in sse_events(raw)]


def test_text_deltas_arrive_as_they_come() -> None:
    stream = Driven(ResponsesStream("m", {}))
    first = stream.feed_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    assert [sse_events(e)[0][0] for e in first] == ["response.created", "response.in_progress"]
    second = stream.feed_event({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    assert [sse_events(e)[0][0] for e in second] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    third = stream.feed_event({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    assert [(n, d["delta"]) for e in third for n, d in sse_events(e)] == [("response.output_text.delta", "lo")]


def test_tool_call_is_announced_once_its_name_is_known() -> None:
    stream = Driven(ResponsesStream("m", {}))
    stream.start()
    early = stream.feed_event(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_a", "function": {"arguments": '{"a"'}}]}}]}
    )
    assert early == []
    named = stream.feed_event(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]}}]}
    )
    events = [sse_events(e)[0] for e in named]
    assert [n for n, _ in events] == ["response.output_item.added", "response.function_call_arguments.delta"]
    assert events[0][1]["item"]["call_id"] == "call_a" and events[1][1]["delta"] == '{"a":1}'
    final = sse_events(b"".join(stream.finish()))
    assert final[-1][1]["response"]["output"][0]["arguments"] == '{"a":1}'


def test_calls_without_index_or_name_still_complete() -> None:
    stream = Driven(ResponsesStream("m", {}))
    stream.feed_event(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"id": "c1", "function": {"name": "f", "arguments": "{}"}},
                            {"id": "c2", "function": {"name": "g", "arguments": '{"x":1}'}},
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    stream.feed_event(
        {"choices": [{"delta": {"tool_calls": [{"index": 5, "function": {"arguments": "{}"}}]}}]}
    )  # no name ever
    raw = b"".join(stream.finish())
    output = sse_events(raw)[-1][1]["response"]["output"]
    assert [(o["call_id"], o["name"], o["arguments"]) for o in output] == [
        ("c1", "f", "{}"),
        ("c2", "g", '{"x":1}'),
        ("call_0", "", "{}"),
    ]
    Response.model_validate(stream.response)


def test_text_after_tool_calls_opens_a_new_message() -> None:
    stream = Driven(ResponsesStream("m", {}))
    stream.feed_event({"choices": [{"delta": {"content": "a"}}]})
    stream.feed_event(
        {
            "choices": [
                {"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}}
            ]
        }
    )
    stream.feed_event({"choices": [{"delta": {"content": "b"}}]})
    stream.finish()
    assert stream.response is not None
    assert [o["type"] for o in stream.response["output"]] == ["message", "function_call", "message"]
    Response.model_validate(stream.response)


def test_reasoning_only_answer_closes_its_reasoning_before_the_empty_message() -> None:
    stream = Driven(ResponsesStream("m", {}))
    stream.feed_event({"choices": [{"delta": {"reasoning_content": "hmm"}}]})
    stream.feed_event({"choices": [{"delta": {}, "finish_reason": "length"}]})
    names = [n for e in stream.finish() for n, _ in sse_events(e)]
    assert names == [
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert stream.response is not None and [o["type"] for o in stream.response["output"]] == ["reasoning", "message"]
    assert stream.response["output"][1]["status"] == "incomplete"


def test_length_ends_with_response_incomplete() -> None:
    raw, _converter, _ = convert_stream(STREAMS["recording:max-tokens-finish-length"])
    name, data = sse_events(raw)[-1]
    assert name == "response.incomplete" and data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["response"]["output"][-1]["status"] == "incomplete"


def test_fail_after_start_sends_error_and_response_failed() -> None:
    stream = Driven(ResponsesStream("m", REQUEST))
    stream.feed_event({"choices": [{"delta": {"content": "partial"}}]})
    events = [sse_events(e)[0] for e in stream.fail("the upstream connection was lost")]
    assert [n for n, _ in events] == ["error", "response.failed"]
    assert events[0][1]["message"] == "the upstream connection was lost" and events[0][1]["code"] == "server_error"
    failed = events[1][1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {
        "code": "server_error",
        "message": "the upstream connection was lost",
    }
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "partial"
    for _, data in events:
        _EVENT_TYPES[data["type"]].model_validate(data)
    assert stream.finish() == [] and stream.fail("again") == [] and stream.feed_event({"choices": []}) == []


def test_fail_before_anything_opens_the_stream_first() -> None:
    stream = Driven(ResponsesStream("m", {}))
    names = [sse_events(e)[0][0] for e in stream.fail("boom", code="rate_limit_exceeded")]
    assert names == ["response.created", "response.in_progress", "error", "response.failed"]
    assert stream.response is not None and stream.response["error"]["code"] == "rate_limit_exceeded"


def test_an_error_chunk_mid_stream_fails_the_response() -> None:
    stream = Driven(ResponsesStream("m", {}))
    stream.feed_event({"choices": [{"delta": {"content": "x"}}]})
    events = [sse_events(e)[0] for e in stream.feed_event({"error": {"message": "overloaded", "type": "server_error"}})]
    assert [n for n, _ in events] == ["error", "response.failed"] and events[0][1][
        "message"
    ] == "upstream error: overloaded"


def test_finish_without_any_chunk_gives_an_empty_completed_response() -> None:
    stream = Driven(ResponsesStream("m", {}))
    events = [sse_events(e)[0] for e in stream.finish()]
    assert events[-1][0] == "response.completed"
    parsed = Response.model_validate(events[-1][1]["response"])
    assert parsed.output_text == "" and len(parsed.output) == 1
    assert stream.finish() == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "delta",
                    "content",
                    "tool_calls",
                    "index",
                    "id",
                    "function",
                    "name",
                    "arguments",
                    "finish_reason",
                    "usage",
                    "reasoning_content",
                    "refusal",
                    "error",
                    "prompt_tokens",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, max_size=6))
def test_odd_chunks_never_raise_nor_give_empty_pieces(chunks: list[Any]) -> None:
    stream = Driven(ResponsesStream("m", {}))
    out: list[bytes] = []
    for chunk in chunks:
        out += stream.feed_event(chunk)
    out += stream.finish()
    assert all(out)
    events = sse_events(b"".join(out))
    assert events[-1][0] in ("response.completed", "response.incomplete", "response.failed")
    for _, data in events:
        _EVENT_TYPES[data["type"]].model_validate(data)


def test_lone_surrogates_are_encoded() -> None:
    stream = Driven(ResponsesStream("m", {}))
    raw = b"".join(stream.feed_event({"choices": [{"delta": {"content": "a\ud800b"}}]}) + stream.finish())
    assert "a\ufffdb" in raw.decode()


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("status", "kind"),
    [  # Ollama's types (openai/openai.go NewError), as on every route of the OpenAI family
        (400, "invalid_request_error"),
        (401, "api_error"),
        (403, "api_error"),
        (404, "not_found_error"),
        (429, "api_error"),
        (500, "api_error"),
        (502, "api_error"),
    ],
)
def test_error_body_shape(status: int, kind: str) -> None:
    assert error_body(status, "m", "p", "c") == {"error": {"message": "m", "type": kind, "param": "p", "code": "c"}}


ERRORS = sorted(p.stem for p in (RECORDINGS / "errors").glob("*.json"))


@pytest.mark.parametrize("name", ERRORS)
def test_recorded_upstream_errors_keep_status_and_fields(name: str) -> None:
    exchange = recording(f"errors/{name}")
    body = exchange["response"]["body"]
    status, converted = upstream_error(exchange["response"]["status"], json.dumps(body).encode())
    assert status == exchange["response"]["status"]
    for key in ("type", "param", "code"):
        assert converted["error"][key] == body["error"][key]
    said = converted["error"]["message"]
    if status in (401, 403):  # the proxy's key, not the client's (as on every route)
        assert said == f"the upstream rejected the API key ({status}): {body['error']['message']}"
    else:
        assert said == body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html><title>502 Bad Gateway</title></html>", "502 Bad Gateway"),
        (b"upstream   timed out", "upstream timed out"),
        (b"", "the upstream answered 503 Service Unavailable"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"error": "model is loading"}', "model is loading"),
        ({"error": {"message": "x", "code": 42}}, "x"),
    ],
)
def test_other_upstream_errors_become_messages(body: Any, message: str) -> None:
    status, converted = upstream_error(503, body, "Service Unavailable")
    assert status == 503 and converted["error"]["message"] == message and converted["error"]["type"] == "api_error"


def test_upstream_error_with_a_success_status_is_bad_gateway() -> None:
    assert upstream_error(200, b'{"error": {"message": "x"}}')[0] == 502


def test_sdk_raises_the_right_exception_for_our_errors() -> None:
    error = refused({"model": "m", "input": "x", "previous_response_id": "resp_1"})
    client = sdk_client(serve_bytes(json.dumps(error.body()).encode(), "application/json", error.status))
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input="x", previous_response_id="resp_1")
    assert "stateless" in str(info.value) and info.value.param == "previous_response_id"


# ---------------------------------------------------------------------------------------------
# Codex CLI: the requests it really sends (tests/fixtures/codex/, captured from Codex CLI 0.171.0)

CODEX = json.loads((FIXTURES / "codex" / "codex-0.171.0-requests.json").read_text())


def test_codex_sequence_and_request_shape() -> None:
    assert [(r["method"], r["path"]) for r in CODEX["say_hi"]] == [
        ("GET", "/v1/models"),
        ("GET", "/api/version"),
        ("GET", "/api/tags"),
        ("POST", "/v1/responses"),
    ]
    body = CODEX["say_hi"][-1]["body"]
    assert (body["stream"], body["store"], body["include"], body["reasoning"]) == (
        True,
        False,
        ["reasoning.encrypted_content"],
        {"summary": "auto"},
    )
    assert "authorization" not in CODEX["say_hi"][-1]["headers"]


@pytest.mark.parametrize("which", ["say_hi", "tool_round_trip_second_request", "namespace_call_second_request"])
def test_codex_requests_translate(which: str) -> None:
    exchange = CODEX[which][-1] if isinstance(CODEX[which], list) else CODEX[which]
    chat, think, warnings = translated(exchange["body"], "upstream-model")
    CHAT_STREAM_PARAMS.validate_python(chat)
    assert think is None and warnings == [
        "tools[8]: the built-in web_search tool was dropped: there is no web search here"
    ]
    assert [m["role"] for m in chat["messages"][:3]] == [
        "system",
        "user",
        "user",
    ]  # Codex's two developer messages joined
    names = [t["function"]["name"] for t in chat["tools"]]
    assert "exec_command" in names and "multi_agent_v1__spawn_agent" in names
    if which != "say_hi":
        assert [m["role"] for m in chat["messages"][-2:]] == ["assistant", "tool"]
        assert chat["messages"][-2]["tool_calls"][0]["id"] == chat["messages"][-1]["tool_call_id"] == "call_abc"
    if which == "namespace_call_second_request":
        assert chat["messages"][-2]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent"


def test_an_unknown_model_is_a_404_naming_the_clients_model() -> None:
    llama = b'{"error":{"code":400,"message":"model \'gemma3:9b\' not found","type":"invalid_request_error"}}'
    status, body = upstream_error(400, llama, "Bad Request", "gemma3:9b")
    assert status == 404 and body["error"]["code"] == "model_not_found" and body["error"]["type"] == "not_found_error"
    assert body["error"]["message"].startswith("model 'gemma3:9b' not found")
    openai_404 = {
        "error": {"message": "The model `x` does not exist", "type": "invalid_request_error", "code": "model_not_found"}
    }
    assert upstream_error(404, openai_404, "", "x")[0] == 404
    assert upstream_error(400, llama, "")[0] == 400, "without the client's model name: as the upstream said"
    assert upstream_error(400, b'{"error": {"message": "bad temperature"}}', "", "x")[0] == 400
