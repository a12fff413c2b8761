"""addon/guard/output.py: client text cannot forge lines or drive the terminal (end to end:
tests/hostile/test_protocol.py)."""

from __future__ import annotations

import logging

from addon.exchange import Exchange, summary
from addon.guard.output import OutputEscaper, escape


def test_escape() -> None:
    assert escape("plain · text ✓") == "plain · text ✓"
    assert escape("m\r\n[12:00:00.000] FORGED") == "m\\r\\n[12:00:00.000] FORGED"
    assert escape("\x1b[2J\x1b]0;pwned\x07\t\x00\x7f\x85\x9b") == "\\x1b[2J\\x1b]0;pwned\\x07\\t\\x00\\x7f\\x85\\x9b"


def test_the_log_line_and_comment_are_one_line() -> None:
    from mitmproxy.test import tflow

    flow = tflow.tflow(resp=True)
    exchange = Exchange("POST", "/api/chat", flow.request.timestamp_start)
    exchange.model = "m\r\nFORGED\x1b[31m"
    exchange.error = "model 'm\nFORGED' not found"
    line = summary(flow, exchange)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "m\\r\\nFORGED\\x1b[31m" in line and "model 'm\\nFORGED' not found" in line


def test_the_filter_escapes_the_addons_records() -> None:
    record = logging.LogRecord(
        "ollama_proxy", logging.WARNING, __file__, 1, "%s %s: %s", ("/api/chat", "m\nX", "w"), None
    )
    assert OutputEscaper().filter(record)
    assert record.getMessage() == "/api/chat m\\nX: w"


def test_an_http10_client_gets_no_chunked_whole_answer() -> None:
    from mitmproxy import http as mhttp

    from addon.exchange import finish_head

    exchange = Exchange("POST", "/v1/chat/completions", 0.0)
    exchange.http10 = exchange.close = True
    response = mhttp.Response.make(200, b'{"ok": true}', {"transfer-encoding": "chunked"})
    finish_head(response, exchange)
    assert "transfer-encoding" not in response.headers and response.headers["content-length"] == "12"
    assert response.headers["connection"] == "close"
