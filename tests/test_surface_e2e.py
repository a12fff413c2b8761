"""End to end, the whole Ollama surface: chat features, embeddings, discovery, catalog, /v1 routes.

Official `ollama` SDK (and `openai` SDK for /v1) → a real mitmdump with the addon → the loopback upstream.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer, recording

pytestmark = pytest.mark.e2e

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 16).decode()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Gets current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {"latitude": {"type": "string"}, "longitude": {"type": "string"}},
            "required": ["latitude", "longitude"],
        },
    },
}
CATALOG = """
[models."llama3.2:latest"]      # the name Ollama clients use
upstream = "gpt-4o-mini"        # the model id sent upstream
context_length = 128000
capabilities = ["completion", "tools", "vision"]
description = "gpt-4o-mini under a local name"

[models."local-thinker"]
upstream = "qwen3-32b"
capabilities = ["completion", "thinking"]
think_style = "chat_template_kwargs"

[models."nomic-embed-text"]
upstream = "text-embedding-3-small"
capabilities = ["embedding"]
"""
MODELS = [
    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
    {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"},
    {
        "id": "meta-llama/llama-3.1-8b",
        "object": "model",
        "created": 1700000000,
        "owned_by": "meta",
        "context_length": 131072,
    },
    {"id": "qwen3:8b", "object": "model", "created": 1700000001, "owned_by": "library"},
]


@pytest.fixture
def client(proxy: Mitmdump) -> ollama.Client:
    return ollama.Client(host=proxy.url, timeout=20)


@pytest.fixture(scope="module")
def _catalog_dump(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    tmp = tmp_path_factory.mktemp("catalog")
    path = tmp / "models.toml"
    path.write_text(CATALOG)
    dump = Mitmdump(
        tmp, "reverse", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", f"model_catalog={path}"
    )
    yield dump
    dump.stop()


@pytest.fixture(scope="module")
def _listing_dump(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    dump = Mitmdump(
        tmp_path_factory.mktemp("listing"),
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
    )
    yield dump
    dump.stop()


@pytest.fixture
def listing_proxy(_listing_dump: Mitmdump, upstream: UpstreamServer) -> Mitmdump:
    """A proxy without catalog in front of an upstream that lists MODELS (the list stays cached between tests)."""
    upstream.fake.models = MODELS
    return _listing_dump


@pytest.fixture(scope="module")
def _options_dump(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    dump = Mitmdump(
        tmp_path_factory.mktemp("options"),
        "reverse",
        f"openai_base_url={upstream.base_url}",
        "think_style=chat_template_kwargs",
        "models_ttl=0",
    )
    yield dump
    dump.stop()


@pytest.fixture
def catalog_proxy(_catalog_dump: Mitmdump, upstream: UpstreamServer) -> Mitmdump:
    """A proxy with a model catalog, in front of an upstream that lists MODELS."""
    upstream.fake.models = MODELS
    return _catalog_dump


def sse(*events: dict, done: bool = True) -> list[bytes]:
    chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
    return chunks + ([b"data: [DONE]\n\n"] if done else [])


def delta(delta: dict, finish: str | None = None, **extra) -> dict:
    return {
        "object": "chat.completion.chunk",
        "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
    }


def completion(message: dict, finish: str = "stop", **extra) -> dict:
    return {
        "object": "chat.completion",
        "model": "up",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **extra}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


# ---------------------------------------------------------------------------------------------
# Chat features


def test_multi_turn_tool_conversation(client: ollama.Client, upstream: UpstreamServer) -> None:
    messages = [{"role": "user", "content": "What's the weather in Berlin? (52.5200, 13.4050)"}]
    first = client.chat(model="rec:chat/tool-call-single", messages=messages, tools=[WEATHER_TOOL])
    assert upstream.fake.requests[-1].body["tools"] == [WEATHER_TOOL]
    (call,) = first.message.tool_calls
    assert call.function.name == "weather" and call.function.arguments == {
        "latitude": "52.5200",
        "longitude": "13.4050",
    }
    raw = httpx.post(
        client._client.base_url.join("/api/chat"),
        json={"model": "rec:chat/tool-call-single", "messages": messages, "stream": False},
    ).json()
    assert raw["message"]["tool_calls"] == [
        {
            "id": "call_Og7v77uIUeIdy1ff3ntB9Vh7",
            "function": {"index": 0, "name": "weather", "arguments": {"latitude": "52.5200", "longitude": "13.4050"}},
        }
    ]
    assert raw["done_reason"] == "stop", "Ollama has no tool_calls done_reason"

    # Second turn: the SDK sends the call back (without its id, as ollama-python does) and a tool result by name.
    messages += [first.message, {"role": "tool", "tool_name": "weather", "content": "12 °C, cloudy"}]
    second = client.chat(model="weather-bot", messages=messages, tools=[WEATHER_TOOL])
    sent = upstream.fake.requests[-1].body["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] is None
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {
        "latitude": "52.5200",
        "longitude": "13.4050",
    }
    assert sent[2] == {"role": "tool", "tool_call_id": sent[1]["tool_calls"][0]["id"], "content": "12 °C, cloudy"}
    assert second.message.content == "echo: What's the weather in Berlin? (52.5200, 13.4050)"

    # With the ids current Ollama clients send (ollama-python 0.6.3 drops them; ollama-js keeps them), they are kept.
    with_ids = [
        messages[0],
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_abc", "function": {"index": 0, "name": "weather", "arguments": {"latitude": "1"}}}
            ],
        },
        {"role": "tool", "tool_name": "weather", "tool_call_id": "call_abc", "content": "sunny"},
    ]
    assert (
        httpx.post(
            client._client.base_url.join("/api/chat"),
            json={"model": "weather-bot", "messages": with_ids, "stream": False},
        ).status_code
        == 200
    )
    sent = upstream.fake.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_abc" and sent[2]["tool_call_id"] == "call_abc"


@pytest.mark.parametrize(
    "name", ["tool-call-fragments", "tool-call-fragments-role-in-first-tool-chunk", "tool-calls-parallel"]
)
def test_streamed_tool_calls_arrive_whole(client: ollama.Client, name: str) -> None:
    parts = list(client.chat(model=f"rec:chat-stream/{name}", messages=[{"role": "user", "content": "x"}], stream=True))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert calls and all(isinstance(c.function.arguments, dict) and c.function.arguments for c in calls)
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_invalid_tool_arguments_fall_back_to_empty_object(
    client: ollama.Client, proxy: Mitmdump, upstream: UpstreamServer
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    upstream.fake.queue(body=completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"))
    answer = client.chat(model="broken-args", messages=[{"role": "user", "content": "x"}])
    assert answer.message.tool_calls[0].function.arguments == {}
    time.sleep(0.2)
    assert any("broken-args" in line and "not a JSON object" in line for line in proxy.log().splitlines())


def test_images_on_chat_and_generate(client: ollama.Client, upstream: UpstreamServer) -> None:
    client.chat(model="m", messages=[{"role": "user", "content": "what is this", "images": [PNG]}])
    content = upstream.fake.requests[-1].body["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    client.generate(model="m", prompt="describe", images=[JPEG])
    content = upstream.fake.requests[-1].body["messages"][-1]["content"]
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    bad = httpx.post(
        client._client.base_url.join("/api/generate"),
        json={"model": "m", "prompt": "describe", "images": ["not base64!"]},
    )
    assert bad.status_code == 400 and "invalid image" in bad.json()["error"]


def test_thinking_both_ways(client: ollama.Client, upstream: UpstreamServer) -> None:
    for think, effort in ((True, "medium"), ("low", "low"), ("high", "high")):
        client.chat(model="qwen3", messages=[{"role": "user", "content": "x"}], think=think)
        assert upstream.fake.requests[-1].body["reasoning_effort"] == effort
    client.chat(model="qwen3", messages=[{"role": "user", "content": "x"}], think=False)
    assert "reasoning_effort" not in upstream.fake.requests[-1].body
    upstream.fake.queue(
        body=sse(
            delta({"reasoning_content": "let me "}), delta({"reasoning": "see"}), delta({"content": "42"}, "stop")
        ),
        headers={"content-type": "text/event-stream"},
    )
    parts = list(client.chat(model="qwen3", messages=[{"role": "user", "content": "x"}], think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "let me see"
    assert "".join(p.message.content for p in parts) == "42"
    upstream.fake.queue(body=completion({"role": "assistant", "content": "42", "reasoning_content": "thought"}))
    answer = client.generate(model="qwen3", prompt="x", think=True)
    assert (answer.thinking, answer.response) == ("thought", "42")


def test_think_style_chat_template_kwargs(_options_dump: Mitmdump, upstream: UpstreamServer) -> None:
    client = ollama.Client(host=_options_dump.url, timeout=20)  # qwen3: a name that can think (inferred)
    client.chat(model="qwen3", messages=[{"role": "user", "content": "x"}], think="high")
    body = upstream.fake.requests[-1].body
    assert body["chat_template_kwargs"] == {"enable_thinking": True} and "reasoning_effort" not in body
    client.chat(model="qwen3", messages=[{"role": "user", "content": "x"}], think=False)
    assert upstream.fake.requests[-1].body["chat_template_kwargs"] == {"enable_thinking": False}
    client.chat(model="m", messages=[{"role": "user", "content": "x"}])
    assert "chat_template_kwargs" not in upstream.fake.requests[-1].body


class Answer(BaseModel):
    final_answer: str


def test_structured_output_json_and_schema(client: ollama.Client, upstream: UpstreamServer) -> None:
    client.chat(model="m", messages=[{"role": "user", "content": "x"}], format="json")
    assert upstream.fake.requests[-1].body["response_format"] == {"type": "json_object"}
    schema = Answer.model_json_schema()
    parts = list(
        client.chat(
            model="rec:chat-stream/json-schema",
            messages=[{"role": "user", "content": "2+2"}],
            format=schema,
            stream=True,
        )
    )
    sent = upstream.fake.requests[-1].body["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}}, (
        "pydantic schemas are not strict-compatible"
    )
    assert json.loads("".join(p.message.content for p in parts))["author"]["last_name"] == "Rothfuss"
    strict = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    client.chat(model="m", messages=[{"role": "user", "content": "x"}], format=strict)
    assert upstream.fake.requests[-1].body["response_format"]["json_schema"]["strict"] is True


def test_logprobs_both_ways(client: ollama.Client, upstream: UpstreamServer) -> None:
    def lp(token: str) -> dict:
        return {
            "content": [
                {
                    "token": token,
                    "logprob": -0.5,
                    "bytes": list(token.encode()),
                    "top_logprobs": [{"token": token, "logprob": -0.5, "bytes": list(token.encode())}],
                }
            ]
        }

    upstream.fake.queue(
        body=sse(
            delta({"content": "Hi"}, logprobs=lp("Hi")), delta({"content": "!"}, logprobs=lp("!")), delta({}, "stop")
        ),
        headers={"content-type": "text/event-stream"},
    )
    parts = list(
        client.chat(model="m", messages=[{"role": "user", "content": "x"}], logprobs=True, top_logprobs=1, stream=True)
    )
    body = upstream.fake.requests[-1].body
    assert body["logprobs"] is True and body["top_logprobs"] == 1
    tokens = [item.token for p in parts for item in (p.logprobs or [])]
    assert tokens == ["Hi", "!"]
    assert parts[0].logprobs[0].top_logprobs[0].logprob == -0.5
    upstream.fake.queue(body=completion({"role": "assistant", "content": "Hi"}, logprobs=lp("Hi")))
    answer = client.chat(model="m", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert [item.token for item in answer.logprobs] == ["Hi"]
    # A stream gathered into one answer (stream: false, upstream streams anyway) keeps them all.
    upstream.fake.queue(
        body=sse(
            delta({"content": "a"}, logprobs=lp("a")), delta({"content": "b"}, logprobs=lp("b")), delta({}, "stop")
        ),
        headers={"content-type": "text/event-stream"},
    )
    answer = client.chat(model="m", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert [item.token for item in answer.logprobs] == ["a", "b"]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "length"), ("tool_calls", "stop"), ("content_filter", "stop"), ("stop", "stop")]
)
def test_finish_reasons_map_to_done_reason(
    client: ollama.Client, upstream: UpstreamServer, finish: str, reason: str
) -> None:
    upstream.fake.queue(
        body=sse(delta({"content": "a"}), delta({}, finish)), headers={"content-type": "text/event-stream"}
    )
    parts = list(client.chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert parts[-1].done_reason == reason
    upstream.fake.queue(body=completion({"role": "assistant", "content": "a"}, finish))
    assert client.generate(model="m", prompt="x").done_reason == reason


def test_refusal_is_the_content(client: ollama.Client) -> None:
    parts = list(client.chat(model="rec:chat-stream/refusal", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "".join(p.message.content for p in parts).strip()
    answer = client.chat(model="rec:chat/refusal", messages=[{"role": "user", "content": "x"}])
    assert answer.message.content == recording("chat/refusal")["response"]["body"]["choices"][0]["message"]["refusal"]


def test_unknown_model_on_generate_is_404(client: ollama.Client) -> None:
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as error:
            result = client.generate(model="missing-model", prompt="x", stream=stream)
            if stream:
                list(result)
        assert (error.value.status_code, error.value.error) == (404, "model 'missing-model' not found")


# ---------------------------------------------------------------------------------------------
# Embeddings


def test_embed_batch_order_normalisation_and_counts(client: ollama.Client, upstream: UpstreamServer) -> None:
    answer = client.embed(model="text-embedding-3-small", input=["one two", "three", "four five six"])
    sent = upstream.fake.requests[-1]
    assert (sent.path, sent.body) == (
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["one two", "three", "four five six"], "encoding_format": "float"},
    )
    assert answer.model == "text-embedding-3-small" and answer.prompt_eval_count == 6
    assert answer.total_duration > 0 and answer.load_duration == 0
    assert len(answer.embeddings) == 3
    for index, (text, vector) in enumerate(zip(["one two", "three", "four five six"], answer.embeddings, strict=True)):
        raw = [len(text), index, 3.0, 4.0]
        norm = math.sqrt(sum(v * v for v in raw))
        assert vector == pytest.approx([v / norm for v in raw]), "batch order kept, L2-normalised"


def test_embed_single_string_dimensions_and_options(client: ollama.Client, upstream: UpstreamServer) -> None:
    answer = client.embed(model="e", input="hello", dimensions=2, truncate=True, options={"num_ctx": 512})
    assert upstream.fake.requests[-1].body["dimensions"] == 2
    assert answer.embeddings == [pytest.approx([1.0, 0.0])], (
        "cut to the dimensions the upstream ignored, then normalised"
    )
    recorded = client.embed(model="rec:embeddings/dimensions", input="x")
    assert len(recorded.embeddings[0]) == 256 and math.isclose(
        sum(v * v for v in recorded.embeddings[0]), 1.0, rel_tol=1e-6
    )


def test_embed_edge_cases(client: ollama.Client, proxy: Mitmdump, upstream: UpstreamServer) -> None:
    assert client.embed(model="e", input=[]).embeddings == []
    assert upstream.fake.requests == []
    response = httpx.post(proxy.url + "/api/embed", json={"model": "e", "input": ["a", 3]})
    assert (response.status_code, response.json()) == (400, {"error": "invalid input type"})
    with pytest.raises(ollama.ResponseError) as error:
        client.embed(model="missing-model", input="x")
    assert (error.value.status_code, error.value.error) == (
        404,
        'model "missing-model" not found, try pulling it first',
    )


def test_legacy_embeddings(client: ollama.Client, upstream: UpstreamServer) -> None:
    answer = client.embeddings(model="e", prompt="abc")
    assert upstream.fake.requests[-1].body["input"] == ["abc"]
    assert answer.embedding == [3.0, 0.0, 3.0, 4.0], "legacy vectors are not normalised"
    recorded = client.embeddings(model="rec:embeddings/single-input-float", prompt="x")
    assert recorded.embedding == recording("embeddings/single-input-float")["response"]["body"]["data"][0]["embedding"]
    assert client.embeddings(model="e", prompt="").embedding == []


# ---------------------------------------------------------------------------------------------
# Discovery and management


def test_tags_show_ps_from_the_upstream_list(listing_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    dump = listing_proxy
    client = ollama.Client(host=dump.url, timeout=20)
    models = client.list().models
    assert [m.model for m in models] == [
        "gpt-4o-mini:latest",
        "text-embedding-3-small:latest",
        "qwen3:8b",
        "meta-llama/llama-3.1-8b:latest",
    ]
    raw = httpx.get(dump.url + "/api/tags").json()["models"]
    assert all(m["name"] == m["model"] and len(m["digest"]) == 64 and isinstance(m["size"], int) for m in raw)
    assert raw[0]["details"]["family"] == "gpt" and raw[3]["details"]["context_length"] == 131072
    assert raw[1]["capabilities"] == ["embedding"]
    fetches = [r for r in upstream.fake.requests if r.path == "/v1/models"]
    assert len(fetches) <= 1 and all(r.headers["authorization"] == f"Bearer {TEST_KEY}" for r in fetches)
    client.list()
    client.ps()
    assert [r for r in upstream.fake.requests if r.path == "/v1/models"] == fetches, "the list is cached (models_ttl)"

    for name in ("gpt-4o-mini", "gpt-4o-mini:latest"):
        shown = client.show(name)
        assert shown.modelinfo["general.architecture"] == "gpt" and shown.modelinfo["gpt.context_length"] == 128000
        assert shown.modelinfo["general.basename"] == "gpt-4o-mini"
        assert set(shown.capabilities) >= {"completion", "tools", "vision"}
        assert "num_ctx" in shown.parameters and shown.template and shown.modelfile and shown.modified_at
    legacy = httpx.post(dump.url + "/api/show", json={"name": "qwen3:8b"}).json()
    assert legacy["model_info"]["qwen.context_length"] == 32768 and "thinking" in legacy["capabilities"]
    with pytest.raises(ollama.ResponseError) as error:
        client.show("nothing-like-this")
    assert (error.value.status_code, error.value.error) == (404, "model 'nothing-like-this' not found")

    loaded = client.ps().models
    assert [m.model for m in loaded] == [m.model for m in models]
    assert all(m.expires_at is not None and m.context_length for m in loaded)


def test_pull_and_unmanaged_routes(client: ollama.Client, proxy: Mitmdump) -> None:
    assert client.pull("gpt-4:latest").status == "success"
    statuses = [p.status for p in client.pull("gpt-3.5-turbo", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    with pytest.raises(ollama.ResponseError) as error:
        client.pull("no-such-model")
    assert error.value.status_code == 404 and "model 'no-such-model' not found" in error.value.error
    calls = [
        lambda: client.push("gpt-4"),
        lambda: client.create("mine", from_="gpt-4"),
        lambda: client.copy("gpt-4", "mine"),
        lambda: client.delete("gpt-4"),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as error:
            call()
        assert error.value.status_code == 501 and "does not manage models" in error.value.error
    blob = httpx.post(proxy.url + "/api/blobs/sha256:" + "0" * 64, content=b"x")
    assert blob.status_code == 501 and "does not manage models" in blob.json()["error"]
    assert httpx.head(proxy.url + "/api/blobs/sha256:" + "0" * 64).status_code == 501


def test_model_list_fetch_blocks_no_other_flow(spawn, upstream: UpstreamServer) -> None:
    """While the upstream holds GET /models, chats go through; the waiting lookups share one fetch."""
    gate = threading.Event()
    upstream.fake.models_gate = gate
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}")
    results: dict[int, list[str]] = {}

    def show(n: int) -> None:
        results[n] = ollama.Client(host=dump.url, timeout=20).show("gpt-4").capabilities

    threads = [threading.Thread(target=show, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while not any(r.path == "/v1/models" for r in upstream.fake.requests) and time.monotonic() < deadline:
        time.sleep(0.02)
    client = ollama.Client(host=dump.url, timeout=20)
    assert (
        client.chat(model="m", messages=[{"role": "user", "content": "meanwhile"}]).message.content == "echo: meanwhile"
    )
    assert results == {}, "the lookups are still waiting for the model list"
    gate.set()
    for thread in threads:
        thread.join(20)
    assert results == {n: ["completion", "tools"] for n in range(5)}
    assert [r.path for r in upstream.fake.requests].count("/v1/models") == 1


def test_model_list_failure_falls_back_to_the_catalog(spawn, upstream: UpstreamServer, tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(CATALOG)
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", f"model_catalog={path}")
    upstream.fake.queue(500, {"error": {"message": "no model list here"}})
    client = ollama.Client(host=dump.url, timeout=20)
    assert [m.model for m in client.list().models] == [
        "llama3.2:latest",
        "local-thinker:latest",
        "nomic-embed-text:latest",
    ]
    # Not in the catalog, list unknown: show answers inferred defaults, and chat goes ahead.
    assert client.show("some-upstream-model").capabilities == ["completion", "tools"]
    assert (
        client.chat(model="some-upstream-model", messages=[{"role": "user", "content": "still"}]).message.content
        == "echo: still"
    )
    time.sleep(0.2)
    assert "cannot list the upstream's models" in dump.log()


def test_models_ttl_zero_refetches(_options_dump: Mitmdump, upstream: UpstreamServer) -> None:
    client = ollama.Client(host=_options_dump.url, timeout=20)
    client.list()
    client.list()
    assert [r.path for r in upstream.fake.requests] == ["/v1/models", "/v1/models"]


# ---------------------------------------------------------------------------------------------
# The model catalog


def test_catalog_aliases_on_every_route(catalog_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    client = ollama.Client(host=catalog_proxy.url, timeout=20)
    for name in ("llama3.2", "llama3.2:latest"):
        answer = client.chat(model=name, messages=[{"role": "user", "content": "hi"}])
        assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini" and answer.model == name
    parts = list(client.generate(model="llama3.2", prompt="hi", stream=True))
    assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini" and {p.model for p in parts} == {"llama3.2"}
    embedded = client.embed(model="nomic-embed-text", input="x")
    assert upstream.fake.requests[-1].body["model"] == "text-embedding-3-small" and embedded.model == "nomic-embed-text"
    # Upstream names in name:tag form go upstream without the :latest the tags added.
    client.chat(model="gpt-4o-mini:latest", messages=[{"role": "user", "content": "hi"}])
    assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini"
    client.chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    assert upstream.fake.requests[-1].body["model"] == "qwen3:8b"
    # The catalog's think_style for this model.
    client.chat(model="local-thinker", messages=[{"role": "user", "content": "hi"}], think=True)
    body = upstream.fake.requests[-1].body
    assert body["model"] == "qwen3-32b" and body["chat_template_kwargs"] == {"enable_thinking": True}


def test_catalog_in_tags_and_show(catalog_proxy: Mitmdump) -> None:
    client = ollama.Client(host=catalog_proxy.url, timeout=20)
    names = [m.model for m in client.list().models]
    assert names[:3] == ["llama3.2:latest", "local-thinker:latest", "nomic-embed-text:latest"]
    assert "gpt-4o-mini:latest" in names and "meta-llama/llama-3.1-8b:latest" in names
    shown = client.show("llama3.2")
    assert shown.capabilities == ["completion", "tools", "vision"]
    assert shown.modelinfo["gpt.context_length"] == 128000
    assert shown.modelinfo["general.description"] == "gpt-4o-mini under a local name"
    assert "FROM gpt-4o-mini" in shown.modelfile


def test_catalog_errors_stop_the_proxy_with_a_clear_message(upstream: UpstreamServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[models."x"]\nupstream = "y"\ncapabilities = ["flying"]\n')
    try:
        dump = Mitmdump(tmp_path, "reverse", f"openai_base_url={upstream.base_url}", f"model_catalog={path}")
    except (RuntimeError, pytest.fail.Exception) as e:  # it exited before it was listening (with its log)
        log = str(e)
    else:  # it was listening for a moment: mitmdump exits after an error logged during start-up
        assert dump.process.wait(15) != 0
        log = dump.log()
        dump._log.close()  # the logged error is what this test expects: no failure from stop()
        dump.stop()
    assert 'bad.toml: [models."x"]: unknown capabilities' in log


# ---------------------------------------------------------------------------------------------
# The /v1 routes


def test_v1_routes_with_the_openai_sdk(catalog_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    client = openai.OpenAI(base_url=catalog_proxy.url + "/v1", api_key="ollama", max_retries=0, timeout=20)
    answer = client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi there"}])
    sent = upstream.fake.requests[-1]
    assert (sent.path, sent.body["model"], sent.headers["authorization"]) == (
        "/v1/chat/completions",
        "gpt-4o-mini",
        f"Bearer {TEST_KEY}",
    )
    assert answer.choices[0].message.content == "echo: hi there" and answer.model == "llama3.2"
    chunks = list(
        client.chat.completions.create(
            model="llama3.2:latest",
            messages=[{"role": "user", "content": "a b"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"
    assert {c.model for c in chunks} == {"llama3.2:latest"} and chunks[-1].usage.prompt_tokens == 7
    legacy = client.completions.create(model="gpt-4o-mini:latest", prompt="old style")
    assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini" and legacy.choices[0].text == "echo: old style"
    vectors = client.embeddings.create(model="nomic-embed-text", input=["a", "bb"])
    assert upstream.fake.requests[-1].body["model"] == "text-embedding-3-small"
    assert [d.index for d in vectors.data] == [1, 0], "the upstream's answer is passed through"
    listed = [m.id for m in client.models.list().data]
    assert listed[:3] == ["llama3.2:latest", "local-thinker:latest", "nomic-embed-text:latest"] and "qwen3:8b" in listed
    assert client.models.retrieve("llama3.2").id == "llama3.2"
    assert client.models.retrieve("meta-llama/llama-3.1-8b:latest").id == "meta-llama/llama-3.1-8b:latest"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nothing-like-this")
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="missing-model", messages=[{"role": "user", "content": "x"}])
    assert error.value.body["code"] == "model_not_found", "upstream errors keep OpenAI's shape on /v1"


def test_copilot_discovery_sequence(listing_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    """VS Code Copilot: version → tags → show for each model → chat over /v1/chat/completions, streamed."""
    dump = listing_proxy
    headers = {"user-agent": "GitHubCopilotChat/0.38.0"}
    with httpx.Client(base_url=dump.url, headers=headers, timeout=20) as http:
        version = http.get("/api/version").json()["version"]
        assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)
        models = http.get("/api/tags").json()["models"]
        assert len(models) == 4
        usable = []
        for entry in models:
            shown = http.post("/api/show", json={"model": entry["model"]}).json()
            info = shown["model_info"]
            arch = info["general.architecture"]
            assert info[f"{arch}.context_length"] > 0
            assert info["general.basename"] == entry["model"], "Copilot labels models by basename"
            if "tools" in shown["capabilities"]:
                usable.append(entry["model"])
        assert usable == ["gpt-4o-mini:latest", "qwen3:8b", "meta-llama/llama-3.1-8b:latest"], "not the embedding model"
    client = openai.OpenAI(
        base_url=dump.url + "/v1", api_key="ollama", max_retries=0, default_headers=headers, timeout=20
    )
    stream = client.chat.completions.create(
        model=usable[0], messages=[{"role": "user", "content": "hello copilot"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello copilot"
    assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini" and {c.model for c in chunks} == {
        "gpt-4o-mini:latest"
    }


def test_head_answers_have_no_body_and_keep_the_connection_usable(proxy: Mitmdump) -> None:
    with httpx.Client(base_url=proxy.url, timeout=20) as http:
        for path in ("/", "/api/version", "/api/tags", "/api/ps", "/v1/models"):
            head = http.head(path)
            assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
            assert http.get("/api/version").json()["version"], f"the connection still works after HEAD {path}"
