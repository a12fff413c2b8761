"""Simon Willison's `llm` CLI with the `llm-ollama` plugin (PyPI, pinned in requirements.txt) → the proxy's
/api/tags, /api/show, /api/chat, /api/embed → the loopback upstream.

The plugin names every model /api/tags lists `ollama/<name>` (and asks /api/show about each of them at
every start: with the fake upstream's 60-odd OpenAI models that is a dozen seconds a command, so this
proxy lists the catalog's models only). A prompt streamed and not, a tool round trip (`-T llm_version`,
a tool llm ships), and an embedding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CATALOG

LLM = Path(__file__).resolve().parents[2] / ".venv-clients" / "bin" / "llm"


@pytest.fixture(scope="module")
def catalog_proxy(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    tmp = tmp_path_factory.mktemp("llm")
    (tmp / "models.toml").write_text(CATALOG)
    dump = Mitmdump(
        tmp,
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"model_catalog={tmp / 'models.toml'}",
        "list_upstream_models=false",
        "flow_detail=1",
    )
    yield dump
    dump.stop()


@pytest.fixture
def llm(catalog_proxy: Mitmdump, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`llm <args>` with its own user dir, OLLAMA_HOST the proxy, nothing else of this machine's environment."""
    if not LLM.is_file() or shutil.which("llm", path=str(LLM.parent)) is None:
        pytest.fail(f"llm is not installed ({LLM} is missing): run `make clients-setup`")
    env = {"PATH": f"{LLM.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "LLM_USER_PATH": str(tmp_path / "llm")}
    env["OLLAMA_HOST"] = catalog_proxy.url

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(LLM), *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 0, f"llm {' '.join(args)} exited {done.returncode}: {done.stderr}"
        return done

    return run


def chat_requests(upstream: UpstreamServer) -> list:
    return [r for r in upstream.fake.requests if r.path.endswith("/chat/completions")]


def test_models_are_listed_with_the_plugins_prefix(llm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    listed = llm("models", "list").stdout
    assert "Ollama: ollama/llama3.2:latest (aliases: ollama/llama3.2)" in listed
    assert "ollama/nomic-embed-text" in llm("embed-models").stdout


def test_a_prompt_streamed_and_whole(
    llm: Callable[..., subprocess.CompletedProcess[str]], upstream: UpstreamServer
) -> None:
    upstream.fake.queue_reply("Hi there, from the fake upstream.")
    assert llm("-m", "ollama/llama3.2", "say hi").stdout.strip() == "Hi there, from the fake upstream."
    assert llm("-m", "ollama/llama3.2:latest", "--no-stream", "say hi").stdout.strip() == "echo: say hi"
    streamed, whole = chat_requests(upstream)
    assert streamed.body["stream"] is True and streamed.body["model"] == "gpt-4o-mini"
    assert whole.body.get("stream") is not True
    assert whole.body["messages"] == [{"role": "user", "content": "say hi"}]


def test_a_tool_round_trip(
    llm: Callable[..., subprocess.CompletedProcess[str]], upstream: UpstreamServer, catalog_proxy: Mitmdump
) -> None:
    upstream.fake.queue_reply("", [{"name": "llm_version", "arguments": {}}])
    upstream.fake.queue_reply("The version is known.")
    done = llm("-m", "ollama/llama3.2", "-T", "llm_version", "which version?", "--td")
    assert done.stdout.strip() == "The version is known."
    assert "Tool call: llm_version({})" in done.stderr
    first, second = chat_requests(upstream)
    assert [t["function"]["name"] for t in first.body["tools"]] == ["llm_version"]
    call, result = second.body["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "llm_version"
    assert result["role"] == "tool" and result["content"].strip() == "0.36", "the tool's output went back upstream"
    assert catalog_proxy.log().count("POST /api/chat llama3.2:latest → /v1/chat/completions gpt-4o-mini · 200") >= 2


def test_an_embedding(llm: Callable[..., subprocess.CompletedProcess[str]], upstream: UpstreamServer) -> None:
    vector = json.loads(llm("embed", "-m", "ollama/nomic-embed-text", "-c", "hello").stdout)
    # The fake upstream's [len("hello"), 0, 3, 4], normalised as Ollama's /api/embed answers it.
    assert vector == pytest.approx([5 / 50**0.5, 0.0, 3 / 50**0.5, 4 / 50**0.5])
    (sent,) = [r for r in upstream.fake.requests if r.path.endswith("/embeddings")]
    assert sent.body["model"] == "text-embedding-3-small" and sent.body["input"] == ["hello"]
