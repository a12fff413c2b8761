"""The /v1 routes (addon/endpoints/openai.py): streams relayed with the model renamed event by event."""

from __future__ import annotations

import json

import pytest

from addon.endpoints.openai import INCOMPLETE_EVENT, SSERelay
from harness.upstream import recording


def relay(converter: SSERelay, data: bytes) -> list[bytes]:
    """What the proxy's Relay hands mitmproxy: the piece, or nothing (never an empty piece)."""
    out = converter.feed(data) if data else converter.finish()
    return [out] if out else []


@pytest.mark.parametrize("pieces", [1, 7, 64, 100000])
def test_model_renamer_keeps_everything_but_the_model(pieces: int) -> None:
    body = recording("chat-stream/tool-calls-parallel")["response"]["body"].encode()
    renamer = SSERelay("llama3.2")
    out: list[bytes] = []
    for start in range(0, len(body), pieces):
        produced = relay(renamer, body[start : start + pieces])
        assert b"" not in produced
        out += produced
    out += relay(renamer, b"")
    text = b"".join(out).decode()
    original = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
    renamed = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert renamed == [{**e, "model": "llama3.2"} for e in original]
    assert text.endswith("data: [DONE]\n\n") and text.count("\n\n") == body.decode().count("\n\n")


def test_model_renamer_passes_what_it_cannot_parse() -> None:
    renamer = SSERelay("x")
    assert relay(renamer, b'data: {"model": broken\n\n') == [b'data: {"model": broken\n\n']
    assert relay(renamer, b"data: [DONE]") == [] and relay(renamer, b"") == [b"data: [DONE]"]


@pytest.mark.parametrize("model", [None, "llama3.2"])
@pytest.mark.parametrize("pieces", [1, 5, 100000])
def test_a_v1_stream_without_done_ends_in_an_error_event(model: str | None, pieces: int) -> None:
    whole = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    cut = whole[: whole.index(b"data: [DONE]")]
    for body, complete in ((whole, True), (cut, False)):
        converter = SSERelay(model)
        out = [p for start in range(0, len(body), pieces) for p in relay(converter, body[start : start + pieces])]
        out += relay(converter, b"")
        assert b"" not in out
        text = b"".join(out)
        assert text.endswith(INCOMPLETE_EVENT) is not complete
        if model is None:
            assert text == body + (b"" if complete else INCOMPLETE_EVENT)


def test_sse_relay_holds_back_a_partial_line_so_the_error_event_stands_alone() -> None:
    converter = SSERelay(None)
    sent = b"".join(relay(converter, b'data: {"a":1}\n\ndata: {"par'))
    assert sent == b'data: {"a":1}\n\n'
    end = converter.fail("the upstream connection broke off")
    assert b'{"par' not in end and converter.ended and converter.fail("again") == b""
    events = [json.loads(line[5:]) for line in (sent + end).split(b"\n") if line.startswith(b"data:")]
    assert events == [
        {"a": 1},
        {
            "error": {
                "message": "the upstream connection broke off",
                "type": "api_error",  # as Ollama types a failure mid-stream
                "param": None,
                "code": None,
            }
        },
    ]
