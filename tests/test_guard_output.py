"""addon/guard/output.py: client text cannot forge lines or drive the terminal (end to end:
tests/hostile/test_protocol.py)."""

from __future__ import annotations

import io
import logging
import sys
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from addon.exchange import Exchange
from addon.flow_line import summary
from addon.guard import output
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


# ---------------------------------------------------------------------------------------------
# Issue 21 §3, §7: every unseen character, clipped values, logging that never raises


UNSEEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def visible(text: str) -> bool:
    """One line of characters a person sees as what they are, which UTF-8 can encode."""
    text.encode("utf-8")  # no surrogate left
    return not any(unicodedata.category(c) in UNSEEN for c in text)


@given(st.integers(min_value=0, max_value=0x10FFFF))
@settings(max_examples=3000)
def test_every_code_point_is_shown_or_escaped(code: int) -> None:
    char = chr(code)
    shown = escape(f"a{char}b")
    assert visible(shown)
    if unicodedata.category(char) in UNSEEN:
        assert shown != f"a{char}b" and shown.isascii()
    else:
        assert shown == f"a{char}b"


def test_every_code_point_at_once() -> None:
    """The whole code space in one text (hypothesis samples it; this covers it)."""
    everything = "".join(map(chr, range(0x110000)))
    assert visible(escape(everything))


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=400))
def test_any_text_becomes_one_visible_line(text: str) -> None:
    assert visible(output.shown(text))


def test_the_review_cases() -> None:
    assert (
        escape("a\u202eb\u2028c\u2029d\ud800e\ufeff\U000e0001") == "a\\u202eb\\u2028c\\u2029d\\ud800e\\ufeff\\U000e0001"
    )
    assert escape("模型 émoji 🦙") == "模型 émoji 🦙"


def test_client_values_are_clipped_with_a_marker() -> None:
    assert output.clip("x" * 300, 256) == "x" * 256 + "…[44 more characters]"
    assert output.clip("short") == "short"
    from mitmproxy.test import tflow

    flow = tflow.tflow(resp=True)
    exchange = Exchange("POST", "/api/chat", flow.request.timestamp_start)
    exchange.model = "m" * (16 << 20)
    exchange.error = f"model '{exchange.model}' not found"
    line = summary(flow, exchange)
    assert len(line) < 4096 and "more characters]" in line


def test_a_record_is_clipped() -> None:
    record = logging.LogRecord("ollama_proxy", logging.WARNING, __file__, 1, "%s", ("y" * (1 << 20),), None)
    assert OutputEscaper().filter(record)
    assert len(record.getMessage()) < output.MAX_RECORD + 64


def test_logging_never_raises_into_the_caller() -> None:
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    output.install()
    logger = logging.getLogger("ollama_proxy")
    assert isinstance(logger, output.SafeLogger)
    broken = Broken()
    logger.addHandler(broken)
    try:
        logger.warning("m\ud800")  # must not raise
        logging.getLogger("ollama_proxy.flows").warning("x")
    finally:
        logger.removeHandler(broken)


def test_stdout_never_raises_on_a_surrogate() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    saved = sys.stdout
    sys.stdout = stream
    try:
        output.install()
        print("m\ud800", file=stream)
    finally:
        sys.stdout = saved
    stream.flush()
    assert stream.buffer.getvalue() == b"m\\ud800\n"  # type: ignore[attr-defined]
