"""The per-flow record and the ways an answer is applied (addon/exchange.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addon.exchange import Exchange, replace_answer, respond, send_upstream
from addon.reply import Answer, Forward, json_answer
from addon.settings import Target
from addon.upstreams.servers import Server
from addon.wire.ollama import dumps_body
from addon.wire.openai import Usage


def test_the_record_saved_flows_keep() -> None:
    exchange = Exchange("POST", "/api/chat", 1.5)
    assert exchange.record() == {"method": "POST", "route": "/api/chat"} and exchange.start_ns == 1_500_000_000
    exchange.model, exchange.server, exchange.upstream_route, exchange.upstream_model = (
        "m",
        "default",
        "chat/completions",
        "u",
    )
    exchange.stream, exchange.upstream_status, exchange.usage, exchange.error = True, 200, Usage(3, 4), "x"
    exchange.route_rule = "listed"
    record = exchange.record()
    assert record == {
        "method": "POST",
        "route": "/api/chat",
        "model": "m",
        "stream": True,
        "server": "default",
        "route_rule": "listed",
        "upstream_route": "chat/completions",
        "upstream_model": "u",
        "upstream_status": 200,
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        "error": "x",
    }
    json.dumps(record)  # serialisable, as saved flows need it
    assert "client_authorization" not in record and "wire_authorization" not in record


def test_a_head_request_gets_the_headers_of_its_get() -> None:
    flow = tflow.tflow(req=tutils.treq(method=b"HEAD", path=b"/api/version"))
    exchange = Exchange("HEAD", "/api/version", 0)
    respond(flow, exchange, json_answer(200, {"version": "1"}))
    assert flow.response is not None and flow.response.content == b""
    assert flow.response.headers["content-length"] == str(len(b'{"version":"1"}'))


def test_replacing_an_answer_keeps_what_a_client_acts_on() -> None:
    flow = tflow.tflow(
        resp=tutils.tresp(
            status_code=429, headers=http.Headers(retry_after="7", x_upstream="secret-ish"), content=b"no"
        )
    )
    exchange = Exchange("POST", "/api/chat", 0)
    replace_answer(flow, exchange, Answer(429, b'{"error":"slow down"}', "application/json", "slow down"))
    assert flow.response is not None and dict(flow.response.headers) == {
        "content-type": "application/json",
        "retry-after": "7",
        "content-length": "21",
    }
    assert exchange.error == "slow down"
    relayed = tflow.tflow(resp=tutils.tresp(headers=http.Headers(x_kept="1", content_type="application/json")))
    replace_answer(relayed, exchange, Answer(200, b"{}", "application/json", keep_headers=True))
    assert (
        relayed.response is not None and relayed.response.headers["x-kept"] == "1" and relayed.response.content == b"{}"
    )


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8000/v1", "https://API.example.com/v1/", "http://[::1]:80/v1", "https://h:8443"]
)
@pytest.mark.parametrize("absolute_form", [False, True])
def test_the_upstream_request_is_what_mitmproxys_setters_make(base: str, absolute_form: bool) -> None:
    """send_upstream builds the request from bytes, once per URL: the same request as mitmproxy's own setters."""
    server = Server.default(base, "sk-unit")
    forward = Forward(
        "chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "é"}]},
        True,
        Target(server, "m", "none"),
    )

    def client_flow():
        headers = http.Headers(host="127.0.0.1:11434", user_agent="ollama-python/0.6", accept="*/*")
        authority = b"127.0.0.1:11434" if absolute_form else b""
        return tflow.tflow(req=tutils.treq(headers=headers, path=b"/api/chat", authority=authority))

    expected = client_flow().request
    expected.headers = http.Headers(
        host="", content_type="application/json", accept="text/event-stream", accept_encoding="identity"
    )
    expected.headers["user-agent"] = "ollama-python/0.6"
    expected.headers["authorization"] = "Bearer sk-unit"
    expected.method = "POST"
    expected.url = server.url("chat/completions")
    expected.content = dumps_body(forward.body)
    for _ in range(2):  # the second time from the cached URL
        flow = client_flow()
        send_upstream(
            flow,
            Exchange("POST", "/api/chat", 0),
            forward,
            SimpleNamespace(body_view_limit=0, servers=(), sse_event_limit=0),
        )  # type: ignore[arg-type]
        assert flow.request.get_state() == expected.get_state()
        assert bytes(flow.request.headers) == bytes(expected.headers)
