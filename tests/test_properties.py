"""Property-based tests (hypothesis): no input makes the translation functions, the streaming
converter or the request path raise. Whatever an upstream or a client sends, the proxy answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import taddons, tutils
from pydantic import ValidationError

from addon.exchange import Relay
from addon.proxy import OllamaProxy
from addon.translate import request as translate_request
from addon.translate import response as translate
from addon.translate.ndjson import ollama_stream
from addon.wire.ollama import ChatRequest, GenerateRequest, dumps_body
from addon.wire.sse import SSEDecoder
from harness.inproc import client_flow

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)

# Keys that matter to the code, so that generated objects often hit real branches.
KEYS = [
    "choices",
    "delta",
    "message",
    "content",
    "text",
    "finish_reason",
    "usage",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "index",
    "id",
    "error",
    "reasoning_content",
    "reasoning",
    "refusal",
    "logprobs",
    "timings",
    "prompt_tokens",
    "completion_tokens",
    "prompt_ms",
    "predicted_ms",
    "role",
    "images",
    "messages",
    "model",
    "options",
    "format",
    "think",
    "stream",
    "prompt",
    "suffix",
    "raw",
    "system",
    "tools",
    "top_logprobs",
]
shaped = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)
objects = st.dictionaries(st.sampled_from(KEYS), shaped, max_size=6)


def valid_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for piece in lines:
        assert piece.endswith(b"\n")
        for line in piece.splitlines():
            value = json.loads(line)
            assert isinstance(value, dict)
            out.append(value)
    return out


def run_converter(shape: str, pieces: list[bytes]) -> list[dict[str, Any]]:
    converter = ollama_stream(shape, "m", translate.Clock(start_ns=0))
    lines: list[bytes] = []
    for piece in pieces:
        lines.append(converter.feed(piece))
    lines.append(converter.finish())
    chunks = valid_lines([line for line in lines if line])
    assert chunks, "the converter always ends with a done or an error line"
    last = chunks[-1]
    assert last.get("done") is True or "error" in last
    assert all("error" not in c and not c.get("done") for c in chunks[:-1])
    return chunks


@SETTINGS
@given(st.sampled_from(["chat", "generate"]), st.lists(st.binary(max_size=200), max_size=12))
def test_converter_survives_arbitrary_bytes(shape: str, pieces: list[bytes]) -> None:
    run_converter(shape, pieces)


@SETTINGS
@given(
    st.sampled_from(["chat", "generate"]),
    st.lists(objects | json_values, max_size=8),
    st.booleans(),
    st.integers(1, 50),
)
def test_converter_survives_arbitrary_events(shape: str, events: list[Any], done: bool, cut: int) -> None:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n" if done else b""
    )
    run_converter(shape, [body[i : i + cut] for i in range(0, len(body), cut)])


@SETTINGS
@given(st.binary(max_size=400), st.integers(1, 64), st.integers(1, 64))
def test_the_sse_decoder_ignores_piece_boundaries(body: bytes, cut: int, other: int) -> None:
    """However a body is cut (CR, LF and CRLF line ends included), the events are the same."""

    def events(size: int) -> list:
        decoder = SSEDecoder()
        out = [e for i in range(0, len(body), size) for e in decoder.feed(body[i : i + size])]
        return out + decoder.finish()

    whole = SSEDecoder()
    assert events(cut) == events(other) == whole.feed(body) + whole.finish()


@SETTINGS
@given(st.lists(st.binary(max_size=100), max_size=8))
def test_stream_relay_never_returns_an_empty_chunk(pieces: list[bytes]) -> None:
    relay = Relay(ollama_stream("chat", "m", translate.Clock(start_ns=0)), 1000)
    sent: list[bytes] = []
    for piece in pieces:
        out = relay(piece) if piece else []
        assert all(out) and isinstance(out, list)
        sent += out
    sent += relay(b"")
    last = valid_lines(sent)[-1]  # whatever came, the answer ends with a done or an error line
    assert last.get("done") is True or "error" in last


@SETTINGS
@given(objects | st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.sampled_from(["chat", "generate"]))
def test_whole_responses_convert_or_raise_a_shape_error(body: dict[str, Any], shape: str) -> None:
    """The pure converters either convert or raise one of the errors routes.response turns into a 502."""
    convert = translate.chat_response if shape == "chat" else translate.generate_response
    try:
        answer, warnings = convert(body, "m", translate.Clock(start_ns=0))
    except (AttributeError, TypeError, KeyError, IndexError, ValueError):
        return
    json.loads(dumps_body(answer))
    assert answer["done"] is True and all(isinstance(w, str) for w in warnings)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["/api/chat", "/api/generate"]),
    st.booleans(),
    st.integers(200, 599),
    st.sampled_from(["application/json", "text/event-stream", "text/html", ""]),
    st.binary(max_size=200) | (objects | json_values).map(lambda v: json.dumps(v).encode()),
)
def test_response_hook_answers_any_upstream_answer(
    tctx, path: str, stream: bool, status: int, content_type: str, body: bytes
) -> None:
    """Whatever the upstream answers (whole, as mitmproxy hands it to `response`), the client gets Ollama JSON/NDJSON."""
    request = {
        "model": "m",
        "stream": stream,
        **({"messages": [{"role": "user", "content": "x"}]} if path == "/api/chat" else {"prompt": "x"}),
    }
    flow = client_flow(path, request)
    _addon.request(flow)
    flow.response = tutils.tresp(status_code=status, headers=http.Headers(content_type=content_type), content=body)
    _addon.responseheaders(flow)
    _addon.response(flow)
    answer = flow.response
    if answer.headers["content-type"] == "application/x-ndjson":
        assert answer.status_code == 200
        lines = valid_lines([answer.content]) if answer.content else []
        assert lines and (lines[-1].get("done") is True or "error" in lines[-1])
    else:
        parsed = json.loads(answer.content)
        assert (answer.status_code == 200) == ("error" not in parsed)


@SETTINGS
@given(
    st.integers(100, 599),
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | objects.map(lambda v: json.dumps({"error": v}).encode()),
    st.text(max_size=20),
    st.none() | st.text(max_size=10),
)
def test_upstream_errors_never_raise(status: int, body: bytes, reason: str, model: str | None) -> None:
    code, message = translate.upstream_error(status, body, reason, model)
    assert isinstance(code, int) and isinstance(message, str) and message


@SETTINGS
@given(objects, st.booleans())
def test_translating_any_valid_request_never_raises_unexpectedly(data: dict[str, Any], passthrough: bool) -> None:
    for model, translator in (
        (ChatRequest, translate_request.chat_request),
        (GenerateRequest, translate_request.generate_request),
    ):
        try:
            request = model.model_validate({"model": "m", **data})
        except ValidationError:
            continue
        try:
            translation = translator(request, "m", passthrough)
        except translate_request.TranslationError:
            continue
        json.loads(dumps_body(translation.wire_body()))


# -- the whole request path of the addon, with any body ---------------------------------------

_addon = OllamaProxy()


@pytest.fixture(scope="module")
def tctx():
    """One mitmproxy test context for all examples (contexts made per example leave log handlers behind)."""
    with taddons.context(_addon) as context:
        context.configure(_addon, openai_base_url="http://127.0.0.1:9/v1")
        yield context


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["/api/chat", "/api/generate"]),
    st.binary(max_size=300)
    | objects.map(lambda o: json.dumps(o).encode())
    | objects.map(lambda o: json.dumps({"model": "m", **o}).encode()),
)
def test_request_hook_answers_or_rewrites_any_body(tctx, path: str, body: bytes) -> None:
    flow = client_flow(path, body)
    _addon.request(flow)
    if flow.response is not None:
        assert flow.response.status_code in (200, 400, 404)
        if flow.response.status_code != 200:
            assert isinstance(json.loads(flow.response.content)["error"], str)
    else:
        assert flow.request.url.startswith("http://127.0.0.1:9/v1/")
        json.loads(flow.request.content)
