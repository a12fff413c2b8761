"""docs/clients.md's compatibility table names the client versions the client suite pins (no drift)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
CLIENTS_DOC = (ROOT / "docs" / "clients.md").read_text()
AGENTS_DOC = (ROOT / "docs" / "agents.md").read_text()
CLIENTS = ROOT / "tests" / "clients"


def table_row(start: str) -> str:
    section = CLIENTS_DOC.split("## Compatibility with Ollama clients", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith(f"| {start}")]
    assert len(rows) == 1, f"the compatibility table has no single row for {start!r}"
    return rows[0]


def pins() -> dict[str, str]:
    lines = (CLIENTS / "requirements.txt").read_text().splitlines()
    return dict(
        re.fullmatch(r"([\w.-]+)(?:\[[\w,]+\])?==([\w.]+)", line).groups()
        for line in lines
        if line and not line.startswith("#")
    )


def test_python_clients_versions_are_in_the_table() -> None:
    pinned = pins()
    rows = {
        "ollama": table_row("`ollama` (Python SDK)"),
        "langchain-ollama": table_row("LangChain"),
        "langchain-core": table_row("LangChain"),
        "llama-index-llms-ollama": table_row("LlamaIndex"),
        "llama-index-embeddings-ollama": table_row("LlamaIndex"),
        "llama-index-core": table_row("LlamaIndex"),
        "openai": table_row("`openai` SDK"),
        "pydantic-ai-slim": table_row("pydantic-ai"),
        "llm": table_row("`llm` with the `llm-ollama` plugin"),
        "llm-ollama": table_row("`llm` with the `llm-ollama` plugin"),
    }
    assert set(rows) == set(pinned), "requirements.txt and this test disagree on the clients"
    for name, row in rows.items():
        assert pinned[name] in row, (
            f"{name} {pinned[name]} (tests/clients/requirements.txt) is not in docs/clients.md's row: {row[:120]}"
        )


def locked(name: str) -> str:
    """The version package-lock.json installs, which package.json must pin exactly."""
    lock = json.loads((CLIENTS / "node" / "package-lock.json").read_text())
    version = lock["packages"][f"node_modules/{name}"]["version"]
    assert json.loads((CLIENTS / "node" / "package.json").read_text())["dependencies"][name] == version, name
    return version


def test_node_clients_are_pinned_exactly() -> None:
    dependencies = json.loads((CLIENTS / "node" / "package.json").read_text())["dependencies"]
    assert set(dependencies) == {"ollama", "ai", "ollama-ai-provider-v2", "zod"}, (
        "package.json and this test disagree on the clients"
    )
    for name in dependencies:
        assert re.fullmatch(r"\d+\.\d+\.\d+", dependencies[name]), (
            f"{name} {dependencies[name]} is not an exact version"
        )
        locked(name)


def test_ollama_js_version_is_in_the_table() -> None:
    assert f"| {locked('ollama')} |" in table_row("ollama-js")


def test_vercel_ai_sdk_versions_are_in_the_table() -> None:
    row = table_row("Vercel AI SDK")
    assert f"| {locked('ai')} / {locked('ollama-ai-provider-v2')} |" in row
    assert f"zod {locked('zod')}" in row


def agent_pin(folder: str, name: str) -> str:
    """The one dependency of an agent's package.json, pinned exactly and locked at that version."""
    package = json.loads((CLIENTS / folder / "package.json").read_text())
    assert package["dependencies"] == {name: package["dependencies"][name]}, f"{folder}/package.json: only {name}"
    version = package["dependencies"][name]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version} is not an exact version"
    lock = json.loads((CLIENTS / folder / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"][name] == version
    assert lock["packages"][f"node_modules/{name}"]["version"] == version, f"{folder}/package-lock.json"
    return version


def test_claude_code_is_pinned_and_in_the_table() -> None:
    version = agent_pin("claude", "@anthropic-ai/claude-code")
    assert f"| {version} |" in table_row("Claude Code (npm `@anthropic-ai/claude-code`")
    assert f"Claude Code {version}" in AGENTS_DOC, "docs/agents.md's Claude Code section names the version tested"


def test_codex_is_pinned_and_in_the_table() -> None:
    version = agent_pin("codex", "@openai/codex")
    assert f"| {version} |" in table_row("Codex CLI (npm `@openai/codex`")
    assert f"Codex CLI {version}" in AGENTS_DOC, "docs/agents.md's Codex CLI section names the version tested"
    assert version in (CLIENTS / "codex" / "README.md").read_text()


def test_opencode_is_pinned_and_in_the_table() -> None:
    version = agent_pin("opencode", "opencode-ai")
    assert f"| {version} |" in table_row("opencode (npm `opencode-ai`")
    assert f"opencode {version}" in AGENTS_DOC, "docs/agents.md's opencode section names the version tested"
    assert version in (CLIENTS / "opencode" / "README.md").read_text()
