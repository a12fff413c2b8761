"""Ollama requests to OpenAI bodies (addon/translate/request.py)."""

from __future__ import annotations

import base64
import json

import pytest

from addon.translate import request as translate
from addon.translate.upstream import think_fields
from addon.wire.ollama import ChatRequest, GenerateRequest, Options

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 16).decode()


def chat(**fields) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "stream": False, **fields})


def test_sampling_options_map_and_report() -> None:
    options = Options.model_validate(
        {"temperature": 0.3, "num_predict": 10, "seed": 7, "stop": "END", "top_k": 4, "num_ctx": 8}
    )
    body, extra, warnings = translate.sampling_options(options, passthrough=False)
    assert body == {"temperature": 0.3, "max_tokens": 10, "seed": 7, "stop": ["END"]} and extra == {}
    assert len(warnings) == 1 and "num_ctx, top_k" in warnings[0]
    body, extra, warnings = translate.sampling_options(options, passthrough=True)
    assert extra == {"top_k": 4} and "num_ctx" in warnings[0] and "top_k" not in warnings[0]


def test_unlimited_and_random_values_send_nothing() -> None:
    body, extra, _ = translate.sampling_options(Options.model_validate({"num_predict": -1, "seed": -1}), False)
    assert body == {} and extra == {}


def test_only_what_the_client_set_goes_upstream() -> None:
    body = translate.chat_request(chat(messages=[{"role": "user", "content": "hi"}]), "m").body
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_stream_asks_for_usage() -> None:
    body = translate.chat_request(chat(stream=True, messages=[]), "m").body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_formats() -> None:
    assert translate.response_format("json") == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert translate.response_format(schema)["json_schema"]["schema"] == schema
    assert translate.response_format("") is None and translate.response_format(None) is None


def test_think_levels() -> None:
    assert think_fields(True, "reasoning_effort") == ("medium", {})
    assert think_fields("high", "reasoning_effort") == ("high", {})
    assert think_fields("max", "reasoning_effort") == ("high", {})
    assert think_fields(False, "reasoning_effort") == (None, {})
    assert think_fields(None, "reasoning_effort") == (None, {})


def test_fields_openai_lacks_go_last_in_the_wire_body() -> None:
    request = chat(messages=[{"role": "user", "content": "hi"}], think=True, options={"top_k": 3, "temperature": 0})
    translation = translate.chat_request(request, "m", passthrough=True)
    assert translation.think is True and translation.think_soft is False, "applied after translation"
    translation.extra.update(think_fields(translation.think, "chat_template_kwargs")[1])
    assert "top_k" not in translation.body and "chat_template_kwargs" not in translation.body
    assert list(translation.wire_body())[-2:] == ["top_k", "chat_template_kwargs"]
    assert translation.wire_body()["chat_template_kwargs"] == {"enable_thinking": True}


def test_images_become_data_urls_with_sniffed_types() -> None:
    request = chat(messages=[{"role": "user", "content": "what is it", "images": [PNG, JPEG]}])
    content = translate.chat_request(request, "m").body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "what is it"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[2]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    for bad in ("not base64!", base64.b64encode(b"plain text").decode()):
        with pytest.raises(translate.TranslationError):
            translate.chat_request(chat(messages=[{"role": "user", "content": "", "images": [bad]}]), "m")


def test_tool_conversation_keeps_ids_matched() -> None:
    request = chat(
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                    {"id": "call_given", "function": {"name": "time", "arguments": {}}},
                ],
            },
            {"role": "tool", "tool_name": "time", "content": "noon"},
            {"role": "tool", "tool_name": "weather", "content": "sunny"},
        ],
    )
    messages = translate.chat_request(request, "m").body["messages"]
    calls = messages[1]["tool_calls"]
    assert messages[1]["content"] is None
    assert calls[0]["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert messages[2]["tool_call_id"] == "call_given"
    assert messages[3]["tool_call_id"] == calls[0]["id"]


def test_generate_routes() -> None:
    plain = translate.generate_request(
        GenerateRequest.model_validate({"model": "m", "prompt": "p", "system": "s", "stream": False}), "m"
    )
    assert plain.route == "chat/completions"
    assert plain.body["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}]
    raw = translate.generate_request(
        GenerateRequest.model_validate({"model": "m", "prompt": "p", "raw": True, "stream": False}), "m"
    )
    assert raw.route == "completions" and raw.body["prompt"] == "p"
    fim = translate.generate_request(
        GenerateRequest.model_validate({"model": "m", "prompt": "def f(", "suffix": "):", "stream": False}), "m"
    )
    assert fim.route == "completions" and fim.body["suffix"] == "):"
    with pytest.raises(translate.TranslationError, match="raw mode"):
        translate.generate_request(
            GenerateRequest.model_validate({"model": "m", "prompt": "p", "raw": True, "system": "s"}), "m"
        )
    ignored = translate.generate_request(
        GenerateRequest.model_validate({"model": "m", "prompt": "p", "context": [1, 2], "template": "{{ .Prompt }}"}),
        "m",
    )
    assert len(ignored.warnings) == 2


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize(
    ("style", "think", "expected"),
    [
        ("reasoning_effort", "high", {"reasoning_effort": "high"}),
        ("reasoning_effort", False, {}),
        ("chat_template_kwargs", True, {"chat_template_kwargs": {"enable_thinking": True}}),
        ("chat_template_kwargs", "low", {"chat_template_kwargs": {"enable_thinking": True}}),
        ("chat_template_kwargs", False, {"chat_template_kwargs": {"enable_thinking": False}}),
        ("chat_template_kwargs", None, {}),
        ("none", "high", {}),
    ],
)
def test_think_styles(style: str, think, expected: dict) -> None:
    effort, extra = think_fields(think, style)
    assert {**({"reasoning_effort": effort} if effort else {}), **extra} == expected


def test_only_strict_compatible_schemas_are_sent_strict() -> None:
    closed = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"$ref": "#/$defs/B"}}},
        "required": ["a", "b"],
        "additionalProperties": False,
        "$defs": {
            "B": {
                "type": "object",
                "properties": {"c": {"type": "integer"}},
                "required": ["c"],
                "additionalProperties": False,
            }
        },
    }
    assert translate.response_format(closed)["json_schema"]["strict"] is True
    open_nested = json.loads(json.dumps(closed))
    del open_nested["$defs"]["B"]["additionalProperties"]
    assert "strict" not in translate.response_format(open_nested)["json_schema"]
    optional = {**closed, "required": ["a"]}
    assert "strict" not in translate.response_format(optional)["json_schema"]
    assert "strict" not in translate.response_format({"type": "array", "items": {"type": "string"}})["json_schema"]
