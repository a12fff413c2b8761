"""The streaming converter (addon/translate/stream.py): recorded OpenAI streams fed in awkward pieces must
give the same NDJSON; tool calls gathered from their fragments; logprobs on their chunks."""

from __future__ import annotations

import json
import time

import pytest

from addon.translate.ndjson import ollama_stream
from addon.translate.response import Clock
from harness.upstream import RECORDINGS, recording

STREAMS = sorted(p.stem for p in (RECORDINGS / "chat-stream").glob("*.json"))


def convert(body: bytes, pieces: int | None = None, shape: str = "chat", raw: bool = False) -> list[dict]:
    converter = ollama_stream(shape, "llama3.2", Clock(time.time_ns()), raw)  # type: ignore[arg-type]
    out: list[bytes] = []
    if pieces is None:
        out.append(converter.feed(body))
    else:
        for start in range(0, len(body), pieces):
            lines = converter.feed(body[start : start + pieces])
            assert not lines or lines.endswith(b"\n"), "whole lines only"
            out.append(lines)
    out.append(converter.finish())
    text = b"".join(out)
    assert text.endswith(b"\n") and b"\n\n" not in text
    return [json.loads(line) for line in text.splitlines()]


def stable(chunks: list[dict]) -> list[dict]:
    """Chunks without the values that depend on the clock."""
    drop = {"created_at", "total_duration", "prompt_eval_duration", "eval_duration"}
    return [{k: v for k, v in c.items() if k not in drop} for c in chunks]


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("pieces", [1, 7, 64, 1000])
def test_piece_boundaries_do_not_matter(name: str, pieces: int) -> None:
    body = recording(f"chat-stream/{name}")["response"]["body"].encode()
    assert stable(convert(body, pieces)) == stable(convert(body))


@pytest.mark.parametrize("name", STREAMS)
def test_every_recording_ends_in_one_done_chunk(name: str) -> None:
    exchange = recording(f"chat-stream/{name}")
    chunks = convert(exchange["response"]["body"].encode())
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    final = chunks[-1]
    for field in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        assert isinstance(final[field], int)
    assert final["done_reason"] in ("stop", "length")
    assert all(c["model"] == "llama3.2" for c in chunks)
    if exchange["request"]["body"].get("stream_options", {}).get("include_usage"):
        assert final["prompt_eval_count"] > 0 and final["eval_count"] > 0


def test_text_is_assembled_exactly() -> None:
    body = recording("chat-stream/plain-text-include-usage")["response"]["body"]
    expected = "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in (json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {"))
        if e["choices"]
    )
    chunks = convert(body.encode(), 5)
    assert "".join(c["message"]["content"] for c in chunks) == expected
    usage = next(json.loads(line[6:])["usage"] for line in body.splitlines() if '"choices":[]' in line)
    assert (
        chunks[-1]["prompt_eval_count"] == usage["prompt_tokens"]
        and chunks[-1]["eval_count"] == usage["completion_tokens"]
    )


def test_tool_call_fragments_are_emitted_whole() -> None:
    for name in ("tool-call-fragments", "tool-call-fragments-role-in-first-tool-chunk", "tool-calls-parallel"):
        chunks = convert(recording(f"chat-stream/{name}")["response"]["body"].encode(), 3)
        calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
        assert calls, name
        for index, call in enumerate(calls):
            assert call["id"].startswith("call_")
            assert call["function"]["index"] == index
            assert isinstance(call["function"]["arguments"], dict) and call["function"]["arguments"]


def test_refusal_and_length() -> None:
    refusal = convert(recording("chat-stream/refusal")["response"]["body"].encode())
    assert "".join(c["message"]["content"] for c in refusal).strip()
    length = convert(recording("chat-stream/max-tokens-finish-length")["response"]["body"].encode())
    assert length[-1]["done_reason"] == "length"


def test_generate_shape_and_legacy_completions() -> None:
    chunks = convert(recording("completions/legacy-stream")["response"]["body"].encode(), 9, shape="generate")
    assert chunks[-1]["done"] and "".join(c["response"] for c in chunks)
    assert all("message" not in c for c in chunks)


@pytest.mark.parametrize("name", ["completions/legacy-stream", "chat-stream/plain-text-include-usage"])
def test_every_generate_line_carries_context(name: str) -> None:
    """`context` (empty: no token ids) on the done line of a generate stream, after done_reason as
    in Ollama, and also on every other line, which the Vercel AI SDK's provider requires; not at
    all for a raw prompt or a chat stream."""
    body = recording(name)["response"]["body"].encode()
    chunks = convert(body, 5, shape="generate")
    assert chunks[-1]["done"] is True and chunks[-1]["context"] == []
    assert list(chunks[-1])[:7] == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
        "total_duration",
    ]
    assert len(chunks) > 1 and all(c["context"] == [] for c in chunks[:-1])
    assert not any("context" in c for c in convert(body, 5, shape="generate", raw=True))
    if name.startswith("chat-stream"):
        assert not any("context" in c for c in convert(body, 5, shape="chat"))


def test_a_broken_generate_stream_ends_in_an_error_line_without_context() -> None:
    chunks = convert(event({"content": "partial"}), shape="generate")
    assert chunks[-1] == {"error": "the upstream stream ended before the answer was complete"}
    assert chunks[0]["response"] == "partial" and chunks[0]["context"] == []


def event(delta: dict, finish: str | None = None) -> bytes:
    return (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"
    )


def test_reasoning_becomes_thinking() -> None:
    body = (
        event({"reasoning_content": "hmm"})
        + event({"reasoning": " ok"})
        + event({"content": "hi"}, "stop")
        + b"data: [DONE]\n\n"
    )
    chunks = convert(body)
    assert [c["message"].get("thinking") for c in chunks[:2]] == ["hmm", " ok"]
    assert chunks[2]["message"]["content"] == "hi"


def test_crlf_and_comments_and_multiline_data() -> None:
    body = b": keep-alive\r\n\r\n" + event({"content": "a"}).replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n"
    assert convert(body, 2)[0]["message"]["content"] == "a"


def test_stream_cut_short_ends_in_an_error_line() -> None:
    chunks = convert(event({"content": "partial"}))
    assert chunks[-1] == {"error": "the upstream stream ended before the answer was complete"}


def test_finish_reason_without_done_marker_still_finishes() -> None:
    chunks = convert(event({"content": "x"}, "stop"))
    assert chunks[-1]["done"] is True


def test_invalid_event_and_error_event() -> None:
    assert "invalid stream event" in convert(b"data: {oops\n\n")[-1]["error"]
    error = b'data: {"error": {"message": "overloaded", "code": 529}}\n\n'
    assert convert(event({"content": "a"}) + error)[-1] == {"error": "upstream error: overloaded"}


def test_unparsable_tool_arguments_fall_back_to_empty_object() -> None:
    body = event(
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{broken"}}]}, "tool_calls"
    )
    converter = ollama_stream("chat", "m", Clock(time.time_ns()))
    lines = converter.feed(body + b"data: [DONE]\n\n")
    call = json.loads(lines.split(b"\n")[0])["message"]["tool_calls"][0]
    assert call["function"]["arguments"] == {} and converter.warnings


def test_nothing_after_the_end() -> None:
    converter = ollama_stream("chat", "m", Clock(time.time_ns()))
    assert converter.feed(event({"content": "a"}, "stop") + b"data: [DONE]\n\n")
    assert converter.feed(event({"content": "late"})) == b"" and converter.finish() == b""


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Streamed tool calls


def expected_calls(body: str) -> list[dict]:
    """The calls of a recorded stream, gathered independently of the converter: fragments joined by index."""
    drafts: dict[int, dict] = {}
    for line in body.splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices") or ():
            for fragment in (choice.get("delta") or {}).get("tool_calls") or ():
                draft = drafts.setdefault(fragment["index"], {"id": None, "name": "", "arguments": ""})
                draft["id"] = draft["id"] or fragment.get("id")
                draft["name"] += (fragment.get("function") or {}).get("name") or ""
                draft["arguments"] += (fragment.get("function") or {}).get("arguments") or ""
    return [
        {"id": d["id"], "function": {"index": position, "name": d["name"], "arguments": json.loads(d["arguments"])}}
        for position, (_, d) in enumerate(sorted(drafts.items()))
    ]


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("pieces", [1, 7, 64, None])
def test_streamed_tool_calls_of_every_recording(name: str, pieces: int | None) -> None:
    body = recording(f"chat-stream/{name}")["response"]["body"]
    chunks = convert(body.encode(), pieces)
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    assert calls == expected_calls(body)
    carrying = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(carrying) <= 1 and all(not c["done"] for c in carrying), (
        "all calls whole, in one chunk before the done chunk"
    )


def test_the_tool_call_recordings_are_covered() -> None:
    with_calls = [n for n in STREAMS if expected_calls(recording(f"chat-stream/{n}")["response"]["body"])]
    assert sorted(with_calls) == [
        "tool-call-fragments",
        "tool-call-fragments-role-in-first-tool-chunk",
        "tool-calls-parallel",
    ]


def test_interleaved_parallel_fragments_and_late_ids() -> None:
    body = (
        event({"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": '{"y":'}}]})
        + event({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "a", "arguments": '{"x"'}}]})
        + event({"tool_calls": [{"index": 1, "id": "call_b", "function": {"arguments": " 2}"}}]})
        + event({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
        + event({}, "tool_calls")
    )  # no [DONE]: the finish reason is enough
    chunks = convert(body, 5)
    assert chunks[0]["message"]["tool_calls"] == [  # in the order they began, as every family gives them
        {"id": "call_b", "function": {"index": 0, "name": "b", "arguments": {"y": 2}}},
        {"id": "call_a", "function": {"index": 1, "name": "a", "arguments": {"x": 1}}},
    ]
    assert chunks[-1]["done"] and chunks[-1]["done_reason"] == "stop"


def test_calls_without_arguments_or_with_broken_ones() -> None:
    body = (
        event({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "now", "arguments": ""}}]})
        + event(
            {"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "f", "arguments": "[1, 2]"}}]}, "tool_calls"
        )
        + b"data: [DONE]\n\n"
    )
    calls = convert(body)[0]["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{}, {}]


def test_generate_shape_carries_tool_calls_too() -> None:
    body = event({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f", "arguments": "{}"}}]}, "tool_calls")
    chunks = convert(body, shape="generate")
    assert chunks[0]["tool_calls"][0]["function"]["name"] == "f" and "message" not in chunks[0]


# ---------------------------------------------------------------------------------------------
# Streamed logprobs


def test_streamed_logprobs_ride_on_their_chunks() -> None:
    item = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":['
        + json.dumps(item).encode()
        + b"]}}]}\n\n"
        + b'data: {"choices":[{"index":0,"delta":{"content":""},"logprobs":{"content":['
        + json.dumps({**item, "token": " "}).encode()
        + b"]}}]}\n\n"
        + event({}, "stop")
    )
    chunks = convert(body, 3)
    assert chunks[0]["logprobs"] == [item] and chunks[0]["message"]["content"] == "a"
    assert chunks[1]["logprobs"][0]["token"] == " ", "a chunk with only logprobs is still sent"
    assert "logprobs" not in chunks[-1]


# ---------------------------------------------------------------------------------------------
# Other APIs' streams: the one SSE decoder feeding an EventSink


def test_the_driver_feeds_an_agents_renderer_as_the_upstream_streams() -> None:
    from addon.translate.anthropic import MessagesStream
    from addon.translate.stream import ChunkStream

    body = recording("chat-stream/tool-call-fragments")["response"]["body"].encode()
    for pieces in (1, 7, len(body)):
        converter = ChunkStream(MessagesStream("claude-test"))
        out = b"".join(converter.feed(body[i : i + pieces]) for i in range(0, len(body), pieces)) + converter.finish()
        names = [line[7:] for line in out.decode().splitlines() if line.startswith("event: ")]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], pieces
        assert "content_block_start" in names and converter.ended and converter.feed(b"data: {}\n\n") == b""
    cut = ChunkStream(MessagesStream("claude-test"))
    out = cut.feed(event({"content": "partial"})) + cut.finish()
    assert "event: error" in out.decode().splitlines()[-3:] and cut.ended
    broken = ChunkStream(MessagesStream("claude-test"))
    assert b"event: error" in broken.feed(b"data: {not json\n\n") and broken.ended
