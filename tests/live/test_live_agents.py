"""The live tier for the agents' APIs: /v1/messages and /v1/responses against the real local model server,
through the official SDKs (the text checked against the same request sent to the server directly), and the
real agents, Claude Code, Codex CLI and opencode, one prompt each.

Gemma 3 270M is a base model with no end-of-turn of its own: the local catalog (scripts/local-models.toml,
as `make run` loads it) gives it one, `stop = ["\\n"]`, which the proxy sends with every request that names
none (a Modelfile's `PARAMETER stop`). So every agent's turn completes: a one-line answer, or an empty one
when the model begins a `<tool_call>` (the server keeps it back and drops it at the stop; Claude Code then
asks once more for a visible answer), and never a tool call for the agent to run. These tests check that
each agent completed its turn as it does against a real model (Claude Code's `success` result, Codex's
final message and exit 0, opencode's step finished by `stop`), that the model's answer is the one the
agent shows, and that no answer went past the catalog's 256 tokens.
Two kinds of run: cut-down prompts (`--bare --tools "" --system-prompt` for Claude Code, a short
`model_instructions_file` and most features disabled for Codex: a few hundred tokens, quick), and each
agent's real request as a user's first prompt sends it (Claude Code about 12,000 tokens, Codex about
9,000, opencode about 7,400), which the server's 32,768-token context holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from harness.agents import claude, codex, opencode, opencode_config
from harness.mitmdump import LOCAL_MODEL, Mitmdump, local_model_stop

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
    """The same chat request straight to the model server (with the model's stop sequences, which the proxy
    adds from its catalog): its text."""
    body = {"stop": local_model_stop(body["model"]), **body}
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


def answered(log: str, route: str, model: str) -> list[tuple[int, int]]:
    """(prompt, answer) token counts of the route's requests the proxy answered 200, from its log lines."""
    pattern = rf"POST {route} {re.escape(model)} → /v1/chat/completions {CHAT} · 200 · (\d+)\+(\d+) tokens"
    return [(int(a), int(b)) for a, b in re.findall(pattern, log)]


def claude_turn(stdout: str) -> tuple[list[str], dict]:
    """Claude Code's stream-json: the texts of the model's answers (Claude Code shows no event for an empty
    one), and the turn's result event."""
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    texts = [
        "".join(block.get("text", "") for block in e["message"]["content"])
        for e in events
        if e.get("type") == "assistant" and e["message"].get("model") == CHAT
    ]
    results = [e for e in events if e.get("type") == "result"]
    assert results, f"Claude Code's turn did not reach its end: {stdout[-3000:]}"
    return texts, results[-1]


def assert_claude_completed(done: subprocess.CompletedProcess[str], most: int, log: str) -> list[tuple[int, int]]:
    """Claude Code ended its turn as against a real model: a `success` result whose text is the model's last
    answer, every answer ended by the model's stop (not its length), none longer than `most` tokens."""
    texts, result = claude_turn(done.stdout)
    assert result["subtype"] == "success" and not result["is_error"], result
    assert result.get("stop_reason", "end_turn") == "end_turn", result
    assert result["result"] == (texts[-1] if texts else ""), (result, texts)
    assert "Output token limit hit" not in done.stdout and "Prompt is too long" not in done.stdout + done.stderr
    counts = answered(log, "/v1/messages", CHAT)
    assert counts and all(answer <= most for _, answer in counts), counts
    return counts


def claude_print(proxy: Mitmdump, home: Path, *options: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`claude -p QUESTION --model gemma3 <options>` with its events as stream-json."""
    return claude(
        proxy.url,
        home,
        "-p",
        QUESTION,
        "--model",
        CHAT,
        *options,
        "--output-format",
        "stream-json",
        "--verbose",
        timeout=timeout,
    )


def test_claude_code(proxy: Mitmdump, tmp_path: Path) -> None:
    start = len(proxy.log())
    cut_down = ("--bare", "--tools", "", "--system-prompt", "Answer briefly.", "--disable-slash-commands")
    done = claude_print(proxy, tmp_path, *cut_down, timeout=300)
    # Claude Code asks 32,000 tokens, lowered to the catalog's 256: a line is shorter (with 32 tokens, Claude
    # Code's own first system line, `x-anthropic-billing-header: …`, which the model may echo, is cut)
    assert_claude_completed(done, 256, proxy.log()[start:])


def assert_codex_completed(done: subprocess.CompletedProcess[str]) -> str:
    """Codex ended its turn as against a real model: exit 0, its final message (the model's one line, maybe
    empty) printed under `codex` and on stdout, no incomplete response."""
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Incomplete response" not in done.stderr + done.stdout and "ERROR" not in done.stderr, done.stderr[-3000:]
    shown = re.search(r"^codex\n(.*?)\ntokens used\n", done.stderr, re.M | re.S)
    assert shown, f"Codex's turn did not reach its end: {done.stderr[-3000:]}"
    assert done.stdout.strip() == shown.group(1).strip()
    return shown.group(1)


def test_codex(proxy: Mitmdump, tmp_path: Path) -> None:
    instructions = tmp_path / "instructions.md"
    instructions.write_text("Answer briefly.\n")
    features = ["shell_tool", "unified_exec", "multi_agent", "goals", "view_image", "apps", "image_generation"]
    features += ["skill_search", "tool_suggest", "sleep_tool", "browser_use", "computer_use"]
    start = len(proxy.log())
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
    assert_codex_completed(done)
    counts = answered(proxy.log()[start:], "/v1/responses", f"{CHAT}:latest")
    assert counts and all(answer <= 256 for _, answer in counts), proxy.log()[-3000:]


def test_claude_codes_real_request(proxy: Mitmdump, tmp_path: Path) -> None:
    """Claude Code as a user starts it (its system prompt and every tool: ~12,000 tokens) fits the context, and
    its turn completes."""
    start = len(proxy.log())
    done = claude_print(proxy, tmp_path, timeout=1800)
    counts = assert_claude_completed(done, 256, proxy.log()[start:])
    assert counts[0][0] > 10_000, f"its real request, not a cut-down one: {counts}"


def test_codexs_real_request(proxy: Mitmdump, tmp_path: Path) -> None:
    """Codex as a user starts it (its instructions and tools: ~9,000 tokens) fits, and its turn completes."""
    start = len(proxy.log())
    done = codex(proxy.url, tmp_path, f"{CHAT}:latest", QUESTION, timeout=1200)
    counts = answered(proxy.log()[start:], "/v1/responses", f"{CHAT}:latest")
    assert counts, f"no request of Codex was answered: {proxy.log()[-3000:]} {done.stderr[-2000:]}"
    assert counts[0][0] > 7_000, f"its real request, not a cut-down one: {counts}"
    assert all(answer <= 256 for _, answer in counts), counts
    assert_codex_completed(done)


def test_opencodes_real_request(proxy: Mitmdump, tmp_path: Path) -> None:
    """opencode as a user sets it up for this model (its provider on the proxy's /v1, the model's limits as
    /api/show gives them: 32,768 tokens of context, 256 of answer) with its whole system prompt and tools,
    and its turn completes: its step finished by the model's stop. The /v1 relay does not decode the stream
    (the proxy's log line has no token counts): opencode's own step events report them."""
    config = opencode_config(proxy.url, CHAT, context=32768, output=256)
    start = len(proxy.log())
    done = opencode(proxy.url, tmp_path, CHAT, QUESTION, "--title", "colours", timeout=1200, config=config)
    assert re.search(rf"POST /v1/chat/completions {CHAT} → /v1/chat/completions {CHAT} · 200", proxy.log()[start:]), (
        f"no request of opencode was answered: {proxy.log()[-3000:]} {done.stderr[-2000:]}"
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert not [e for e in events if e.get("type") == "error"], done.stdout[-3000:]
    steps = [e["part"] for e in events if e.get("type") == "step_finish"]
    assert steps and steps[-1]["reason"] == "stop", f"opencode's turn did not complete: {done.stdout[-3000:]}"
    tokens = [step["tokens"] for step in steps]
    assert tokens[0]["input"] > 5_000, f"its real request: {tokens}"
    assert all(step["output"] <= 256 for step in tokens), f"every answer bounded: {tokens}"
