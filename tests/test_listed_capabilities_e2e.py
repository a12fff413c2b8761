"""Capabilities an upstream server states in its GET /models entries, end to end: a real mitmdump in
front of the fake upstream, whose list gives an embedding-only model a name that does not say so.
Ollama's rules then answer as Ollama does (400 `"NAME" does not support chat` / `generate`) on the
chat and generate routes of every family, nothing goes upstream, and /api/show and /api/tags show
the capabilities the entry states; embeddings still go upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

EMBEDDER = "acme-retrieval-v2"  # the name alone would make it a chat model with tools
LISTING = [
    # Together AI's shape (type "embedding")
    {"id": EMBEDDER, "object": "model", "created": 1700000002, "type": "embedding", "context_length": 8192},
    # OpenRouter's shape (architecture.output_modalities ["embeddings"])
    {
        "id": "acme/notes-v1",
        "object": "model",
        "created": 1700000001,
        "architecture": {"input_modalities": ["text"], "output_modalities": ["embeddings"]},
        "context_length": 32768,
    },
    # Mistral's shape: a chat model without function calling
    {
        "id": "acme-chat",
        "object": "model",
        "created": 1700000000,
        "capabilities": {"completion_chat": True, "function_calling": False, "vision": False, "completion_fim": False},
        "max_context_length": 65536,
        "type": "base",
    },
]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture
def listed(upstream: UpstreamServer, spawn: Callable[..., Mitmdump]) -> Iterator[httpx.Client]:
    upstream.fake.models = LISTING
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}")
    with httpx.Client(base_url=dump.url, timeout=20) as client:
        yield client


def message_of(answer: httpx.Response) -> str:
    """The error's message in the route's family shape (Ollama's string; OpenAI's, Anthropic's object)."""
    error = answer.json()["error"]
    return error if isinstance(error, str) else error["message"]


def upstream_routes(upstream: UpstreamServer) -> list[str]:
    return [r.path for r in upstream.fake.requests if r.method == "POST"]


def test_an_embedding_model_by_its_list_entry(listed: httpx.Client, upstream: UpstreamServer) -> None:
    tags = {m["name"]: m for m in listed.get("/api/tags").json()["models"]}
    assert tags[f"{EMBEDDER}:latest"]["capabilities"] == ["embedding"]
    assert tags["acme/notes-v1:latest"]["capabilities"] == ["embedding"]
    assert tags["acme-chat:latest"]["capabilities"] == ["completion"]
    show = listed.post("/api/show", json={"model": EMBEDDER}).json()
    assert (show["capabilities"], show["model_info"]["acme.context_length"]) == (["embedding"], 8192)
    assert listed.post("/api/show", json={"model": "acme-chat"}).json()["capabilities"] == ["completion"]

    quoted = f'"{EMBEDDER}"'
    chat = {"model": EMBEDDER, "messages": [{"role": "user", "content": "hi"}]}
    refusals = [
        ("/api/chat", chat, f"{quoted} does not support chat"),
        ("/api/chat", {**chat, "stream": False}, f"{quoted} does not support chat"),
        ("/api/generate", {"model": EMBEDDER, "prompt": "hi"}, f"{quoted} does not support generate"),
        ("/v1/chat/completions", chat, f"{quoted} does not support chat"),
        ("/v1/completions", {"model": EMBEDDER, "prompt": "hi"}, f"{quoted} does not support generate"),
        ("/v1/messages", {**chat, "max_tokens": 10}, f"{quoted} does not support chat"),
        ("/v1/responses", {"model": EMBEDDER, "input": "hi"}, f"{quoted} does not support chat"),
        ("/api/chat", {**chat, "model": "acme/notes-v1"}, '"acme/notes-v1" does not support chat'),
        (
            "/api/chat",
            {**chat, "model": "acme-chat", "tools": TOOLS},
            "registry.ollama.ai/library/acme-chat:latest does not support tools",
        ),
    ]
    for path, body, message in refusals:
        answer = listed.post(path, json=body)
        assert answer.status_code == 400, (path, answer.text)
        assert message_of(answer) == message, (path, answer.text)
    assert listed.post("/api/chat", json=chat).json() == {"error": f"{quoted} does not support chat"}
    assert listed.post("/api/generate", json={"model": EMBEDDER, "prompt": "hi"}).json() == {
        "error": f"{quoted} does not support generate"
    }
    assert upstream_routes(upstream) == []  # nothing went upstream

    embedded = listed.post("/api/embed", json={"model": EMBEDDER, "input": "hi"})
    assert embedded.status_code == 200 and embedded.json()["embeddings"]
    answered = listed.post("/api/chat", json={**chat, "model": "acme-chat", "stream": False})
    assert answered.status_code == 200, answered.text
    assert [p.rsplit("/", 1)[-1] for p in upstream_routes(upstream)] == ["embeddings", "completions"]
