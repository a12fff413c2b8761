"""The per-flow record and the ways an answer is applied (addon/exchange.py)."""

from __future__ import annotations

import json

from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addon.exchange import Answer, Exchange, json_answer, replace_answer, respond
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
