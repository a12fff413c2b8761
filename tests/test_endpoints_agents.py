"""The agents' routes through the addon's hooks (mitmproxy's test helpers): /v1/messages, count_tokens,
/v1/responses (translated and forwarded as it is), /v1/audio/transcriptions; what goes upstream, what
the client gets back, what the flow records."""

from __future__ import annotations

import json

import httpx
import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from addon import endpoints
from addon.endpoints.openai_responses import ResponsesRelay
from addon.translate.stream import ChunkStream
from harness.inproc import client_flow, configured_proxy, run_request
from harness.upstream import recording

CATALOG = """
[models."claude-sonnet-5-5"]
upstream = "gpt-4o-mini"

[models."claude-opus-5-5"]
upstream = "o4-mini"

[models."qwen3-coder"]
upstream = "Qwen/Qwen3-Coder"
capabilities = ["completion", "tools", "thinking"]
think_style = "chat_template_kwargs"
max_output_tokens = 8192

[models."whisper"]
upstream = "whisper-1"
"""
CLAUDE_CODE = {  # what Claude Code sends with every request
    "max_tokens": 32000,
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "stream": True,
    "metadata": {"user_id": "u"},
}


def make_addon(**options):
    """The addon configured with `options`, until the caller's `context.__exit__(None, None, None)`."""
    context = configured_proxy(CATALOG, **options)
    proxy, _ = context.__enter__()
    return proxy, context


@pytest.fixture
def addon():
    with configured_proxy(CATALOG) as (proxy, _):
        yield proxy


def answer(addon, flow: http.HTTPFlow, status: int, body: bytes, content_type: str = "application/json") -> None:
    """The upstream's whole answer, through the response hooks."""
    flow.response = tutils.tresp(status_code=status, headers=http.Headers(content_type=content_type), content=body)
    addon.responseheaders(flow)
    addon.response(flow)


def streamed(addon, flow: http.HTTPFlow, body: bytes) -> bytes:
    """The upstream's SSE answer, through the response hooks and the stream callable, in pieces of 7 bytes."""
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=None)
    addon.responseheaders(flow)
    relay = flow.response.stream
    out = b"".join(b"".join(relay(body[i : i + 7])) for i in range(0, len(body), 7)) + b"".join(relay(b""))
    flow.response.content = b""
    addon.response(flow)
    return out


def events(sse: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in sse.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            out.append((lines.get("event", ""), json.loads(lines["data"])))
    return out


def test_the_routes() -> None:
    assert isinstance(endpoints.find("/v1/messages").endpoint, endpoints.anthropic.Messages)
    assert isinstance(endpoints.find("/v1/messages/count_tokens").endpoint, endpoints.anthropic.CountTokens)
    assert endpoints.find("/v1/responses").methods == frozenset({"POST"})
    assert endpoints.find("/v1/audio/transcriptions") is not None


# ---------------------------------------------------------------------------------------------
# /v1/messages


def test_messages_as_claude_code_sends_them(addon) -> None:
    """Thinking only for a model that can think, max_tokens at the model's limit, no Anthropic header upstream."""
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "x", "x-api-key": "sk-ant-client"}
    body = {**CLAUDE_CODE, "model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "hi"}]}
    flow = client_flow("/v1/messages?beta=true", body, headers=headers)
    addon.requestheaders(flow)
    assert flow.request.headers["x-api-key"] == "[redacted]"
    addon.request(flow)
    assert flow.request.url == "https://api.example.com/v1/chat/completions"
    sent = json.loads(flow.request.content)
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 16384 and sent["stream"] is True
    assert "reasoning_effort" not in sent and "chat_template_kwargs" not in sent
    assert set(flow.request.headers) == {
        "host",
        "content-type",
        "content-length",
        "accept",
        "accept-encoding",
        "authorization",
    }
    assert flow.request.headers["accept"] == "text/event-stream"

    opus = client_flow("/v1/messages", {**body, "model": "claude-opus-5-5", "max_tokens": 128000})
    addon.request(opus)
    sent = json.loads(opus.request.content)
    assert sent["model"] == "o4-mini" and sent["reasoning_effort"] == "high"
    assert sent["max_completion_tokens"] == 100000 and "max_tokens" not in sent

    qwen = client_flow("/v1/messages", {**body, "model": "qwen3-coder"})
    addon.request(qwen)
    sent = json.loads(qwen.request.content)
    assert sent["chat_template_kwargs"] == {"enable_thinking": True} and sent["max_tokens"] == 8192

    explicit = client_flow(
        "/v1/messages", {**body, "thinking": {"type": "enabled", "budget_tokens": 2000}, "output_config": {}}
    )
    addon.request(explicit)
    assert json.loads(explicit.request.content)["reasoning_effort"] == "medium", "asked for explicitly: sent"


def test_system_turns_option() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "env"}],
    }
    for option, messages in (
        ("user", [{"role": "user", "content": "hi\n\nenv"}]),
        ("system", [{"role": "user", "content": "hi"}, {"role": "system", "content": "env"}]),
    ):
        proxy, tctx = make_addon(system_turns=option)
        flow = client_flow("/v1/messages", body)
        proxy.request(flow)
        assert json.loads(flow.request.content)["messages"] == messages
        tctx.__exit__(None, None, None)


def test_messages_whole_answer_error_and_record(addon) -> None:
    body = {"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    flow = client_flow("/v1/messages", body)
    addon.request(flow)
    upstream = {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    answer(addon, flow, 200, json.dumps(upstream).encode())
    message = json.loads(flow.response.content)
    assert message["model"] == "claude-sonnet-5-5" and message["content"] == [{"type": "text", "text": "hello"}]
    assert message["usage"] == {"input_tokens": 5, "output_tokens": 1} and message["stop_reason"] == "end_turn"
    assert flow.metadata["ollama"]["usage"] == {"prompt_tokens": 5, "completion_tokens": 1}
    assert "POST /v1/messages claude-sonnet-5-5 → /v1/chat/completions gpt-4o-mini · 200 · 5+1 tokens" in flow.comment

    missing = client_flow("/v1/messages", {**body, "model": "nope"})
    addon.request(missing)
    not_found = recording("errors/404-model-not-found")["response"]["body"]
    answer(addon, missing, 404, json.dumps(not_found).encode())
    error = json.loads(missing.response.content)
    assert missing.response.status_code == 404 and error["type"] == "error"
    assert error["error"]["type"] == "not_found_error" and error["error"]["message"].startswith(
        "model 'nope' not found"
    )
    assert missing.marked

    bad = client_flow("/v1/messages", {"model": "m", "messages": []})
    addon.request(bad)
    assert bad.response.status_code == 400
    assert json.loads(bad.response.content)["error"]["type"] == "invalid_request_error"


def test_messages_stream(addon) -> None:
    body = {**CLAUDE_CODE, "model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "hi"}]}
    flow = client_flow("/v1/messages", body)
    addon.request(flow)
    sse = recording("chat-stream/tool-call-fragments")["response"]["body"].encode()
    out = streamed(addon, flow, sse)
    names = [name for name, _ in events(out)]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert flow.response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert events(out)[0][1]["message"]["model"] == "claude-sonnet-5-5"
    assert flow.metadata["ollama"]["usage"]["completion_tokens"] > 0

    cut = client_flow("/v1/messages", body)
    addon.request(cut)
    out = streamed(addon, cut, sse[: sse.index(b'"finish_reason":"tool_calls"') - 200])
    assert events(out)[-1][0] == "error" and events(out)[-1][1]["error"]["type"] == "api_error"


def test_a_stream_in_one_piece_is_converted(addon) -> None:
    """Server replay hands the recorded SSE body over whole: converted in `response`."""
    body = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    flow = client_flow("/v1/messages", body)
    addon.request(flow)
    sse = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=sse)
    addon.response(flow)
    assert [n for n, _ in events(flow.response.content)][-1] == "message_stop"


def test_count_tokens_is_answered_locally(addon) -> None:
    flow = client_flow(
        "/v1/messages/count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    )
    addon.request(flow)
    assert flow.response.status_code == 200 and json.loads(flow.response.content) == {"input_tokens": 6}
    addon.response(flow)
    assert flow.comment.startswith("POST /v1/messages/count_tokens m · 200")
    bad = client_flow("/v1/messages/count_tokens", {"messages": []})
    addon.request(bad)
    assert bad.response.status_code == 400 and json.loads(bad.response.content)["type"] == "error"


def test_a_client_key_in_x_api_key() -> None:
    proxy, tctx = make_addon(ollama_api_key="client-key")
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    for headers, status in (
        ({"x-api-key": "client-key"}, None),
        ({"authorization": "Bearer client-key"}, None),
        ({"x-api-key": "wrong"}, 401),
        ({}, 401),
    ):
        flow = client_flow("/v1/messages", body, headers=headers)
        run_request(proxy, flow)
        if status is None:
            assert flow.response is None and flow.request.headers["authorization"] == "Bearer sk-unit"
            assert "x-api-key" not in flow.request.headers
        else:
            assert flow.response.status_code == 401
            assert json.loads(flow.response.content)["error"]["type"] == "authentication_error"
    tctx.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# /v1/responses


def test_responses_translated(addon) -> None:
    body = {
        "model": "claude-opus-5-5",
        "input": "hi",
        "reasoning": {"effort": "low"},
        "max_output_tokens": 500000,
        "stream": True,
    }
    flow = client_flow("/v1/responses", body)
    addon.request(flow)
    sent = json.loads(flow.request.content)
    assert flow.request.url == "https://api.example.com/v1/chat/completions"
    assert sent["model"] == "o4-mini" and sent["reasoning_effort"] == "low" and sent["max_completion_tokens"] == 100000
    sse = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    out = events(streamed(addon, flow, sse))
    assert out[0][0] == "response.created" and out[-1][0] == "response.completed"
    assert out[-1][1]["response"]["model"] == "claude-opus-5-5"
    assert flow.metadata["ollama"]["usage"]["prompt_tokens"] > 0

    plain = client_flow("/v1/responses", {"model": "claude-sonnet-5-5", "input": "hi", "reasoning": {"effort": "high"}})
    addon.request(plain)
    assert "reasoning_effort" not in json.loads(plain.request.content), "gpt-4o-mini cannot think"
    stateful = client_flow("/v1/responses", {"model": "m", "input": "hi", "previous_response_id": "resp_1"})
    addon.request(stateful)
    assert stateful.response.status_code == 400
    assert json.loads(stateful.response.content)["error"]["param"] == "previous_response_id"


def test_responses_cut_stream_fails(addon) -> None:
    flow = client_flow("/v1/responses", {"model": "m", "input": "hi", "stream": True})
    addon.request(flow)
    out = events(streamed(addon, flow, b'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'))
    assert [n for n, _ in out][-2:] == ["error", "response.failed"]
    assert out[-2][1]["error"]["message"] == "the upstream stream ended before the answer was complete"


def test_responses_passthrough() -> None:
    proxy, tctx = make_addon(responses_passthrough=True)
    flow = client_flow("/v1/responses", {"model": "claude-sonnet-5-5", "input": "hi", "store": True, "stream": True})
    proxy.request(flow)
    assert flow.request.url == "https://api.example.com/v1/responses"
    assert json.loads(flow.request.content) == {"model": "gpt-4o-mini", "input": "hi", "store": True, "stream": True}
    completed = {
        "type": "response.completed",
        "response": {"model": "gpt-4o-mini", "usage": {"input_tokens": 3, "output_tokens": 2}},
    }
    sse = (
        b'event: response.created\ndata: {"type":"response.created","response":{"model":"gpt-4o-mini"}}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n'
        b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"
    )
    out = events(streamed(proxy, flow, sse))
    assert [e["response"]["model"] for _, e in out if "response" in e] == ["claude-sonnet-5-5"] * 2
    assert out[1][1] == {"type": "response.output_text.delta", "delta": "hi"}
    assert flow.metadata["ollama"]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}

    whole = client_flow("/v1/responses", {"model": "claude-sonnet-5-5", "input": "hi"})
    proxy.request(whole)
    answer(proxy, whole, 200, json.dumps({"object": "response", "model": "gpt-4o-mini", "output": []}).encode())
    assert json.loads(whole.response.content)["model"] == "claude-sonnet-5-5"
    tctx.__exit__(None, None, None)


def test_responses_passthrough_per_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A [servers.NAME] table sets responses_passthrough for its server only; the others keep the option's."""
    monkeypatch.setenv("LOCAL_KEY", "sk-local-0123456789")
    catalog = (
        CATALOG
        + """
[servers.openai]
base_url = "https://openai.example.com/v1"
responses_passthrough = true
models = ["gpt-*"]

[servers.local]
base_url = "http://gpu.example.com:8000/v1"
api_key_env = "LOCAL_KEY"
models = ["Qwen/*"]
"""
    )
    for option, expected in ((False, ("responses", "chat/completions")), (True, ("responses", "responses"))):
        with configured_proxy(catalog, openai_api_key="", responses_passthrough=option) as (proxy, _):
            routes = []
            for model, host in (("claude-sonnet-5-5", "openai.example.com"), ("qwen3-coder", "gpu.example.com")):
                flow = client_flow("/v1/responses", {"model": model, "input": "hi"})
                proxy.request(flow)
                assert flow.request.host == host
                routes.append(flow.request.path.removeprefix("/v1/"))
            assert tuple(routes) == expected, option


@pytest.mark.parametrize("pieces", [1, 5, 100000])
def test_responses_relay_ends_a_cut_stream_with_an_error_event(pieces: int) -> None:
    body = b'event: response.created\ndata: {"type":"response.created","response":{"model":"u"}}\n\n'
    relay = ResponsesRelay("client", 1 << 24)
    out = b"".join(relay.feed(body[i : i + pieces]) for i in range(0, len(body), pieces)) + relay.finish()
    assert [n for n, _ in events(out)] == ["response.created", "error"] and relay.ended
    done = body + b'event: response.completed\ndata: {"type":"response.completed","response":{"model":"u"}}\n\n'
    relay = ResponsesRelay("client", 1 << 24)
    out = b"".join(relay.feed(done[i : i + pieces]) for i in range(0, len(done), pieces)) + relay.finish()
    assert [n for n, _ in events(out)] == ["response.created", "response.completed"]


def test_chunk_converter_fails_a_stream_without_a_finish_reason() -> None:
    from addon.translate.responses import ResponsesStream

    converter = ChunkStream(ResponsesStream("m", {}))
    out = converter.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n') + converter.finish()
    assert [n for n, _ in events(out)][-2:] == ["error", "response.failed"]


# ---------------------------------------------------------------------------------------------
# /v1/audio/transcriptions


def test_transcriptions_are_forwarded_with_the_model_resolved(addon) -> None:
    request = httpx.Request(
        "POST",
        "http://x/",
        files={"file": ("a.wav", b"RIFF\x00\x01--binary", "audio/wav")},
        data={"model": "whisper", "language": "en"},
    )
    body = request.read()
    flow = client_flow("/v1/audio/transcriptions", body, headers={"content_type": request.headers["content-type"]})
    addon.request(flow)
    assert flow.request.url == "https://api.example.com/v1/audio/transcriptions"
    assert flow.request.headers["content-type"] == request.headers["content-type"]
    assert flow.request.content == body.replace(b"\r\n\r\nwhisper\r\n", b"\r\n\r\nwhisper-1\r\n")
    answer(addon, flow, 200, b'{"text":"hello","usage":{"type":"tokens","input_tokens":4,"output_tokens":1}}')
    assert json.loads(flow.response.content)["text"] == "hello"
    assert flow.metadata["ollama"]["usage"] == {"prompt_tokens": 4, "completion_tokens": 1}
    bad = client_flow("/v1/audio/transcriptions", {"model": "whisper"})
    addon.request(bad)
    assert bad.response.status_code == 400 and "multipart" in json.loads(bad.response.content)["error"]["message"]


# ---------------------------------------------------------------------------------------------
# How a stream ends in the record


def test_a_client_that_hangs_up_after_the_last_event_had_its_whole_answer(addon) -> None:
    """Codex closes the connection on `response.completed`, before mitmproxy may have read the end of the
    upstream's body: the flow's error is "Client disconnected.", the answer was whole all the same."""
    from mitmproxy import flow as mitmflow

    sse = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    for body, whole in ((sse, True), (sse[: len(sse) // 2], False)):
        flow = client_flow("/v1/responses", {"model": "m", "input": "hi", "stream": True})
        addon.request(flow)
        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=None)
        addon.responseheaders(flow)
        flow.response.stream(body)
        flow.error = mitmflow.Error("Client disconnected.")
        addon.error(flow)
        assert ("error" in flow.metadata["ollama"]) is not whole and bool(flow.marked) is not whole, flow.comment
        if whole:
            assert "tokens" in flow.comment and "error" not in flow.comment


def test_a_stream_that_ends_in_an_error_event_is_recorded_as_failed(addon) -> None:
    flow = client_flow(
        "/v1/messages", {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    addon.request(flow)
    streamed(
        addon,
        flow,
        b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\ndata: {"error":{"message":"overloaded"}}\n\n',
    )
    assert flow.metadata["ollama"]["error"] == "upstream error: overloaded" and flow.marked
    assert flow.comment.endswith("error: upstream error: overloaded")
