"""LlamaIndex's Ollama integrations (`llama-index-llms-ollama`, `llama-index-embeddings-ollama`) through the proxy."""

from __future__ import annotations

import asyncio
import base64
import json
import math

import pytest
from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.ollama import OllamaEmbedding
from llama_index.llms.ollama import Ollama
from pydantic import BaseModel

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CHAT_MODEL, EMBED_MODEL, THINKING_MODEL


@pytest.fixture
def llm(ollama_proxy: Mitmdump) -> Ollama:
    return Ollama(model=CHAT_MODEL, base_url=ollama_proxy.url, request_timeout=30, temperature=0.2)


def test_complete(llm: Ollama, upstream: UpstreamServer) -> None:
    answer = llm.complete("why is the sky blue")
    assert answer.text == "echo: why is the sky blue"
    sent = upstream.fake.requests[-1].body
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.2


def test_stream_complete(llm: Ollama) -> None:
    pieces = list(llm.stream_complete("a b c"))
    assert len(pieces) > 2 and pieces[-1].text == "echo: a b c"
    assert "".join(p.delta or "" for p in pieces) == "echo: a b c"


def test_chat(llm: Ollama) -> None:
    answer = llm.chat([ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hello")])
    assert answer.message.role == "assistant" and answer.message.content == "echo: hello"
    assert answer.raw["done"] is True and answer.raw["eval_count"] == 2


def test_stream_chat(llm: Ollama) -> None:
    pieces = list(llm.stream_chat([ChatMessage(role="user", content="one two three")]))
    assert len(pieces) > 2
    assert "".join(p.delta or "" for p in pieces) == "echo: one two three"
    assert pieces[-1].message.content == "echo: one two three"


async def test_async_chat_and_stream(llm: Ollama) -> None:
    answer = await llm.achat([ChatMessage(role="user", content="async hello")])
    assert answer.message.content == "echo: async hello"
    stream = await llm.astream_chat([ChatMessage(role="user", content="x y")])
    assert "".join([p.delta or "" async for p in stream]) == "echo: x y"


def test_json_mode_and_image(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    llm = Ollama(model=CHAT_MODEL, base_url=ollama_proxy.url, request_timeout=30, json_mode=True)
    upstream.fake.queue_reply('{"colour": "red"}')
    answer = llm.chat([ChatMessage(role="user", blocks=[TextBlock(text="which colour?"), ImageBlock(image=png)])])
    assert json.loads(answer.message.content) == {"colour": "red"}
    sent = upstream.fake.requests[-1].body
    assert sent["response_format"] == {"type": "json_object"}
    assert (
        sent["messages"][0]["content"][1]["image_url"]["url"]
        == "data:image/png;base64," + base64.b64encode(png).decode()
    )


def test_structured_predict(llm: Ollama, upstream: UpstreamServer) -> None:
    class Person(BaseModel):
        name: str
        age: int

    upstream.fake.queue_reply('{"name": "Ada", "age": 36}')
    person = llm.structured_predict(Person, PromptTemplate("Who is in this text? {text}"), text="Ada is 36.")
    assert person == Person(name="Ada", age=36)
    assert upstream.fake.requests[-1].body["response_format"]["type"] == "json_schema"


def test_thinking(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("42", thinking="six times seven")
    llm = Ollama(model=THINKING_MODEL, base_url=ollama_proxy.url, request_timeout=30, thinking=True)
    pieces = list(llm.stream_chat([ChatMessage(role="user", content="the answer?")]))
    assert "".join(p.additional_kwargs.get("thinking_delta") or "" for p in pieces) == "six times seven"
    assert pieces[-1].message.content == "42"


def test_tool_call_round_trip(llm: Ollama, upstream: UpstreamServer) -> None:
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    upstream.fake.queue_reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}])
    upstream.fake.queue_reply("2 + 3 = 5")
    tool = FunctionTool.from_defaults(fn=add)
    messages = [ChatMessage(role="user", content="What is 2 + 3?")]
    first = llm.chat_with_tools([tool], chat_history=messages)
    calls = llm.get_tool_calls_from_response(first, error_on_no_tool_call=True)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("add", {"a": 2, "b": 3})]
    messages.append(first.message)
    for call in calls:
        output = tool(**call.tool_kwargs)
        messages.append(
            ChatMessage(
                role="tool",
                content=str(output),
                additional_kwargs={"tool_call_id": call.tool_id, "tool_name": call.tool_name},
            )
        )
    final = llm.chat_with_tools([tool], chat_history=messages)
    assert final.message.content == "2 + 3 = 5"
    second_sent = upstream.fake.requests[-1].body
    sent_call = second_sent["messages"][1]["tool_calls"][0]
    assert json.loads(sent_call["function"]["arguments"]) == {"a": 2, "b": 3}
    assert second_sent["messages"][2]["role"] == "tool" and second_sent["messages"][2]["content"] == "5"
    assert second_sent["messages"][2]["tool_call_id"] == sent_call["id"]


def test_a_model_the_upstream_does_not_list_needs_context_window(ollama_proxy: Mitmdump) -> None:
    """Without `context_window`, LlamaIndex asks /api/show for it before the first request, and
    the proxy answers 404 for a model neither the catalog nor the upstream's list knows (as
    Ollama does). Chat itself would work (the upstream decides): give `context_window`."""
    unlisted = Ollama(model="served-but-unlisted", base_url=ollama_proxy.url, request_timeout=30)
    with pytest.raises(Exception, match="not found"):
        unlisted.complete("hi")
    explicit = Ollama(model="served-but-unlisted", base_url=ollama_proxy.url, request_timeout=30, context_window=8192)
    assert explicit.complete("hi").text == "echo: hi"


def test_embeddings(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    embed = OllamaEmbedding(model_name=EMBED_MODEL, base_url=ollama_proxy.url)
    one = embed.get_text_embedding("abc")
    assert len(one) == 4 and math.isclose(math.hypot(*one), 1)
    batch = embed.get_text_embedding_batch(["a", "bbb"])
    assert len(batch) == 2 and batch[0][0] < batch[1][0]
    query = embed.get_query_embedding("abc")
    assert query == pytest.approx(one)
    assert asyncio.run(embed.aget_text_embedding("abc")) == pytest.approx(one)
    assert upstream.fake.requests[-1].body["model"] == "text-embedding-3-small"
