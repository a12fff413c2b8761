"""Claude Code (`claude -p`, pinned in tests/clients/claude) → the proxy's /v1/messages → the loopback upstream.

Non-interactive prompts in a minimal environment (harness/agents.py): the answer the fake upstream
produced comes out, a Bash tool call runs and its result goes back upstream, and `/context` is
counted with /v1/messages/count_tokens.
"""

from __future__ import annotations

import re
from pathlib import Path

from mitmproxy import io

from harness import TEST_KEY
from harness.agents import CLAUDE_KEY, claude
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CLAUDE_MODEL


def chat_requests(upstream: UpstreamServer) -> list:
    return [r for r in upstream.fake.requests if r.path.endswith("/chat/completions")]


def test_say_hi(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    upstream.fake.queue_reply("Hi there, from the fake upstream.")
    done = claude(ollama_proxy.url, tmp_path, "-p", "say hi", "--model", CLAUDE_MODEL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hi there, from the fake upstream."
    (sent,) = chat_requests(upstream)
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["stream"] is True
    assert sent.body["max_tokens"] == 16384, "Claude Code's 32000 lowered to gpt-4o-mini's limit"
    assert "reasoning_effort" not in sent.body, "its adaptive thinking is not sent to a model that cannot think"
    assert "say hi" in sent.body["messages"][1]["content"] and sent.body["messages"][0]["role"] == "system"
    assert [m["role"] for m in sent.body["messages"]] == ["system", "user"], "its late system turn joined the user turn"
    assert not {"x-api-key", "anthropic-version", "anthropic-beta"} & set(sent.headers)
    assert f"POST /v1/messages {CLAUDE_MODEL} → /v1/chat/completions gpt-4o-mini · 200" in ollama_proxy.log()


def test_a_bash_tool_call_round_trip(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    upstream.fake.queue_reply("", [{"name": "Bash", "arguments": {"command": "echo 42", "description": "Print 42"}}])
    upstream.fake.queue_reply("The command printed 42.")
    done = claude(ollama_proxy.url, tmp_path, "-p", "run echo 42", "--model", CLAUDE_MODEL, "--allowedTools", "Bash")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "The command printed 42."
    first, second = chat_requests(upstream)
    assert "Bash" in [t["function"]["name"] for t in first.body["tools"]]
    call = second.body["messages"][-2]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "Bash"
    result = next(m for m in second.body["messages"] if m["role"] == "tool")
    assert result["tool_call_id"] == call["tool_calls"][0]["id"] and result["content"].strip() == "42"


def test_context_is_counted_with_count_tokens(ollama_proxy: Mitmdump, upstream: UpstreamServer, tmp_path: Path) -> None:
    done = claude(ollama_proxy.url, tmp_path, "-p", "/context", "--model", CLAUDE_MODEL)
    assert done.returncode == 0, done.stderr
    assert "Context Usage" in done.stdout and re.search(r"System tools \| [\d.]+k", done.stdout)
    assert chat_requests(upstream) == [], "/context asks nothing of the model"
    assert f"POST /v1/messages/count_tokens {CLAUDE_MODEL} · 200" in ollama_proxy.log()


def test_a_start_with_a_proxy_key_is_quiet(upstream: UpstreamServer, spawn, tmp_path: Path) -> None:
    """With `ollama_api_key` set (Claude Code sends it as x-api-key), its keyless `HEAD /api/hello` at every start
    (sent unless CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set) gets Ollama's 404, which is no failure: the
    proxy (flow_detail 0: failures only) logs nothing, and the prompt is answered."""
    flows = tmp_path / "flows.mitm"
    proxy = spawn(
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"ollama_api_key={CLAUDE_KEY}",
        f"save_stream_file={flows}",
    )
    upstream.fake.queue_reply("Hi there, from the fake upstream.")
    home = tmp_path / "home"
    home.mkdir()
    quiet = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": None}
    done = claude(proxy.url, home, "-p", "say hi", "--model", "gpt-4o-mini", env=quiet)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hi there, from the fake upstream."
    proxy.stop()  # the saved flows are complete
    with flows.open("rb") as f:
        seen = {
            (flow.request.method, flow.request.path): flow.response.status_code for flow in io.FlowReader(f).stream()
        }
    assert seen[("HEAD", "/api/hello")] == 404, "the probe was sent, and answered as Ollama answers it"
    assert [status for (method, _), status in seen.items() if method == "POST"] == [200], seen
    assert "/api/hello" not in proxy.log() and "401" not in proxy.log(), proxy.log()
