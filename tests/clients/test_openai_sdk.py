"""The official `openai` SDK on the proxy's /v1 routes, the way VS Code Copilot Chat's Ollama provider uses them.

Copilot discovers models over the Ollama API (version, tags, show for each model) and then chats
over /v1/chat/completions: streamed, with tools, with usage, and sends the tool results back.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CHAT_MODEL

COPILOT_HEADERS = {"user-agent": "GitHubCopilotChat/0.38.0"}
READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file of the workspace",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
}


@pytest.fixture
def client(ollama_proxy: Mitmdump) -> openai.OpenAI:
    # Copilot's Ollama provider sends no real key; the proxy uses its own upstream key.
    return openai.OpenAI(base_url=f"{ollama_proxy.url}/v1", api_key="ollama", max_retries=0, timeout=30)


def test_copilot_discovery(ollama_proxy: Mitmdump) -> None:
    with httpx.Client(base_url=ollama_proxy.url, headers=COPILOT_HEADERS, timeout=30, trust_env=False) as http:
        version = http.get("/api/version").json()["version"]
        assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)
        models = [m["model"] for m in http.get("/api/tags").json()["models"]]
        assert "llama3.2:latest" in models
        show = http.post("/api/show", json={"model": "llama3.2:latest"}).json()
    info = show["model_info"]
    assert info["general.basename"] == "llama3.2:latest"
    assert info[f"{info['general.architecture']}.context_length"] == 128000
    assert {"tools", "vision"} <= set(show["capabilities"])


def test_model_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"llama3.2:latest", "nomic-embed-text:latest"} <= set(ids)
    assert client.models.retrieve("llama3.2:latest").id == "llama3.2:latest"


def test_streamed_chat_with_tools_round_trip(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("Let me look.", tool_calls=[{"name": "read_file", "arguments": {"path": "README.md"}}])
    upstream.fake.queue_reply("The README describes a proxy.")
    messages: list[dict] = [
        {"role": "system", "content": "You are an AI programming assistant."},
        {"role": "user", "content": "What does README.md say?"},
    ]
    request = {
        "model": "llama3.2:latest",
        "tools": [READ_FILE],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.1,
        "top_p": 1,
        "n": 1,
        "max_tokens": 4096,
    }

    text, calls, usage, models = "", {}, None, set()
    for chunk in client.chat.completions.create(messages=messages, **request):
        models.add(chunk.model)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                call["name"] += fragment.function.name or ""
                call["arguments"] += fragment.function.arguments or ""
    assert text == "Let me look."
    assert models == {"llama3.2:latest"}  # the name the client asked for, not the upstream's
    assert usage is not None and usage.prompt_tokens == 11
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("read_file", {"path": "README.md"})]
    first_sent = upstream.fake.requests[-1].body
    assert (
        first_sent["model"] == "gpt-4o-mini"
        and first_sent["tools"] == [READ_FILE]
        and first_sent["tool_choice"] == "auto"
    )

    call = calls[0]
    messages.append(
        {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "# Ollama-OpenAI Proxy"})
    answer = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(messages=messages, **request)
        if c.choices
    )
    assert answer == "The README describes a proxy."
    assert upstream.fake.requests[-1].body["messages"][-1] == messages[-1]


def test_non_streamed_chat(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi there"}])
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.model == CHAT_MODEL


def test_embeddings(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    result = client.embeddings.create(model="nomic-embed-text", input=["a", "bbb"])
    assert sorted(len(d.embedding) for d in result.data) == [4, 4]
    assert upstream.fake.requests[-1].body["model"] == "text-embedding-3-small"


def _stream_text(client: openai.OpenAI) -> str:
    chunks = client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_reset_upstream_stream_is_an_error(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    events = [
        f"data: {json.dumps({'object': 'chat.completion.chunk', 'model': 'm', 'choices': [{'index': 0, 'delta': {'content': w}, 'finish_reason': None}]})}\n\n".encode()
        for w in ("one", " two", " three")
    ]
    upstream.fake.queue(200, events, {"content-type": "text/event-stream"}, close_after=2)
    with pytest.raises(openai.APIError) as caught:  # the proxy's final error event (README: Compatibility)
        _stream_text(client)
    assert "broke off" in caught.value.message and not isinstance(caught.value, openai.APIConnectionError)


def test_a_stream_the_upstream_breaks_off_is_an_error(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    """The upstream ends its stream cleanly after some text, without finish reason or [DONE]. On
    /api/chat the proxy ends such a stream with an {"error"} line; on /v1 an `error` event would
    make the SDK raise APIError instead of returning the short text as a whole answer."""
    upstream.fake.queue_reply("cut short here", break_off=True)
    with pytest.raises(openai.APIError):
        _stream_text(client)


def test_unknown_model_is_an_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
