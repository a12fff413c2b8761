"""Proxy mode (docs/clients.md "Proxy mode (HTTP_PROXY)"): clients left pointing at an Ollama address, with HTTP_PROXY set.

The Ollama host is `ollama.invalid:11434`, a name that never resolves: an answer can only come
through the proxy.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings
from llama_index.llms.ollama import Ollama

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import NODE_DIR, client_env

OLLAMA_URL = "http://ollama.invalid:11434"


@pytest.fixture
def regular(spawn, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch) -> Mitmdump:
    dump = spawn("regular", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}")
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", dump.url)
    return dump


def test_langchain_through_http_proxy(regular: Mitmdump, upstream: UpstreamServer) -> None:
    assert ChatOllama(model="llama3.2", base_url=OLLAMA_URL).invoke("via proxy").content == "echo: via proxy"
    assert len(OllamaEmbeddings(model="nomic-embed-text", base_url=OLLAMA_URL).embed_query("abc")) == 4
    assert upstream.fake.requests[-1].path == "/v1/embeddings"


def test_llamaindex_through_http_proxy(regular: Mitmdump) -> None:
    llm = Ollama(model="gpt-4o-mini", base_url=OLLAMA_URL, request_timeout=30)  # a model the upstream lists
    assert llm.complete("via proxy").text == "echo: via proxy"


def test_ollama_js_ignores_http_proxy(regular: Mitmdump, upstream: UpstreamServer) -> None:
    """Node.js 20's fetch does not read HTTP_PROXY: ollama-js needs reverse mode (docs/clients.md says so).
    If this fails, Node.js has started to honour the variable: update the compatibility table in docs/clients.md."""
    env = {**client_env(OLLAMA_URL), "HTTP_PROXY": regular.url, "http_proxy": regular.url}
    done = subprocess.run(
        [shutil.which("node"), str(NODE_DIR / "ollama_js.mjs"), "version", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=NODE_DIR,
    )
    assert '"threw"' in done.stdout and "fetch failed" in done.stdout, done.stdout
    assert upstream.fake.requests == []
