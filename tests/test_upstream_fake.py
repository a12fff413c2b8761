"""The loopback fake upstream's queued replies (`queue_reply`), which the client suite relies on, speak OpenAI's format."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from harness.upstream import UpstreamServer

CALL = {"name": "add", "arguments": {"a": 2, "b": 3}}


@pytest.fixture
def server() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def post(server: UpstreamServer, stream: bool, **extra) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}
    return httpx.post(server.base_url + "/chat/completions", json=body, timeout=10, trust_env=False)


def events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def test_whole_reply_with_tool_call_and_thinking(server: UpstreamServer) -> None:
    server.fake.queue_reply("sure", [CALL], thinking="hmm")
    httpx.get(server.base_url + "/models", timeout=10, trust_env=False)  # does not use up the reply
    message = post(server, stream=False).json()["choices"][0]["message"]
    assert message["content"] == "sure" and message["reasoning_content"] == "hmm"
    assert message["tool_calls"] == [
        {"id": "call_0add", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    ]
    assert post(server, stream=False).json()["choices"][0]["message"]["content"] == "echo: hi"  # used once


def test_streamed_reply_comes_in_fragments(server: UpstreamServer) -> None:
    server.fake.queue_reply("two words", [CALL], thinking="a thought")
    data = events(post(server, stream=True, stream_options={"include_usage": True}))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "two words"
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "a thought"
    fragments = [t for d in deltas for t in d.get("tool_calls", [])]
    assert len(fragments) == 3 and fragments[0]["function"]["name"] == "add"
    assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == CALL["arguments"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 11


def test_a_broken_off_stream_has_no_end(server: UpstreamServer) -> None:
    server.fake.queue_reply("cut short", break_off=True)
    data = events(post(server, stream=True))
    assert "[DONE]" not in data
    assert all(json.loads(d)["choices"][0]["finish_reason"] is None for d in data)
