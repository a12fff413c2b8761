"""Pure translation functions: Ollama requests to OpenAI bodies, OpenAI answers back to Ollama."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from addon import translate
from addon.models import ChatRequest, GenerateRequest, Options
from upstream import recording

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 16).decode()


def chat(**fields) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "stream": False, **fields})


def test_rfc3339_timestamps() -> None:
    stamp = translate.rfc3339_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6}[1-9]?)?Z", stamp)
    assert not re.search(r"\.\d*0Z$", stamp), "no trailing zeros, as Go writes them"


def test_sampling_options_map_and_report() -> None:
    options = Options.model_validate({"temperature": 0.3, "num_predict": 10, "seed": 7, "stop": "END", "top_k": 4, "num_ctx": 8})
    body, warnings = translate.sampling_options(options, passthrough=False)
    assert body == {"temperature": 0.3, "max_tokens": 10, "seed": 7, "stop": ["END"]}
    assert len(warnings) == 1 and "num_ctx, top_k" in warnings[0]
    body, warnings = translate.sampling_options(options, passthrough=True)
    assert body["top_k"] == 4 and "num_ctx" in warnings[0] and "top_k" not in warnings[0]


def test_unlimited_and_random_values_send_nothing() -> None:
    body, _ = translate.sampling_options(Options.model_validate({"num_predict": -1, "seed": -1}), False)
    assert body == {}


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
    assert translate.reasoning_fields(True) == {"reasoning_effort": "medium"}
    assert translate.reasoning_fields("high") == {"reasoning_effort": "high"}
    assert translate.reasoning_fields(False) == {} and translate.reasoning_fields(None) == {}


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
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                {"id": "call_given", "function": {"name": "time", "arguments": {}}},
            ]},
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
    plain = translate.generate_request(GenerateRequest.model_validate({"model": "m", "prompt": "p", "system": "s", "stream": False}), "m")
    assert plain.route == "chat/completions"
    assert plain.body["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}]
    raw = translate.generate_request(GenerateRequest.model_validate({"model": "m", "prompt": "p", "raw": True, "stream": False}), "m")
    assert raw.route == "completions" and raw.body["prompt"] == "p"
    fim = translate.generate_request(GenerateRequest.model_validate({"model": "m", "prompt": "def f(", "suffix": "):", "stream": False}), "m")
    assert fim.route == "completions" and fim.body["suffix"] == "):"
    with pytest.raises(translate.TranslationError, match="raw mode"):
        translate.generate_request(GenerateRequest.model_validate({"model": "m", "prompt": "p", "raw": True, "system": "s"}), "m")
    ignored = translate.generate_request(GenerateRequest.model_validate({"model": "m", "prompt": "p", "context": [1, 2], "template": "{{ .Prompt }}"}), "m")
    assert len(ignored.warnings) == 2


@pytest.mark.parametrize("name", ["plain-text", "multi-turn", "stop-sequence", "system-message"])
def test_chat_answers_from_recordings(name: str) -> None:
    body = recording(f"chat/{name}")["response"]["body"]
    answer, warnings = translate.chat_response(body, "llama3.2", translate.Clock(time.time_ns()))
    assert answer["model"] == "llama3.2" and answer["done"] is True and not warnings
    assert answer["message"] == {"role": "assistant", "content": body["choices"][0]["message"]["content"]}
    assert answer["prompt_eval_count"] == body["usage"]["prompt_tokens"]
    assert answer["eval_count"] == body["usage"]["completion_tokens"]


def test_chat_answer_tool_calls_refusal_and_length() -> None:
    clock = translate.Clock(time.time_ns())
    tools, _ = translate.chat_response(recording("chat/tool-calls-parallel")["response"]["body"], "m", clock)
    assert [c["function"]["index"] for c in tools["message"]["tool_calls"]] == [0, 1]
    assert all(isinstance(c["function"]["arguments"], dict) for c in tools["message"]["tool_calls"])
    assert tools["done_reason"] == "stop"
    refusal, _ = translate.chat_response(recording("chat/refusal")["response"]["body"], "m", clock)
    assert refusal["message"]["content"]
    length, _ = translate.chat_response(recording("chat/max-tokens-finish-length")["response"]["body"], "m", clock)
    assert length["done_reason"] == "length"


def test_generate_answer_from_legacy_completion() -> None:
    body = recording("completions/legacy-non-stream")["response"]["body"]
    answer, _ = translate.generate_response(body, "m", translate.Clock(time.time_ns()))
    assert answer["response"] == body["choices"][0]["text"] and answer["done"] is True


def test_generate_answer_carries_an_empty_context_unless_raw() -> None:
    """Ollama's generate answer has `context` (token ids), except for raw prompts: ours is always empty."""
    body = recording("chat/plain-text")["response"]["body"]
    clock = translate.Clock(time.time_ns())
    answer, _ = translate.generate_response(body, "m", clock)
    assert answer["context"] == []
    assert list(answer)[:7] == ["model", "created_at", "response", "done", "done_reason", "context", "total_duration"], "Ollama's order"
    raw, _ = translate.generate_response(body, "m", clock, raw=True)
    assert "context" not in raw and {k: v for k, v in answer.items() if k != "context"}.keys() == raw.keys()
    chat, _ = translate.chat_response(body, "m", clock)
    assert "context" not in chat


def test_llama_cpp_timings_are_used() -> None:
    clock = translate.Clock(time.time_ns() - 5_000_000_000)
    metrics = translate.metrics(clock, {"prompt_tokens": 3, "completion_tokens": 4}, {"prompt_ms": 1.5, "predicted_ms": 20.0})
    assert metrics["prompt_eval_duration"] == 1_500_000 and metrics["eval_duration"] == 20_000_000
    assert metrics["total_duration"] >= 5_000_000_000


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("errors/404-model-not-found", 404, "model 'mine' not found"),
        ("errors/401-invalid-api-key", 401, "the upstream rejected the API key (401): Incorrect API key provided"),
        ("errors/429-rate-limit-requests-per-min", 429, "Rate limit reached"),
    ],
)
def test_upstream_errors(name: str, status: int, expected: str) -> None:
    exchange = recording(name)
    got_status, message = translate.upstream_error(exchange["response"]["status"], json.dumps(exchange["response"]["body"]).encode(), "", "mine")
    assert got_status == status and message.startswith(expected)


def test_llama_server_unknown_model_and_odd_bodies() -> None:
    assert translate.upstream_error(400, b'{"error":{"code":400,"message":"model \'x\' not found","type":"invalid_request_error"}}', "", "x") == (404, "model 'x' not found")
    assert translate.upstream_error(500, b"", "Internal Server Error", "m") == (500, "upstream answered 500 Internal Server Error")
    assert translate.upstream_error(503, b"<html><title>Service Unavailable</title></html>", "", "m")[1] == "Service Unavailable"
    assert translate.upstream_error(422, b'{"detail": [{"msg": "bad"}]}', "", "m")[1] == '[{"msg": "bad"}]'


def test_parse_arguments() -> None:
    assert translate.parse_arguments('{"a": 1}') == ({"a": 1}, None)
    assert translate.parse_arguments("") == ({}, None)
    value, warning = translate.parse_arguments("[1]")
    assert value == {} and warning
