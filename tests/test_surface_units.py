"""Units of the Ollama surface: streamed tool-call accumulation, streamed logprobs, think styles,
strict schemas, the /v1 stream renamer, embeddings conversion, discovery answers, routing."""

from __future__ import annotations

import json
import math
import time

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from addon import discovery, embeddings, translate
from addon.catalog import Catalog, infer
from addon.openai_routes import INCOMPLETE_EVENT, SSERelay
from addon.proxy import OllamaProxy, find_route
from test_stream import STREAMS, convert, event
from upstream import recording

# ---------------------------------------------------------------------------------------------
# Streamed tool calls


def expected_calls(body: str) -> list[dict]:
    """The calls of a recorded stream, gathered independently of the converter: fragments joined by index."""
    drafts: dict[int, dict] = {}
    for line in body.splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices") or ():
            for fragment in (choice.get("delta") or {}).get("tool_calls") or ():
                draft = drafts.setdefault(fragment["index"], {"id": None, "name": "", "arguments": ""})
                draft["id"] = draft["id"] or fragment.get("id")
                draft["name"] += (fragment.get("function") or {}).get("name") or ""
                draft["arguments"] += (fragment.get("function") or {}).get("arguments") or ""
    return [
        {"id": d["id"], "function": {"index": position, "name": d["name"], "arguments": json.loads(d["arguments"])}}
        for position, (_, d) in enumerate(sorted(drafts.items()))
    ]


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("pieces", [1, 7, 64, None])
def test_streamed_tool_calls_of_every_recording(name: str, pieces: int | None) -> None:
    body = recording(f"chat-stream/{name}")["response"]["body"]
    chunks = convert(body.encode(), pieces)
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    assert calls == expected_calls(body)
    carrying = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(carrying) <= 1 and all(not c["done"] for c in carrying), "all calls whole, in one chunk before the done chunk"


def test_the_tool_call_recordings_are_covered() -> None:
    with_calls = [n for n in STREAMS if expected_calls(recording(f"chat-stream/{n}")["response"]["body"])]
    assert sorted(with_calls) == ["tool-call-fragments", "tool-call-fragments-role-in-first-tool-chunk", "tool-calls-parallel"]


def test_interleaved_parallel_fragments_and_late_ids() -> None:
    body = (
        event({"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": '{"y":'}}]})
        + event({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "a", "arguments": '{"x"'}}]})
        + event({"tool_calls": [{"index": 1, "id": "call_b", "function": {"arguments": " 2}"}}]})
        + event({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
        + event({}, "tool_calls")
    )  # no [DONE]: the finish reason is enough
    chunks = convert(body, 5)
    assert chunks[0]["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"index": 0, "name": "a", "arguments": {"x": 1}}},
        {"id": "call_b", "function": {"index": 1, "name": "b", "arguments": {"y": 2}}},
    ]
    assert chunks[-1]["done"] and chunks[-1]["done_reason"] == "stop"


def test_calls_without_arguments_or_with_broken_ones() -> None:
    body = (
        event({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "now", "arguments": ""}}]})
        + event({"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "f", "arguments": "[1, 2]"}}]}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    calls = convert(body)[0]["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{}, {}]


def test_generate_shape_carries_tool_calls_too() -> None:
    body = event({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f", "arguments": "{}"}}]}, "tool_calls")
    chunks = convert(body, shape="generate")
    assert chunks[0]["tool_calls"][0]["function"]["name"] == "f" and "message" not in chunks[0]


# ---------------------------------------------------------------------------------------------
# Streamed logprobs


def test_streamed_logprobs_ride_on_their_chunks() -> None:
    item = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[' + json.dumps(item).encode() + b"]}}]}\n\n"
        + b'data: {"choices":[{"index":0,"delta":{"content":""},"logprobs":{"content":[' + json.dumps({**item, "token": " "}).encode() + b"]}}]}\n\n"
        + event({}, "stop")
    )
    chunks = convert(body, 3)
    assert chunks[0]["logprobs"] == [item] and chunks[0]["message"]["content"] == "a"
    assert chunks[1]["logprobs"][0]["token"] == " ", "a chunk with only logprobs is still sent"
    assert "logprobs" not in chunks[-1]


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
    body = {"model": "m", **translate.reasoning_fields(think)}
    translate.apply_think_style(body, think, style)
    assert body == {"model": "m", **expected}


def test_only_strict_compatible_schemas_are_sent_strict() -> None:
    closed = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"$ref": "#/$defs/B"}}},
              "required": ["a", "b"], "additionalProperties": False,
              "$defs": {"B": {"type": "object", "properties": {"c": {"type": "integer"}}, "required": ["c"], "additionalProperties": False}}}
    assert translate.response_format(closed)["json_schema"]["strict"] is True
    open_nested = json.loads(json.dumps(closed))
    del open_nested["$defs"]["B"]["additionalProperties"]
    assert "strict" not in translate.response_format(open_nested)["json_schema"]
    optional = {**closed, "required": ["a"]}
    assert "strict" not in translate.response_format(optional)["json_schema"]
    assert "strict" not in translate.response_format({"type": "array", "items": {"type": "string"}})["json_schema"]


# ---------------------------------------------------------------------------------------------
# /v1 streams: the model renamed event by event


@pytest.mark.parametrize("pieces", [1, 7, 64, 100000])
def test_model_renamer_keeps_everything_but_the_model(pieces: int) -> None:
    body = recording("chat-stream/tool-calls-parallel")["response"]["body"].encode()
    renamer = SSERelay("llama3.2")
    out: list[bytes] = []
    for start in range(0, len(body), pieces):
        produced = renamer(body[start : start + pieces])
        assert b"" not in produced
        out += produced
    out += renamer(b"")
    text = b"".join(out).decode()
    original = [json.loads(l[6:]) for l in body.decode().splitlines() if l.startswith("data: {")]
    renamed = [json.loads(l[6:]) for l in text.splitlines() if l.startswith("data: {")]
    assert renamed == [{**e, "model": "llama3.2"} for e in original]
    assert text.endswith("data: [DONE]\n\n") and text.count("\n\n") == body.decode().count("\n\n")


def test_model_renamer_passes_what_it_cannot_parse() -> None:
    renamer = SSERelay("x")
    assert renamer(b'data: {"model": broken\n\n') == [b'data: {"model": broken\n\n']
    assert renamer(b"data: [DONE]") == [] and renamer(b"") == [b"data: [DONE]"]


@pytest.mark.parametrize("model", [None, "llama3.2"])
@pytest.mark.parametrize("pieces", [1, 5, 100000])
def test_a_v1_stream_without_done_ends_in_an_error_event(model: str | None, pieces: int) -> None:
    whole = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    cut = whole[: whole.index(b"data: [DONE]")]
    for body, complete in ((whole, True), (cut, False)):
        relay = SSERelay(model)
        out = [p for start in range(0, len(body), pieces) for p in relay(body[start : start + pieces])] + relay(b"")
        assert b"" not in out
        text = b"".join(out)
        assert text.endswith(INCOMPLETE_EVENT) is not complete
        if model is None:
            assert text == body + (b"" if complete else INCOMPLETE_EVENT)


# ---------------------------------------------------------------------------------------------
# Embeddings


def test_embeddings_conversion() -> None:
    parsed = {"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0, 12.0]}], "usage": {"prompt_tokens": 9}}
    clock = translate.Clock(time.time_ns())
    answer = embeddings.convert(parsed, {"shape": "embed", "model": "e", "dimensions": 2}, clock)
    assert answer["embeddings"] == [pytest.approx([0.6, 0.8]), [0.0, 1.0]]
    assert answer["prompt_eval_count"] == 9 and answer["model"] == "e" and answer["load_duration"] == 0
    legacy = embeddings.convert(parsed, {"shape": "embeddings", "model": "e"}, clock)
    assert legacy == {"embedding": [3.0, 4.0, 12.0]}


def test_base64_embeddings_are_decoded() -> None:
    exchange = recording("embeddings/single-input-base64")["response"]["body"]
    values = embeddings.vector(exchange["data"][0]["embedding"])
    assert len(values) == 1536 and math.isclose(math.fsum(v * v for v in values), 1.0, rel_tol=1e-4)
    assert embeddings.normalized([0.0, 0.0], None) == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Discovery answers and routing


def test_show_answer_has_what_clients_read() -> None:
    model = Catalog.parse({"models": {"coder": {"upstream": "qwen2.5-coder", "context_length": 32768}}}).get("coder")
    directory = type("D", (), {"loaded_at": 1_700_000_000.0})()
    answer = discovery.show_answer(model, "coder", directory, copilot=False)  # type: ignore[arg-type]
    assert answer["model_info"] == {"general.architecture": "qwen", "general.basename": "qwen2.5-coder", "qwen.context_length": 32768}
    assert "insert" in answer["capabilities"] and ".Suffix" in answer["template"], "Continue detects FIM by .Suffix"
    assert answer["parameters"].split() == ["num_ctx", "32768"] and answer["modified_at"] == "2023-11-14T22:13:20Z"
    assert discovery.show_answer(infer("gpt-4o"), "gpt4", directory, copilot=True)["model_info"]["general.basename"] == "gpt4"  # type: ignore[arg-type]
    assert ".Suffix" not in discovery.show_answer(infer("gpt-4o"), "x", directory, copilot=False)["template"]  # type: ignore[arg-type]


def test_prefix_routes() -> None:
    assert find_route("/api/blobs/sha256:00") is not None and find_route("/api/blobs/") is None
    assert find_route("/v1/models/gpt-4o") is not None and find_route("/v1/models") is not None
    assert find_route("/v1/nothing") is None


@pytest.fixture
def addon(tmp_path):
    catalog = tmp_path / "models.toml"
    catalog.write_text('[models."llama3.2"]\nupstream = "gpt-4o-mini"\n[models."e"]\nupstream = "text-embedding-3-small"\n')
    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="https://api.example.com/v1", openai_api_key="sk-unit",
                       model_catalog=str(catalog), list_upstream_models=False)
        yield proxy


def flow_for(path: str, body: dict | None = None, method: str = "POST") -> http.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(), host="127.0.0.1", port=11434,
                                       headers=http.Headers(content_type="application/json"),
                                       content=json.dumps(body).encode() if body is not None else b""))
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:11434")
    return flow


async def test_async_routes_answer_through_the_hook(addon) -> None:
    flow = flow_for("/api/tags", method="GET")
    await addon.request(flow)
    assert [m["name"] for m in json.loads(flow.response.content)["models"]] == ["llama3.2:latest", "e:latest"]
    flow = flow_for("/api/show", {"model": "llama3.2"})
    await addon.request(flow)
    assert json.loads(flow.response.content)["model_info"]["general.architecture"] == "gpt"


def test_embed_is_rewritten_and_answered(addon) -> None:
    flow = flow_for("/api/embed", {"model": "e", "input": "hi", "dimensions": 2})
    addon.request(flow)
    assert flow.request.url == "https://api.example.com/v1/embeddings"
    assert json.loads(flow.request.content) == {"model": "text-embedding-3-small", "input": ["hi"], "encoding_format": "float", "dimensions": 2}
    assert flow.request.headers["authorization"] == "Bearer sk-unit"
    flow.response = tutils.tresp(headers=http.Headers(content_type="application/json"),
                                 content=json.dumps({"data": [{"index": 0, "embedding": [3.0, 4.0]}], "usage": {"prompt_tokens": 1}}).encode())
    addon.responseheaders(flow)
    addon.response(flow)
    answer = json.loads(flow.response.content)
    assert answer["model"] == "e" and answer["embeddings"] == [pytest.approx([0.6, 0.8])]
    assert flow.request.headers["authorization"] == "Bearer [redacted]"
    assert "POST /api/embed e → /v1/embeddings text-embedding-3-small · 200" in flow.comment


def test_v1_chat_is_forwarded_with_the_alias(addon) -> None:
    flow = flow_for("/v1/chat/completions", {"model": "llama3.2", "messages": [], "stream": True})
    addon.request(flow)
    assert flow.request.url == "https://api.example.com/v1/chat/completions"
    assert json.loads(flow.request.content)["model"] == "gpt-4o-mini"
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream", content_length="99"), content=None)
    addon.responseheaders(flow)
    assert isinstance(flow.response.stream, SSERelay) and flow.response.stream.model == "llama3.2"
    assert "content-length" not in flow.response.headers and flow.response.headers["transfer-encoding"] == "chunked"
    bad = flow_for("/v1/chat/completions", {"messages": []})
    addon.request(bad)
    assert bad.response.status_code == 400 and json.loads(bad.response.content)["error"]["message"] == "model is required"


def test_sse_relay_holds_back_a_partial_line_so_the_error_event_stands_alone() -> None:
    relay = SSERelay(None)
    sent = b"".join(relay(b'data: {"a":1}\n\ndata: {"par'))
    assert sent == b'data: {"a":1}\n\n'
    end = relay.close_with_error("the upstream connection broke off")
    assert b'{"par' not in end and relay.done
    events = [json.loads(line[5:]) for line in (sent + end).split(b"\n") if line.startswith(b"data:")]
    assert events == [{"a": 1}, {"error": {"message": "the upstream connection broke off", "type": "upstream_error",
                                           "param": None, "code": None}}]
