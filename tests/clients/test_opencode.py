"""opencode (`opencode run`, pinned in tests/clients/opencode) with its openai-compatible provider → the proxy's
/v1/chat/completions → the loopback upstream.

Non-interactive prompts in a minimal environment (harness/agents.py: a config in OPENCODE_CONFIG_CONTENT
naming the proxy's /v1, the switches that keep it off the network): the answer the fake upstream produced
comes out of its JSON events, streamed as it asked, and a bash tool call runs and its output goes back
upstream. opencode has no embeddings. `--title` spares the title request it would otherwise send first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.agents import opencode
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CHAT_MODEL


def chat_requests(upstream: UpstreamServer) -> list:
    return [r for r in upstream.fake.requests if r.path.endswith("/chat/completions")]


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def texts(stdout: str) -> list[str]:
    return [e["part"]["text"] for e in events(stdout) if e.get("type") == "text"]


def test_say_hi(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    upstream.fake.queue_reply("Hi there, from the fake upstream.")
    done = opencode(ollama_proxy.url, tmp_path, CHAT_MODEL, "say hi", "--title", "a test")
    assert done.returncode == 0, done.stderr
    assert texts(done.stdout) == ["Hi there, from the fake upstream."]
    (sent,) = chat_requests(upstream)
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["stream"] is True, "it streams"
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["messages"][0]["role"] == "system" and sent.body["messages"][-1]["role"] == "user"
    assert "say hi" in json.dumps(sent.body["messages"][-1]["content"])
    assert "bash" in [t["function"]["name"] for t in sent.body["tools"]]
    assert f"POST /v1/chat/completions {CHAT_MODEL} → /v1/chat/completions gpt-4o-mini · 200" in ollama_proxy.log()
    (finish,) = [e for e in events(done.stdout) if e.get("type") == "step_finish"]
    assert finish["part"]["reason"] == "stop" and finish["part"]["tokens"]["output"] > 0, "usage came through"


def test_a_bash_tool_call_round_trip(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    upstream.fake.queue_reply("", [{"name": "bash", "arguments": {"command": "echo 42", "description": "Print 42"}}])
    upstream.fake.queue_reply("The command printed 42.")
    done = opencode(ollama_proxy.url, tmp_path, CHAT_MODEL, "run echo 42", "--title", "a test")
    assert done.returncode == 0, done.stderr
    assert texts(done.stdout)[-1] == "The command printed 42."
    first, second = chat_requests(upstream)
    call = second.body["messages"][-2]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "bash"
    result = second.body["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "42" in json.dumps(result["content"]), result["content"]
    assert first.body["messages"] == second.body["messages"][: len(first.body["messages"])]
