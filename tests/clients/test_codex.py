"""Codex CLI (`codex exec --oss`, pinned in tests/clients/codex) → the proxy (/api/version, /api/tags,
/api/pull, /v1/responses) → the loopback upstream.

Non-interactive prompts in a minimal environment (harness/agents.py, as tests/clients/codex/README.md
describes): the answer the fake upstream produced comes out, and an `exec_command` tool call runs and
its output goes back upstream.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.agents import codex
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CHAT_MODEL, CODEX_MODEL


def chat_requests(upstream: UpstreamServer) -> list:
    return [r for r in upstream.fake.requests if r.path.endswith("/chat/completions")]


def routes(log: str, since: int) -> list[str]:
    """The proxy's log lines' routes (`GET /api/version`, ...) after `since` characters."""
    return re.findall(r"\] ((?:GET|POST|HEAD) /\S+)", log[since:])


def test_say_hi(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    """A name that /api/tags lists only as `llama3.2:latest`: Codex pulls it first, then asks /v1/responses."""
    upstream.fake.queue_reply("Hi there, from the fake upstream.")
    start = len(ollama_proxy.log())
    done = codex(ollama_proxy.url, tmp_path, CHAT_MODEL, "say hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hi there, from the fake upstream."
    (sent,) = chat_requests(upstream)
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["stream"] is True
    assert sent.body["messages"][-1] == {"role": "user", "content": "say hi"}
    assert "exec_command" in [t["function"]["name"] for t in sent.body["tools"]]
    seen = routes(ollama_proxy.log(), start)
    assert [r for r in seen if r != "GET /v1/models"] == [
        "GET /api/version",
        "GET /api/tags",
        "POST /api/pull",
        "POST /v1/responses",
    ]


def test_an_exec_command_round_trip(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    upstream.fake.queue_reply("", [{"name": "exec_command", "arguments": {"cmd": "echo 42"}}])
    upstream.fake.queue_reply("The command printed 42.")
    done = codex(ollama_proxy.url, tmp_path, CODEX_MODEL, "run echo 42")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "The command printed 42."
    first, second = chat_requests(upstream)
    call = second.body["messages"][-2]
    assert call["tool_calls"][0]["function"] == {"name": "exec_command", "arguments": json.dumps({"cmd": "echo 42"})}
    result = second.body["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "42" in result["content"], result["content"]
    assert first.body["messages"][:-1] == second.body["messages"][: len(first.body["messages"]) - 1]
