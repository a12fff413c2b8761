"""LangChain's Ollama integration (`langchain-ollama`): ChatOllama and OllamaEmbeddings through the proxy."""

from __future__ import annotations

import json
import math

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings, OllamaLLM
from pydantic import BaseModel, Field

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CHAT_MODEL, EMBED_MODEL, THINKING_MODEL


@tool
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's name")
    age: int = Field(description="the person's age in years")


@pytest.fixture
def chat(ollama_proxy: Mitmdump) -> ChatOllama:
    return ChatOllama(model=CHAT_MODEL, base_url=ollama_proxy.url, temperature=0.1, num_predict=256)


def test_invoke(chat: ChatOllama, upstream: UpstreamServer) -> None:
    answer = chat.invoke("why is the sky blue")
    assert isinstance(answer, AIMessage) and answer.content == "echo: why is the sky blue"
    assert answer.usage_metadata["input_tokens"] == 7 and answer.usage_metadata["output_tokens"] == 6
    assert answer.response_metadata["model"] == CHAT_MODEL and answer.response_metadata["done_reason"] == "stop"
    sent = upstream.fake.requests[-1].body
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.1 and sent["max_tokens"] == 256


def test_stream(chat: ChatOllama) -> None:
    chunks = list(chat.stream([HumanMessage("one two three")]))
    assert len(chunks) > 2
    assert "".join(c.content for c in chunks) == "echo: one two three"
    whole = sum(chunks[1:], chunks[0])
    assert whole.usage_metadata["input_tokens"] == 7 and whole.response_metadata["done_reason"] == "stop"


async def test_async_invoke_and_stream(chat: ChatOllama) -> None:
    answer = await chat.ainvoke("async hello")
    assert answer.content == "echo: async hello"
    assert "".join([c.content async for c in chat.astream("x y")]) == "echo: x y"


def test_ollama_llm_completion(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    llm = OllamaLLM(model=CHAT_MODEL, base_url=ollama_proxy.url)
    assert llm.invoke("a b") == "echo: a b"
    assert "".join(llm.stream("c d")) == "echo: c d"
    assert upstream.fake.requests[-1].body["messages"] == [{"role": "user", "content": "c d"}]  # /api/generate


def test_validate_model_on_init(ollama_proxy: Mitmdump) -> None:
    """ChatOllama can check at start that the model exists, through /api/tags."""
    ChatOllama(model=CHAT_MODEL, base_url=ollama_proxy.url, validate_model_on_init=True)
    with pytest.raises(ValueError, match="not found"):
        ChatOllama(model="no-such-model", base_url=ollama_proxy.url, validate_model_on_init=True)


def test_reasoning(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("42", thinking="six times seven")
    answer = ChatOllama(model=THINKING_MODEL, base_url=ollama_proxy.url, reasoning=True).invoke("the answer?")
    assert answer.content == "42" and answer.additional_kwargs["reasoning_content"] == "six times seven"
    assert upstream.fake.requests[-1].body["reasoning_effort"] == "medium"


def test_bind_tools_round_trip(chat: ChatOllama, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}])
    upstream.fake.queue_reply("2 + 3 = 5")
    with_tools = chat.bind_tools([add])
    messages = [HumanMessage("What is 2 + 3?")]
    first = with_tools.invoke(messages)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    messages.append(first)
    for call in first.tool_calls:
        messages.append(ToolMessage(str(add.invoke(call["args"])), tool_call_id=call["id"]))
    final = with_tools.invoke(messages)
    assert final.content == "2 + 3 = 5" and not final.tool_calls
    first_sent, second_sent = (r.body for r in upstream.fake.requests[-2:])
    assert first_sent["tools"][0]["function"]["name"] == "add"
    assert first_sent["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    sent_call = second_sent["messages"][1]["tool_calls"][0]
    assert json.loads(sent_call["function"]["arguments"]) == {"a": 2, "b": 3}
    assert second_sent["messages"][2] == {"role": "tool", "content": "5", "tool_call_id": sent_call["id"]}


def test_streamed_tool_call(chat: ChatOllama, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}])
    chunks = list(chat.bind_tools([add]).stream("What is 2 + 3?"))
    whole = sum(chunks[1:], chunks[0])
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [("add", {"a": 2, "b": 3})]


def test_image_input(chat: ChatOllama, upstream: UpstreamServer) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    message = HumanMessage(
        content=[
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": f"data:image/png;base64,{png}"},
        ]
    )
    assert chat.invoke([message]).content.split() == [
        "echo:",
        "describe",
    ]  # langchain-ollama joins text parts with "\n"
    parts = upstream.fake.requests[-1].body["messages"][0]["content"]
    assert parts[1]["image_url"]["url"] == f"data:image/png;base64,{png}"


def test_with_structured_output_json_schema(chat: ChatOllama, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply('{"name": "Ada", "age": 36}')
    person = chat.with_structured_output(Person).invoke("Ada is 36.")
    assert person == Person(name="Ada", age=36)
    response_format = upstream.fake.requests[-1].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["name", "age"]


def test_with_structured_output_function_calling(chat: ChatOllama, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply(tool_calls=[{"name": "Person", "arguments": {"name": "Ada", "age": 36}}])
    person = chat.with_structured_output(Person, method="function_calling").invoke("Ada is 36.")
    assert person == Person(name="Ada", age=36)
    assert upstream.fake.requests[-1].body["tools"][0]["function"]["name"] == "Person"


def test_with_structured_output_json_mode(chat: ChatOllama, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply('{"name": "Ada", "age": 36}')
    person = chat.with_structured_output(Person, method="json_mode").invoke("Ada is 36. Answer in JSON.")
    assert person == Person(name="Ada", age=36)
    assert upstream.fake.requests[-1].body["response_format"] == {"type": "json_object"}


def test_embeddings(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    embeddings = OllamaEmbeddings(model=EMBED_MODEL, base_url=ollama_proxy.url)
    documents = embeddings.embed_documents(["a", "bbb", "cc"])
    assert len(documents) == 3 and all(math.isclose(math.hypot(*v), 1) for v in documents)
    assert documents[0][0] < documents[2][0] < documents[1][0]  # in input order: lengths 1, 3, 2
    query = embeddings.embed_query("bbb")
    assert query == pytest.approx([v / math.sqrt(34) for v in (3, 0, 3, 4)])  # [len, index, 3, 4] normalised
    sent = upstream.fake.requests[-1].body
    assert sent["model"] == "text-embedding-3-small" and sent["input"] == ["bbb"]
