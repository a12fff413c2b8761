"""Ollama's cloud routes through a real mitmdump (addon/endpoints/ollama_cloud.py): /api/status answered as
Ollama ≥ 0.12 answers it with its cloud disabled, the experimental web routes refused in Ollama's words
and saying why; nothing goes upstream."""

from __future__ import annotations

import httpx
import pytest

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e


def test_status_says_the_cloud_is_disabled(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    answer = httpx.get(f"{proxy.url}/api/status", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"cloud": {"disabled": True, "source": "config"}}
    assert httpx.post(f"{proxy.url}/api/status", timeout=10).status_code == 405, "GET only, as Ollama's route"
    assert upstream.fake.requests == []


@pytest.mark.parametrize(("path", "what"), [("web_search", "web search"), ("web_fetch", "web fetch")])
def test_web_tools_are_refused_as_with_the_cloud_disabled(
    proxy: Mitmdump, upstream: UpstreamServer, path: str, what: str
) -> None:
    url = f"{proxy.url}/api/experimental/{path}"
    answer = httpx.post(url, json={"query": "ollama", "url": "https://ollama.com"}, timeout=10)
    assert answer.status_code == 403
    message = answer.json()["error"]
    assert message.startswith(f"ollama cloud is disabled: {what} is unavailable (")
    assert "Ollama-OpenAI proxy" in message and "sends nothing to ollama.com" in message
    empty = httpx.post(url, content=b"  ", timeout=10)
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    assert httpx.get(url, timeout=10).status_code == 405
    assert upstream.fake.requests == []
