"""The client compatibility suite: real Ollama clients → a real mitmdump with the addon → the loopback upstream.

Run by `make test-clients`, in the environment it installs (.venv-clients, tests/clients/node).
Every test here is marked `clients` (and `e2e`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

HERE = Path(__file__).parent
NODE_DIR = HERE / "node"

# The names the clients use, as a user would set them up in the model catalog.
CATALOG = """
[models."llama3.2:latest"]
upstream = "gpt-4o-mini"
context_length = 128000
capabilities = ["completion", "tools", "vision"]

# A model that thinks (think / reasoning on a model without `thinking` is refused, as Ollama refuses it)
[models."qwen3:latest"]
upstream = "gpt-4o-mini"
capabilities = ["completion", "tools", "thinking"]

[models."nomic-embed-text:latest"]
upstream = "text-embedding-3-small"
capabilities = ["embedding"]

# Claude Code asks for Anthropic's names (its main model, and haiku for small background work)
[models."claude-sonnet-5-5"]
upstream = "gpt-4o-mini"
context_length = 128000

[models."claude-haiku-5-5"]
upstream = "gpt-4o-mini"

# Codex CLI's default model with --oss
[models."gpt-oss:20b"]
upstream = "gpt-4o-mini"
"""
CHAT_MODEL = "llama3.2"
THINKING_MODEL = "qwen3"
EMBED_MODEL = "nomic-embed-text"
CLAUDE_MODEL = "claude-sonnet-5-5"
CODEX_MODEL = "gpt-oss:20b"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.clients)
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def ollama_proxy(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    """The proxy as a user runs it: reverse mode, a key, and a model catalog naming the local models;
    flow_detail=1, so that every request logs its line (the tests read which routes a client used)."""
    tmp = tmp_path_factory.mktemp("clients")
    catalog = tmp / "models.toml"
    catalog.write_text(CATALOG)
    dump = Mitmdump(
        tmp,
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"model_catalog={catalog}",
        "flow_detail=1",
    )
    yield dump
    dump.stop()


def client_env(proxy_url: str) -> dict[str, str]:
    """The environment for a client process: no proxy variables that could send loopback traffic elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PROXY_URL"] = proxy_url
    return env


def _node_runner(proxy: Mitmdump, script: str, package: str, what: str) -> Callable[..., Any]:
    """Run one scenario of node/<script> against the proxy; its JSON result."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / package).is_dir():
        pytest.fail(f"{what} is not installed: run `make test-clients` (needs Node.js and npm)")

    def run(scenario: str, **params: Any) -> Any:
        done = subprocess.run(
            [node, str(NODE_DIR / script), scenario, json.dumps(params)],
            capture_output=True,
            text=True,
            timeout=60,
            env=client_env(proxy.url),
            cwd=NODE_DIR,
        )
        assert done.returncode == 0, f"node exited {done.returncode}: {done.stderr}"
        return json.loads(done.stdout)

    return run


@pytest.fixture
def js(ollama_proxy: Mitmdump) -> Callable[..., Any]:
    """Run one scenario of node/ollama_js.mjs with ollama-js against the proxy; its JSON result."""
    return _node_runner(ollama_proxy, "ollama_js.mjs", "ollama", "ollama-js")


@pytest.fixture
def vercel_ai(ollama_proxy: Mitmdump) -> Callable[..., Any]:
    """Run one scenario of node/vercel_ai.mjs with the Vercel AI SDK and ollama-ai-provider-v2; its JSON result."""
    return _node_runner(ollama_proxy, "vercel_ai.mjs", "ollama-ai-provider-v2", "the Vercel AI SDK")
