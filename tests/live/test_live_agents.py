"""The live tier for the agents' APIs: /v1/messages and /v1/responses against the real local model server,
through the official SDKs (the text checked against the same request sent to the server directly), and the
real agents, Claude Code and Codex CLI, one prompt each.

Gemma 3 270M is a base model: it never ends its turn (no end-of-turn token), so every answer stops at a
length limit. The SDK tests set `max_tokens`, and check that the proxy reports it (`max_tokens`,
`incomplete`). The agents set no stop sequences and treat an answer cut by its length as a failure:
Claude Code asks the model to go on a few times and then gives up ("exceeded the … output token
maximum"), Codex shows the text (or runs the tool call the model wrote) and then "Incomplete response
returned, reason: max_output_tokens".
So these tests check that the model's own text went through the proxy to the agent, and that the agent
saw the answer end for its length; no tool call (the model cannot drive one without a stop sequence).
Two kinds of run: cut-down prompts (`--bare --tools "" --system-prompt` for Claude Code, a short
`model_instructions_file` and most features disabled for Codex: a few hundred tokens, quick), and each
agent's real request as a user's first prompt sends it (Claude Code about 12,000 tokens, Codex about
9,000, opencode about 7,400), which the server's 32,768-token context holds. Every answer is bounded by
the catalog's `max_output_tokens` (256, scripts/local-models.toml, as `make run` loads it): the
agents ask for 32,000 and more, which a base model that never stops would fill.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from harness.agents import claude, codex, opencode, opencode_config
from harness.mitmdump import LOCAL_MODEL, Mitmdump

pytestmark = [pytest.mark.live, pytest.mark.e2e]

BASE_URL = os.environ.get("LIVE_BASE_URL", "")
CHAT = "gemma3"
QUESTION = "Name three colours."


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    if not BASE_URL:
        pytest.fail("LIVE_BASE_URL is not set: run the live tier with `make test-live`")
    # flow_detail=1: every request logs its line (the tests read the token counts from it)
    dump = Mitmdump(
        tmp_path_factory.mktemp("live-agents"),
        "reverse",
        f"openai_base_url={BASE_URL}",
        "flow_detail=1",
        *LOCAL_MODEL,
    )
    yield dump
    dump.stop()


def direct(body: dict) -> str:
    """The same chat request straight to the model server: its text."""
    response = httpx.post(f"{BASE_URL}/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def test_messages_text_comes_from_the_model(proxy: Mitmdump) -> None:
    same_request = {
        "model": CHAT,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 24,
        "temperature": 0,
    }
    direct(same_request)  # the prompt is now cached for both requests compared below
    client = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-live", max_retries=0, timeout=120)
    greedy = {"temperature": 0}  # (the SDK's create() no longer names it; the API takes it)
    message = client.messages.create(
        model=CHAT, max_tokens=24, extra_body=greedy, messages=[{"role": "user", "content": QUESTION}]
    )
    assert message.model == CHAT and message.stop_reason in ("max_tokens", "end_turn")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 24
    assert message.content[0].text == direct(same_request)
    with client.messages.stream(
        model=CHAT, max_tokens=24, extra_body=greedy, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed == message.content[0].text


def test_responses_text_comes_from_the_model(proxy: Mitmdump) -> None:
    same_request = {
        "model": CHAT,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 24,
        "temperature": 0,
    }
    direct(same_request)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="ollama", max_retries=0, timeout=120)
    response = client.responses.create(model=CHAT, input=QUESTION, max_output_tokens=24, temperature=0)
    assert response.model == CHAT and response.status in ("completed", "incomplete")
    assert response.output_text == direct(same_request)
    events = list(client.responses.create(model=CHAT, input=QUESTION, max_output_tokens=24, temperature=0, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text
    assert events[-1].type in ("response.completed", "response.incomplete")


def test_claude_code(proxy: Mitmdump, tmp_path: Path) -> None:
    done = claude(
        proxy.url,
        tmp_path,
        "-p",
        QUESTION,
        "--model",
        CHAT,
        "--bare",
        "--tools",
        "",
        "--system-prompt",
        "Answer briefly.",
        "--disable-slash-commands",
        "--output-format",
        "stream-json",
        "--verbose",
        timeout=300,
        env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "32"},
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    answers = [e["message"] for e in events if e.get("type") == "assistant" and e["message"].get("model") == CHAT]
    assert answers, f"no answer of the model reached Claude Code: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    assert all(a["content"][0]["type"] == "text" and a["content"][0]["text"].strip() for a in answers)
    log = proxy.log()
    assert re.search(rf"POST /v1/messages {CHAT} → /v1/chat/completions {CHAT} · 200 · \d+\+32 tokens", log), log[
        -3000:
    ]
    assert any("Output token limit hit" in json.dumps(e) for e in events), (
        "Claude Code saw the answer cut at max_tokens"
    )


def test_codex(proxy: Mitmdump, tmp_path: Path) -> None:
    instructions = tmp_path / "instructions.md"
    instructions.write_text("Answer briefly.\n")
    features = ["shell_tool", "unified_exec", "multi_agent", "goals", "view_image", "apps", "image_generation"]
    features += ["skill_search", "tool_suggest", "sleep_tool", "browser_use", "computer_use"]
    done = codex(
        proxy.url,
        tmp_path,
        f"{CHAT}:latest",
        QUESTION,
        "-c",
        f"model_instructions_file={instructions}",
        *[a for name in features for a in ("--disable", name)],
        timeout=300,
    )
    assert "Incomplete response returned, reason: max_output_tokens" in done.stderr + done.stdout
    log = proxy.log()
    found = re.search(rf"POST /v1/responses {CHAT}:latest → /v1/chat/completions {CHAT} · 200 · \d+\+(\d+) tokens", log)
    assert found, log[-3000:]
    # The model samples (Codex sends no temperature): Codex shows its text (on stderr, under "codex", as
    # the turn did not complete), or the tool call it wrote (its chat template has them), which Codex tried.
    text = re.search(r"^codex\n(.+?)\nERROR: Incomplete response", done.stderr, re.M | re.S)
    tried_a_tool = "codex_core::tools::router" in done.stderr
    assert (text and text.group(1).strip()) or tried_a_tool, f"the model's answer did not reach Codex: {done.stderr}"


def answered(log: str, route: str, model: str) -> list[tuple[int, int]]:
    """(prompt, answer) token counts of the route's requests the proxy answered 200, from its log lines."""
    pattern = rf"POST {route} {re.escape(model)} → /v1/chat/completions {CHAT} · 200 · (\d+)\+(\d+) tokens"
    return [(int(a), int(b)) for a, b in re.findall(pattern, log)]


def test_claude_codes_real_request(proxy: Mitmdump, tmp_path: Path) -> None:
    """Claude Code as a user starts it (its system prompt and every tool: ~12,000 tokens) fits the context, and
    each of its answers ends at the catalog's 256 tokens; it asks the model to go on a few times, then stops."""
    start = len(proxy.log())
    done = claude(
        proxy.url,
        tmp_path,
        "-p",
        QUESTION,
        "--model",
        CHAT,
        "--output-format",
        "stream-json",
        "--verbose",
        timeout=1800,
    )
    counts = answered(proxy.log()[start:], "/v1/messages", CHAT)
    assert counts, f"no request of Claude Code was answered: {proxy.log()[-3000:]} {done.stderr[-2000:]}"
    assert counts[0][0] > 10_000, f"its real request, not a cut-down one: {counts}"
    assert all(0 < answer <= 256 for _, answer in counts), f"every answer bounded by max_output_tokens: {counts}"
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    answers = [e["message"] for e in events if e.get("type") == "assistant" and e["message"].get("model") == CHAT]
    assert answers and any(block.get("text", "").strip() for a in answers for block in a["content"]), done.stdout[
        -2000:
    ]
    assert "Prompt is too long" not in done.stdout + done.stderr


def test_codexs_real_request(proxy: Mitmdump, tmp_path: Path) -> None:
    """Codex as a user starts it (its instructions and tools: ~9,000 tokens) fits, and its answer is bounded."""
    start = len(proxy.log())
    done = codex(proxy.url, tmp_path, f"{CHAT}:latest", QUESTION, timeout=1200)
    counts = answered(proxy.log()[start:], "/v1/responses", f"{CHAT}:latest")
    assert counts, f"no request of Codex was answered: {proxy.log()[-3000:]} {done.stderr[-2000:]}"
    assert counts[0][0] > 7_000, f"its real request, not a cut-down one: {counts}"
    assert all(0 < answer <= 256 for _, answer in counts), counts
    assert "Incomplete response returned, reason: max_output_tokens" in done.stderr + done.stdout


def test_opencodes_real_request(proxy: Mitmdump, tmp_path: Path) -> None:
    """opencode as a user sets it up for this model (its provider on the proxy's /v1, the model's limits as
    /api/show gives them: 32,768 tokens of context, 256 of answer) with its whole system prompt and tools.
    The /v1 relay does not decode the stream (the proxy's log line has no token counts): opencode's own
    step events report them."""
    config = opencode_config(proxy.url, CHAT, context=32768, output=256)
    start = len(proxy.log())
    done = opencode(proxy.url, tmp_path, CHAT, QUESTION, "--title", "colours", timeout=1200, config=config)
    assert re.search(rf"POST /v1/chat/completions {CHAT} → /v1/chat/completions {CHAT} · 200", proxy.log()[start:]), (
        f"no request of opencode was answered: {proxy.log()[-3000:]} {done.stderr[-2000:]}"
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    steps = [e["part"]["tokens"] for e in events if e.get("type") == "step_finish"]
    assert steps, f"opencode finished no step: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    assert steps[0]["input"] > 5_000, f"its real request: {steps}"
    assert all(0 < step["output"] <= 256 for step in steps), f"every answer bounded: {steps}"
