"""Ollama's capability rules (addon/catalog/capabilities.py) on every route that names a model, through the
addon's hooks: what the model cannot do is answered 400 in the route's own shape, with Ollama's words
(server/routes.go), and nothing goes upstream; what it can do goes upstream as before."""

from __future__ import annotations

import json

import pytest

from addon.catalog.capabilities import full_ollama_name, go_quoted, refusal
from addon.catalog.catalog import Catalog, infer
from addon.proxy import OllamaProxy
from harness.inproc import client_flow, configured_proxy

CATALOG = """
[models."nomic-embed-text"]
upstream = "text-embedding-3-small"

[models."plain"]
upstream = "gpt-4o-mini"
capabilities = ["completion"]

[models."coder"]
upstream = "qwen2.5-coder"

[models."thinker"]
upstream = "gpt-4o-mini"
capabilities = ["completion", "tools", "thinking"]
"""
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
ANTHROPIC_TOOLS = [{"name": "f", "input_schema": {"type": "object"}}]
UPSTREAM = "https://api.example.com/v1/"


@pytest.fixture
def addon():
    with configured_proxy(CATALOG, openai_base_url=UPSTREAM.rstrip("/")) as (proxy, _):
        yield proxy


def answer(addon: OllamaProxy, path: str, body: dict) -> tuple[int, dict | None, str]:
    """(status, the JSON answer, the URL the request went to): an answer means nothing went upstream."""
    flow = client_flow(path, body)
    addon.request(flow)
    if flow.response is None:
        return 0, None, flow.request.url
    assert flow.request.url.startswith("http://127.0.0.1:11434/"), "refused: nothing went upstream"
    return flow.response.status_code, json.loads(flow.response.content), flow.request.url


def test_the_rules_and_their_words() -> None:
    embed, plain, coder = infer("nomic-embed-text"), infer("x"), infer("qwen2.5-coder")
    assert refusal(embed, "nomic-embed-text", "chat") == '"nomic-embed-text" does not support chat'
    assert refusal(embed, "nomic-embed-text", "generate") == '"nomic-embed-text" does not support generate'
    assert refusal(embed, "e", "chat", think=True) == '"e" does not support thinking', "thinking is checked first"
    assert refusal(plain, "x", "chat", tools=True) is None, "inferred chat models have tools"
    assert refusal(plain, "x", "generate", insert=True) == "registry.ollama.ai/library/x:latest does not support insert"
    assert refusal(coder, "qwen2.5-coder", "generate", insert=True) is None
    assert refusal(infer("qwen3"), "qwen3", "chat", think=True) is None
    assert refusal(infer("gpt-4o-audio-preview"), "gpt-4o-audio-preview", "chat") is None, "a chat model"
    assert refusal(infer("whisper-1"), "whisper-1", "chat") == '"whisper-1" does not support chat'
    no_tools = Catalog.parse({"models": {"p": {"capabilities": ["completion"]}}}).get("p")
    assert refusal(no_tools, "p:7b", "chat", tools=True) == "registry.ollama.ai/library/p:7b does not support tools"


def test_names_as_ollama_prints_them() -> None:
    assert full_ollama_name("llama3.2") == "registry.ollama.ai/library/llama3.2:latest"
    assert full_ollama_name("qwen3:8b") == "registry.ollama.ai/library/qwen3:8b"
    assert full_ollama_name("meta-llama/llama-3.1-8b") == "registry.ollama.ai/meta-llama/llama-3.1-8b:latest"
    assert full_ollama_name("hf.co/bartowski/m:Q4_K_M") == "hf.co/bartowski/m:Q4_K_M"
    assert full_ollama_name("localhost:5000/ns/m") == "localhost:5000/ns/m:latest"
    assert go_quoted('a"b') == '"a\\"b"'


def test_ollama_routes(addon) -> None:
    status, body, _ = answer(addon, "/api/chat", {"model": "nomic-embed-text", "messages": HI})
    assert (status, body) == (400, {"error": '"nomic-embed-text" does not support chat'})
    status, body, _ = answer(addon, "/api/generate", {"model": "nomic-embed-text", "prompt": "hi"})
    assert (status, body) == (400, {"error": '"nomic-embed-text" does not support generate'})
    status, body, _ = answer(addon, "/api/chat", {"model": "plain", "messages": HI, "tools": TOOLS})
    assert (status, body) == (400, {"error": "registry.ollama.ai/library/plain:latest does not support tools"})
    status, body, _ = answer(addon, "/api/chat", {"model": "plain", "messages": HI, "think": "high"})
    assert (status, body) == (400, {"error": '"plain" does not support thinking'})
    status, body, _ = answer(addon, "/api/generate", {"model": "plain", "prompt": "a", "suffix": "b"})
    assert (status, body) == (400, {"error": "registry.ollama.ai/library/plain:latest does not support insert"})
    # Loading an embedding model for chat is refused too; unloading it is not (Ollama unloads first).
    status, body, _ = answer(addon, "/api/chat", {"model": "nomic-embed-text", "messages": []})
    assert status == 400 and body == {"error": '"nomic-embed-text" does not support chat'}
    status, body, _ = answer(addon, "/api/chat", {"model": "nomic-embed-text", "keep_alive": 0, "stream": False})
    assert status == 200 and body is not None and body["done_reason"] == "unload"


def test_what_the_model_can_do_goes_upstream(addon) -> None:
    for path, body in (
        ("/api/chat", {"model": "plain", "messages": HI, "think": False}),
        ("/api/chat", {"model": "thinker", "messages": HI, "think": True, "tools": TOOLS}),
        ("/api/generate", {"model": "coder", "prompt": "a", "suffix": "b"}),
        ("/api/embed", {"model": "plain", "input": "hi"}),  # Ollama embeds with any model: no rule
        ("/v1/embeddings", {"model": "plain", "input": "hi"}),
        ("/v1/chat/completions", {"model": "thinker", "messages": HI, "reasoning_effort": "low"}),
        ("/v1/chat/completions", {"model": "plain", "messages": HI, "reasoning_effort": "none"}),
        ("/v1/messages", {"model": "plain", "max_tokens": 8, "messages": HI, "thinking": {"type": "adaptive"}}),
    ):
        status, _, url = answer(addon, path, body)
        assert status == 0 and url.startswith(UPSTREAM), (path, body)


def test_openai_routes_in_openai_shape(addon) -> None:
    def error(message: str) -> dict:
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}

    status, body, _ = answer(addon, "/v1/chat/completions", {"model": "nomic-embed-text", "messages": HI})
    assert (status, body) == (400, error('"nomic-embed-text" does not support chat'))
    status, body, _ = answer(addon, "/v1/completions", {"model": "nomic-embed-text", "prompt": "hi"})
    assert (status, body) == (400, error('"nomic-embed-text" does not support generate'))
    status, body, _ = answer(addon, "/v1/completions", {"model": "plain", "prompt": "a", "suffix": "b"})
    assert (status, body) == (400, error("registry.ollama.ai/library/plain:latest does not support insert"))
    status, body, _ = answer(
        addon, "/v1/chat/completions", {"model": "plain", "messages": HI, "reasoning": {"effort": "minimal"}}
    )
    assert (status, body) == (400, error('"plain" does not support thinking'))
    status, body, _ = answer(addon, "/v1/chat/completions", {"model": "plain", "messages": HI, "tools": TOOLS})
    assert (status, body) == (400, error("registry.ollama.ai/library/plain:latest does not support tools"))
    status, body, _ = answer(addon, "/v1/responses", {"model": "nomic-embed-text", "input": "hi"})
    assert (status, body) == (400, error('"nomic-embed-text" does not support chat'))
    status, body, _ = answer(addon, "/v1/responses", {"model": "plain", "input": "hi", "tools": TOOLS})
    assert (status, body) == (400, error("registry.ollama.ai/library/plain:latest does not support tools"))


def test_anthropic_route_in_anthropic_shape(addon) -> None:
    status, body, _ = answer(addon, "/v1/messages", {"model": "nomic-embed-text", "max_tokens": 8, "messages": HI})
    assert status == 400 and body is not None
    assert body["type"] == "error" and body["error"] == {
        "type": "invalid_request_error",
        "message": '"nomic-embed-text" does not support chat',
    }
    status, body, _ = answer(
        addon, "/v1/messages", {"model": "plain", "max_tokens": 8, "messages": HI, "tools": ANTHROPIC_TOOLS}
    )
    assert status == 400 and body is not None
    assert body["error"]["message"] == "registry.ollama.ai/library/plain:latest does not support tools"
