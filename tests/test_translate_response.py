"""OpenAI answers and errors back to Ollama's (addon/translate/response.py)."""

from __future__ import annotations

import json
import re
import time

import pytest

from addon.translate import chunks
from addon.translate import response as translate
from harness.upstream import recording


def test_rfc3339_timestamps() -> None:
    stamp = translate.rfc3339_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6}[1-9]?)?Z", stamp)
    assert not re.search(r"\.\d*0Z$", stamp), "no trailing zeros, as Go writes them"


@pytest.mark.parametrize("micro", [0, 1, 10, 100, 1000, 10000, 100000, 120000, 123400, 123456, 999999, 5000, 7])
def test_rfc3339_fractions(micro: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: (1733571234 * 1_000_000 + micro) * 1000 + 999)
    fraction = f"{micro:06d}".rstrip("0")
    assert translate.rfc3339_now() == "2024-12-07T11:33:54" + (f".{fraction}" if fraction else "") + "Z"


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
    assert list(answer)[:7] == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
        "total_duration",
    ], "Ollama's order"
    raw, _ = translate.generate_response(body, "m", clock, raw=True)
    assert "context" not in raw and {k: v for k, v in answer.items() if k != "context"}.keys() == raw.keys()
    chat, _ = translate.chat_response(body, "m", clock)
    assert "context" not in chat


def test_llama_cpp_timings_are_used() -> None:
    clock = translate.Clock(time.time_ns() - 5_000_000_000)
    metrics = translate.metrics(
        clock, {"prompt_tokens": 3, "completion_tokens": 4}, {"prompt_ms": 1.5, "predicted_ms": 20.0}
    )
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
    got_status, message = translate.upstream_error(
        exchange["response"]["status"], json.dumps(exchange["response"]["body"]).encode(), "", "mine"
    )
    assert got_status == status and message.startswith(expected)


def test_llama_server_unknown_model_and_odd_bodies() -> None:
    assert translate.upstream_error(
        400, b'{"error":{"code":400,"message":"model \'x\' not found","type":"invalid_request_error"}}', "", "x"
    ) == (404, "model 'x' not found")
    assert translate.upstream_error(500, b"", "Internal Server Error", "m") == (
        500,
        "upstream answered 500 Internal Server Error",
    )
    assert (
        translate.upstream_error(503, b"<html><title>Service Unavailable</title></html>", "", "m")[1]
        == "Service Unavailable"
    )
    assert translate.upstream_error(422, b'{"detail": [{"msg": "bad"}]}', "", "m")[1] == '[{"msg": "bad"}]'


def test_parse_arguments() -> None:
    assert chunks.parse_arguments('{"a": 1}') == ({"a": 1}, None)
    assert chunks.parse_arguments("") == ({}, None)
    value, warning = chunks.parse_arguments("[1]")
    assert value == {} and warning
