"""Issue 21 §3 and §7: fail closed everywhere, and client text that stays one small visible line.

- A fault injected into any check of a request's head (the key, Origin, Host, size; a script
  loaded after the addon makes the function raise) is a 500 in the route's shape, written before
  the body is read; a client without the key never gets through, nothing reaches the upstream or
  the reverse target (the `sentinel`).
- A lone surrogate (`"m\\ud800"`, valid JSON), bidi and line-separator characters in client text
  (model names, which error messages quote) never make logging raise, never reach the log raw;
  the request is translated or refused, never forwarded untranslated.
- A 15 MB model name (the most the default limit admits) costs a few KB of log, not 30 MB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hostile.evil import MB, EvilUpstream, Tarpit
from hostile.tools import CLIENT_KEY, HELLO, UPSTREAM_KEY, Quiet, error_message

pytestmark = pytest.mark.e2e

FAULT_SCRIPT = Path(__file__).parent / "scripts" / "inject_fault.py"

HEAD_CHECKS = [
    "guard.access.take_client_key",
    "guard.browser.origin_check",
    "guard.browser.host_check",
    "guard.access.refusal",
    "guard.request_size.declared_too_large",
]


@pytest.mark.parametrize("fault", HEAD_CHECKS)
def test_a_fault_in_a_head_check_is_a_500_never_a_pass(start, evil: EvilUpstream, sentinel: Tarpit, fault: str) -> None:
    dump = start(f"ollama_api_key={CLIENT_KEY}", scripts=[FAULT_SCRIPT], environment={"INJECT_FAULT": fault})
    reached = sentinel.connections
    payload = json.dumps({"model": "m", "messages": HELLO, "stream": False})
    for method, path, body in [
        ("POST", "/api/chat", payload),
        ("POST", "/v1/chat/completions", payload),
        ("GET", "/api/tags", None),
    ]:
        for headers in ({}, {"Authorization": f"Bearer {CLIENT_KEY}"}):  # without the key, and with it
            answer = httpx.request(method, dump.url + path, content=body, headers=headers, timeout=10)
            if not headers and answer.status_code == 401:
                continue  # a check after the key's: the key's refusal comes first
            assert answer.status_code == 500, (path, answer.text[:300])
            assert "internal proxy error" in error_message(answer.content)
            if path.startswith("/v1"):
                assert isinstance(answer.json()["error"], dict)  # the OpenAI shape
    assert evil.answered() == [] and sentinel.connections == reached
    assert "Traceback" not in dump.log() and "Addon error" not in dump.log()


def test_a_fault_in_the_head_checks_reads_no_body(start, evil: EvilUpstream) -> None:
    """The 500 comes before the body, as a 401 would: a client announcing 200 MB is not read."""
    dump = start(
        f"ollama_api_key={CLIENT_KEY}", scripts=[FAULT_SCRIPT], environment={"INJECT_FAULT": "guard.access.refusal"}
    )
    from hostile.test_unauthenticated import head, send_until_answered

    answer, sent = send_until_answered(dump.port, head("/api/chat", 200 * MB), 200 * MB, wait_after=2)
    assert answer is not None and answer.status == 500, answer
    assert sent < 64 * MB


ODD_NAMES = {
    "lone surrogate": "m\\ud800",
    "low surrogate": "\\udfff",
    "bidi override": "m\\u202egpj.exe",
    "line separator": "m\\u2028[12:00:00.000] FORGED",
    "paragraph separator": "m\\u2029x",
    "zero width": "m\\u200b\\u2066x\\u2069",
    "private use": "m\\ue000",
    "tag characters": "m\\udb40\\udc01",  # U+E0001 as a surrogate pair: valid
}


TEMPLATES = [
    ("/api/chat", '{"model": "MODEL", "stream": false, "messages": [{"role": "user", "content": "hi"}]}'),
    ("/api/chat", '{"model": "m", "stream": false, "messages": [{"role": "MODEL", "content": "hi"}]}'),
    ("/api/show", '{"model": "MODEL"}'),
    ("/v1/chat/completions", '{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/v1/messages", '{"model": "MODEL", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'),
]


@pytest.fixture(scope="module")
def chatty(evil: EvilUpstream, sentinel: Tarpit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quiet]:
    """A proxy that logs every flow's line (flow_detail=1)."""
    dump = Quiet(
        tmp_path_factory.mktemp("chatty"),
        f"reverse:http://127.0.0.1:{sentinel.port}",
        f"openai_base_url={evil.base_url}",
        f"openai_api_key={UPSTREAM_KEY}",
        "flow_detail=1",
    )
    yield dump
    dump.stop()


@pytest.mark.parametrize("name", list(ODD_NAMES))
def test_odd_characters_in_client_text_never_break_logging(chatty: Quiet, sentinel: Tarpit, name: str) -> None:
    reached, mark = sentinel.connections, chatty.mark()
    for path, template in TEMPLATES:
        body = template.replace("MODEL", ODD_NAMES[name]).encode()
        answer = httpx.post(chatty.url + path, content=body, timeout=10)
        assert answer.status_code < 500, (path, answer.text[:300])
    httpx.get(chatty.url + "/api/version", timeout=10)  # (the flows' lines are written by then)
    raw = chatty.log_path.read_bytes()
    raw.decode("utf-8")  # strict: nothing unencodable was printed
    log = chatty.since(mark)
    assert "Traceback" not in log and "Addon error" not in log, log[-2000:]
    for char in ("\u202e", "\u2028", "\u2029", "\u200b", "\u2066", "\ue000", "\U000e0001"):
        assert char not in log, f"{char!r} reached the log raw"
    for path, _ in TEMPLATES:
        assert f"POST {path}" in log, f"the line of {path} is missing"
    assert sentinel.connections == reached


def test_a_15_mb_model_name_costs_a_few_kb_of_log(chatty: Quiet) -> None:
    """(The review's 16 MB name is over today's default request_body_limit: 15 MB is the most it admits.)"""
    dump = chatty
    size = dump.log_path.stat().st_size
    name = "n" * (15 * MB)
    for path, body in [
        ("/api/show", {"model": name}),
        ("/api/chat", {"model": "missing-model" + name, "messages": HELLO, "stream": False}),
        ("/api/chat", {"model": "m", "messages": [{"role": name, "content": "x"}], "stream": False}),
    ]:
        answer = httpx.post(dump.url + path, json=body, timeout=60)
        assert answer.status_code < 500, answer.text[:200]
    httpx.get(dump.url + "/api/version", timeout=10)
    grown = dump.log_path.stat().st_size - size
    assert grown < 64 * 1024, f"the log grew by {grown} bytes"
    assert "more characters]" in dump.log()


def test_the_environment_of_the_fault_script_is_checked() -> None:
    """The fault script names a function that exists (a typo would make every test above vacuous)."""
    import importlib

    for fault in HEAD_CHECKS:
        module, _, function = fault.rpartition(".")
        assert callable(getattr(importlib.import_module(f"addon.{module}"), function))
    assert os.path.exists(FAULT_SCRIPT)
