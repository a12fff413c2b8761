"""The addon's hooks through mitmproxy's own test helpers: routing, rewriting, stream set-up, replayed bodies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.flow import Error
from mitmproxy.test import taddons, tutils

from addon.exchange import Relay
from addon.proxy import OllamaProxy
from addon.translate.ndjson import OllamaLines
from addon.translate.response import Clock
from addon.translate.stream import ChunkStream
from addon.wire.ollama import NDJSON
from harness.inproc import client_flow, configured_proxy, run_request
from harness.upstream import recording


@pytest.fixture
def addon():
    with configured_proxy(list_upstream_models=True, body_view_limit=1_000_000) as (proxy, _):
        yield proxy


PROXY_CONNECTION = {"proxy_connection": "keep-alive"}  # what a proxy client adds


def ollama_flow(path: str, body: dict | bytes | None = None, method: str = "POST") -> http.HTTPFlow:
    return client_flow(path, body, method=method, headers=PROXY_CONNECTION)


def test_connection_strategy_is_lazy() -> None:
    from mitmproxy.addons.proxyserver import Proxyserver

    proxy = OllamaProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy)
        assert tctx.options.connection_strategy == "lazy"


def test_chat_is_rewritten_in_place(addon) -> None:
    flow = ollama_flow("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    addon.request(flow)
    assert flow.response is None
    assert flow.request.url == "https://api.example.com/v1/chat/completions"
    assert flow.request.headers["host"] == "api.example.com"
    assert flow.request.headers["authorization"] == "Bearer sk-unit"
    assert "proxy-connection" not in flow.request.headers
    assert json.loads(flow.request.content)["stream"] is True
    assert flow.metadata["ollama"]["route"] == "/api/chat"


def test_streamed_answer_is_converted_through_the_callable(addon) -> None:
    flow = ollama_flow("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    addon.request(flow)
    flow.response = tutils.tresp(
        headers=http.Headers(content_type="text/event-stream", content_length="99"), content=None
    )
    addon.responseheaders(flow)
    assert flow.response.headers["content-type"] == "application/x-ndjson"
    assert "content-length" not in flow.response.headers and flow.response.headers["transfer-encoding"] == "chunked"
    body = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    out = [piece for i in range(0, len(body), 11) for piece in flow.response.stream(body[i : i + 11])]
    out += flow.response.stream(b"")
    assert b"" not in out
    lines = [json.loads(line) for line in b"".join(out).splitlines()]
    assert lines[-1]["done"] is True
    addon.response(flow)
    assert flow.request.headers["authorization"] == "Bearer [redacted]"


def test_replayed_stream_is_converted_in_response(addon) -> None:
    """Server replay answers with the whole SSE body at once: the stream callable is never called."""
    flow = ollama_flow("/api/generate", {"model": "g", "prompt": "hi"})
    addon.request(flow)
    body = recording("chat-stream/plain-text-no-usage")["response"]["body"].encode()
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=body)
    addon.responseheaders(flow)
    addon.response(flow)
    lines = [json.loads(line) for line in flow.response.content.splitlines()]
    assert lines[-1]["done"] is True and "".join(line.get("response", "") for line in lines)
    assert flow.response.headers["content-type"] == "application/x-ndjson"


def test_non_streaming_answer_and_error(addon) -> None:
    flow = ollama_flow("/api/chat", {"model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
    addon.request(flow)
    flow.response = tutils.tresp(
        headers=http.Headers(content_type="application/json"),
        content=json.dumps(recording("chat/plain-text")["response"]["body"]).encode(),
    )
    addon.responseheaders(flow)
    addon.response(flow)
    answer = json.loads(flow.response.content)
    assert answer["model"] == "m" and answer["message"]["content"] and answer["done"] is True
    assert flow.response.timestamp_start is not None

    failed = ollama_flow("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    addon.request(failed)
    failed.response = tutils.tresp(
        status_code=503, headers=http.Headers(content_type="text/plain"), content=b"overloaded"
    )
    addon.responseheaders(failed)
    addon.response(failed)
    assert failed.response.status_code == 503 and json.loads(failed.response.content) == {"error": "overloaded"}


def test_upstream_streaming_when_asked_not_to_is_gathered(addon) -> None:
    flow = ollama_flow("/api/chat", {"model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
    addon.request(flow)
    flow.response = tutils.tresp(
        headers=http.Headers(content_type="text/event-stream"),
        content=recording("chat-stream/tool-calls-parallel")["response"]["body"].encode(),
    )
    addon.response(flow)
    answer = json.loads(flow.response.content)
    assert answer["done"] is True and len(answer["message"]["tool_calls"]) == 2


def test_regular_mode_leaves_other_hosts_alone(addon) -> None:
    other = client_flow(
        "/api/chat", {"model": "m"}, headers=PROXY_CONNECTION, mode="regular", host="example.com", port=80
    )
    addon.request(other)
    assert other.response is None and other.request.host == "example.com" and "ollama" not in other.metadata
    ours = client_flow("/api/version", method="GET", headers=PROXY_CONNECTION, mode="regular", host="localhost")
    addon.request(ours)
    assert ours.response.status_code == 200


def test_load_and_unload_are_answered_locally(addon) -> None:
    flow = ollama_flow("/api/generate", {"model": "m", "keep_alive": 0, "stream": False})
    addon.request(flow)
    assert json.loads(flow.response.content)["done_reason"] == "unload"
    flow = ollama_flow("/api/generate", {"model": "m", "stream": False})
    addon.request(flow)
    answer = json.loads(flow.response.content)
    assert answer["done_reason"] == "load" and "context" not in answer, "Ollama's load answer has no context"
    flow = ollama_flow("/api/chat", {"model": "m", "messages": []})
    addon.request(flow)
    assert flow.response.headers["content-type"] == NDJSON
    assert json.loads(flow.response.content)["done_reason"] == "load"


def test_stream_relay_survives_a_converter_bug(addon) -> None:
    class Broken(ChunkStream):
        def feed(self, piece: bytes) -> bytes:
            raise RuntimeError("bug")

    relay = Relay(Broken(OllamaLines("chat", "m", Clock(0))), 0)
    out = relay(b"data: x\n\n")
    assert json.loads(out[0])["error"].startswith("proxy error")
    assert relay(b"more") == [] and relay(b"") == [], "nothing after the final line, and never an empty piece"


def test_flows_are_annotated_and_keep_both_sides(addon) -> None:
    flow = ollama_flow("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    addon.request(flow)
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=None)
    addon.responseheaders(flow)
    sse = recording("chat-stream/plain-text-include-usage")["response"]["body"].encode()
    sent = b"".join(flow.response.stream(sse) + flow.response.stream(b""))
    flow.response.data.content = None  # as mitmproxy leaves a streamed response
    addon.response(flow)
    assert flow.metadata["upstream_response"] == sse
    assert json.loads(flow.metadata["ollama_request"])["model"] == "m"
    assert flow.response.content == sent
    assert flow.comment.startswith("POST /api/chat m → /v1/chat/completions m · 200 · ")
    assert "tokens" in flow.comment and not flow.marked


def test_failed_flows_are_marked(addon) -> None:
    flow = ollama_flow("/api/chat", b"{broken")
    addon.request(flow)
    addon.response(flow)
    assert flow.marked == ":red_circle:" and "invalid JSON" in flow.comment

    upstream_down = ollama_flow("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    addon.request(upstream_down)
    upstream_down.error = Error("Connect call failed")
    addon.error(upstream_down)
    assert upstream_down.marked and "Connect call failed" in upstream_down.comment
    assert upstream_down.request.headers["authorization"] == "Bearer [redacted]"


def test_the_log_line_of_a_flow_that_went_well_follows_flow_detail(caplog: pytest.LogCaptureFixture) -> None:
    from mitmproxy.addons.dumper import Dumper

    caplog.set_level("INFO", "ollama_proxy")
    proxy = OllamaProxy()
    with taddons.context(Dumper(), proxy) as tctx:
        for detail, logged in ((0, False), (1, True)):
            tctx.configure(proxy, openai_base_url="http://up/v1", flow_detail=detail)
            caplog.clear()
            ok = ollama_flow("/api/version", method="GET")
            proxy.request(ok)
            proxy.response(ok)
            failed = ollama_flow("/api/chat", b"{broken")
            proxy.request(failed)
            proxy.response(failed)
            lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("ollama_proxy")]
            assert lines == [("INFO", ok.comment)] * logged + [("WARNING", failed.comment)]


def test_body_view_limit_caps_what_is_kept() -> None:
    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://up/v1", body_view_limit=10)
        flow = ollama_flow("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        proxy.request(flow)
        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=None)
        proxy.responseheaders(flow)
        flow.response.stream(recording("chat-stream/plain-text-include-usage")["response"]["body"].encode())
        flow.response.stream(b"")
        flow.response.data.content = None
        proxy.response(flow)
        assert len(flow.metadata["upstream_response"]) == 10 and len(flow.response.content) == 10
        assert len(flow.metadata["ollama_request"]) == 10


# ---------------------------------------------------------------------------------------------
# Several upstreams (addon/upstreams/): the request path through the hooks

SERVERS_TOML = """
[servers.vllm]
base_url = "http://gpu1:8000/v1"
api_key_env = "UNIT_VLLM_KEY"
think_style = "chat_template_kwargs"
passthrough_options = true
upstream_timeout = 900
models = ["meta-llama/*"]

[servers.router]
base_url = "https://router.example/api/v1"
forward_client_key = true

[models."llama3.2"]
server = "vllm"
upstream = "meta-llama/Llama-3.2-3B-Instruct"
capabilities = ["completion", "tools", "thinking"]  # think is refused for a model without thinking
"""
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "options": {"top_k": 5}}


@pytest.fixture
def several(monkeypatch):
    monkeypatch.setenv("UNIT_VLLM_KEY", "sk-vllm-unit-0123")
    with configured_proxy(SERVERS_TOML, list_upstream_models=True, body_view_limit=1_000_000) as (proxy, tctx):
        yield proxy, tctx, Path(tctx.options.model_catalog)


def test_a_request_goes_to_its_server_with_its_key_and_settings(several) -> None:
    proxy, _, _ = several
    flow = ollama_flow("/api/chat", {**CHAT, "think": True})
    proxy.request(flow)
    assert flow.request.url == "http://gpu1:8000/v1/chat/completions"
    assert flow.request.headers["authorization"] == "Bearer sk-vllm-unit-0123", "the server's own key"
    body = json.loads(flow.request.content)
    assert body["model"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert body["chat_template_kwargs"] == {"enable_thinking": True}, "the server's think_style"
    assert body["top_k"] == 5, "the server's passthrough_options"
    record = flow.metadata["ollama"]
    assert (record["server"], record["route_rule"], record["upstream_model"]) == (
        "vllm",
        "catalog",
        "meta-llama/Llama-3.2-3B-Instruct",
    )
    exchange = proxy.exchanges[flow.id]
    assert exchange.timeout == 900 and proxy.health.outstanding("vllm") == 1
    flow.response = tutils.tresp(headers=http.Headers(content_type="application/json"), content=b"{}")
    proxy.responseheaders(flow)
    proxy.response(flow)
    assert proxy.health.outstanding("vllm") == 0
    assert flow.comment.startswith(
        "POST /api/chat llama3.2 → vllm /v1/chat/completions meta-llama/Llama-3.2-3B-Instruct"
    )
    other = ollama_flow("/api/chat", {**CHAT, "model": "gpt-4o-mini"})
    proxy.request(other)
    assert other.request.url == "https://api.example.com/v1/chat/completions"
    assert other.request.headers["authorization"] == "Bearer sk-unit"
    assert "top_k" not in json.loads(other.request.content) and proxy.exchanges[other.id].timeout == 300
    assert other.metadata["ollama"]["route_rule"] == "default"
    pattern = ollama_flow("/v1/chat/completions", {"model": "meta-llama/Other", "messages": []})
    proxy.request(pattern)
    assert pattern.request.host == "gpu1" and pattern.metadata["ollama"]["route_rule"] == "pattern"


def test_a_client_key_goes_only_to_a_server_that_forwards_client_keys(several, tmp_path) -> None:
    proxy, tctx, catalog = several
    catalog.write_text(SERVERS_TOML + '\n[models."routed"]\nserver = "router"\n')
    tctx.configure(proxy, model_catalog="")
    tctx.configure(proxy, model_catalog=str(catalog))
    for model, expected in (("routed", "Bearer sk-client-0123"), ("llama3.2", "Bearer sk-vllm-unit-0123")):
        flow = ollama_flow("/api/chat", {**CHAT, "model": model})
        flow.request.headers["authorization"] = "Bearer sk-client-0123"
        run_request(proxy, flow)
        assert flow.request.headers["authorization"] == expected, model
    keyless = ollama_flow("/api/chat", {**CHAT, "model": "routed"})
    run_request(proxy, keyless)
    assert "authorization" not in keyless.request.headers, "the router has no key of its own to fall back on"


def test_a_model_whose_servers_are_down_is_refused_at_once(several) -> None:
    proxy, _, _ = several
    proxy.health.mark_failed("vllm", "connection refused")
    flow = ollama_flow("/api/chat", CHAT)
    proxy.request(flow)
    assert flow.response.status_code == 503 and flow.request.host == "127.0.0.1", "nothing went upstream"
    message = json.loads(flow.response.content)["error"]
    assert message.startswith("model 'llama3.2': its catalog entry's server, vllm, is down (connection refused")
    assert 1 <= int(flow.response.headers["retry-after"]) <= 30
    proxy.response(flow)
    assert flow.marked and "is down" in flow.comment
    v1 = ollama_flow("/v1/chat/completions", {"model": "meta-llama/x", "messages": []})
    proxy.request(v1)
    assert v1.response.status_code == 503 and json.loads(v1.response.content)["error"]["type"]
    embed = ollama_flow("/api/embed", {"model": "llama3.2", "input": "x"})
    proxy.request(embed)
    assert embed.response.status_code == 503 and "retry-after" in embed.response.headers
    fine = ollama_flow("/api/chat", {**CHAT, "model": "gpt-4o-mini"})
    proxy.request(fine)
    assert fine.response is None, "the other servers' models are unaffected"


def test_passive_health_from_the_hooks(several) -> None:
    proxy, _, _ = several
    for _ in range(3):
        flow = ollama_flow("/api/chat", CHAT)
        proxy.request(flow)
        flow.response = tutils.tresp(status_code=502, headers=http.Headers(content_type="text/plain"), content=b"x")
        proxy.responseheaders(flow)
        proxy.response(flow)
    assert not proxy.health.is_down("vllm"), "5xx answers only make it suspect: a probe decides (issue 21, §8)"
    assert proxy.health.state("vllm").suspicions == 0, "the third in a row asked for the probe"
    flow = ollama_flow("/api/chat", CHAT)
    proxy.request(flow)
    flow.error = Error("Connect call failed")
    proxy.error(flow)
    assert proxy.health.is_down("vllm") and proxy.health.outstanding("vllm") == 0
    proxy.health.mark_ok("vllm")
    gone = ollama_flow("/api/chat", CHAT)
    proxy.request(gone)
    gone.error = Error("Client disconnected.")
    proxy.error(gone)
    assert not proxy.health.is_down("vllm"), "a client that left says nothing about the server"


def test_every_servers_key_is_a_secret_until_its_server_is_gone(several) -> None:
    from addon.guard import secrets

    proxy, tctx, _ = several
    assert {"sk-unit", "sk-vllm-unit-0123"} <= set(secrets.secrets())
    assert secrets.scrub("x sk-vllm-unit-0123 y") == "x [redacted] y"
    health = proxy.health
    tctx.configure(proxy, model_catalog="")
    assert "sk-vllm-unit-0123" not in secrets.secrets() and "sk-unit" in secrets.secrets()
    assert proxy.health is health and proxy.settings.servers.health is health, "health survives a reconfiguration"
    tctx.configure(proxy, upstream_timeout=7)
    assert proxy.settings.server.upstream_timeout == 7
