"""The live tier: the ollama SDK → a real mitmdump with the addon → the real local model server.

`make test-live` builds or reuses the server (scripts/local-upstream.sh), starts it and passes its
URL as LIVE_BASE_URL. Gemma 3 270M is small and repetitive but deterministic at temperature 0:
these tests check shapes, and that the text really came from the model by asking the server
the same question directly.

Deterministic means the same request in the same state: llama-server keeps the last prompt and
evaluates only what a new request does not share with it, and a prompt evaluated whole or from
the cache can give different text (with the AVX2 kernels, "Name three colours." does). So each
comparison of two answers comes after the same request was made once.
"""

from __future__ import annotations

import math
import os

import httpx
import ollama
import pytest

from collector.scenarios import WEATHER_TOOL
from harness.mitmdump import LOCAL_MODEL, Mitmdump, local_model_stop

pytestmark = [pytest.mark.live, pytest.mark.e2e]

BASE_URL = os.environ.get("LIVE_BASE_URL", "")
CHAT, EMBED = "gemma3", "gemma3-embed"
GREEDY = {"temperature": 0, "seed": 42, "num_predict": 24}
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    if not BASE_URL:
        pytest.fail("LIVE_BASE_URL is not set: run the live tier with `make test-live`")
    dump = Mitmdump(tmp_path_factory.mktemp("live"), "reverse", f"openai_base_url={BASE_URL}", *LOCAL_MODEL)
    yield ollama.Client(host=dump.url, timeout=120)
    dump.stop()


def direct(body: dict) -> dict:
    """The same request straight to the model server, bypassing the proxy (with the model's stop sequences,
    which the proxy adds from its catalog)."""
    body = {"stop": local_model_stop(body["model"]), **body}
    response = httpx.post(f"{BASE_URL}/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    return response.json()


def test_chat_text_comes_from_the_model(client: ollama.Client) -> None:
    same_request = {"model": CHAT, "messages": QUESTION, "temperature": 0, "seed": 42, "max_tokens": 24}
    direct(same_request)  # the prompt is now cached for both requests compared below
    answer = client.chat(model=CHAT, messages=QUESTION, options=GREEDY)
    assert answer.model == CHAT and answer.done and answer.done_reason in ("stop", "length")
    assert answer.message.content.strip()
    assert answer.prompt_eval_count > 0 and 0 < answer.eval_count <= 24
    assert answer.eval_duration > 0 and answer.total_duration >= answer.eval_duration
    same = direct(same_request)
    assert answer.message.content == same["choices"][0]["message"]["content"]


def test_chat_stream_matches_the_whole_answer(client: ollama.Client) -> None:
    client.chat(model=CHAT, messages=QUESTION, options=GREEDY)  # the prompt is now cached
    whole = client.chat(model=CHAT, messages=QUESTION, options=GREEDY).message.content
    parts = list(client.chat(model=CHAT, messages=QUESTION, options=GREEDY, stream=True))
    assert len(parts) > 3, "token by token"
    assert "".join(p.message.content for p in parts) == whole
    assert parts[-1].done and parts[-1].eval_count > 0


def test_generate_both_ways(client: ollama.Client) -> None:
    client.generate(model=CHAT, prompt="The capital of France is", options=GREEDY)  # now cached
    answer = client.generate(model=CHAT, prompt="The capital of France is", options=GREEDY)
    assert answer.response.strip() and answer.done and answer.eval_count > 0
    streamed = list(client.generate(model=CHAT, prompt="The capital of France is", options=GREEDY, stream=True))
    assert "".join(p.response for p in streamed) == answer.response
    raw = client.generate(model=CHAT, prompt="Once upon a time", raw=True, options=GREEDY)
    assert raw.response.strip()


def test_length_limit(client: ollama.Client) -> None:
    answer = client.chat(model=CHAT, messages=QUESTION, options={**GREEDY, "num_predict": 3})
    assert answer.done_reason == "length" and answer.eval_count == 3


def test_tool_call_round_trip(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    tool = WEATHER_TOOL
    answer = client.chat(
        model=CHAT, messages=messages, tools=[tool], options={**GREEDY, "num_predict": 48, "stop": ["</tool_call>"]}
    )
    calls = answer.message.tool_calls or []
    assert answer.done_reason == "stop"
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    streamed = list(
        client.chat(
            model=CHAT,
            messages=messages,
            tools=[tool],
            stream=True,
            options={**GREEDY, "num_predict": 48, "stop": ["</tool_call>"]},
        )
    )
    assert [c.function.arguments for p in streamed for c in (p.message.tool_calls or [])] == [{"city": "Paris"}]
    messages += [answer.message, {"role": "tool", "tool_name": "get_weather", "content": "18 degrees and sunny"}]
    follow_up = client.chat(model=CHAT, messages=messages, tools=[tool], options=GREEDY)
    assert follow_up.done


def test_embed(client: ollama.Client) -> None:
    batch = client.embed(model=EMBED, input=["the sky is blue", "grass is green"])
    assert len(batch.embeddings) == 2 and all(len(v) == 640 for v in batch.embeddings)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in batch.embeddings)
    single = client.embed(model=EMBED, input="grass is green").embeddings[0]
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(single, batch.embeddings[1], strict=True)), (
        "batch order kept"
    )
    legacy = client.embeddings(model=EMBED, prompt="the sky is blue")
    assert len(legacy.embedding) == 640


def test_discovery(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert {"gemma3:latest", "gemma3-embed:latest"} <= names
    shown = client.show(CHAT)
    assert shown.modelinfo is not None and "general.architecture" in shown.modelinfo
    assert "completion" in (shown.capabilities or [])


def test_unknown_model(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as error:
        client.chat(model="no-such-model", messages=QUESTION)
    assert error.value.status_code == 404 and error.value.error == "model 'no-such-model' not found"
