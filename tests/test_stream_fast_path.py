"""The stream driver's fast paths (a piece of a shape seen before read without a parse, the text line written
directly) change nothing: every family's stream is byte for byte what the strict path makes of the same pieces
(every event parsed and fed to the accumulator), whatever the events and however the body is cut."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.exchange import Relay
from addon.guard import secrets
from addon.translate.anthropic.stream import MessagesStream
from addon.translate.chunks import Text
from addon.translate.ndjson import OllamaLines, ollama_stream
from addon.translate.response import Clock
from addon.translate.responses.stream import ResponsesStream
from addon.translate.stream import ChunkStream

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEAD = b'{"id":"c","object":"chat.completion.chunk","created":%d,"model":"m","choices":[{"index":0,"delta":{"%s":'
TAIL = b'},"logprobs":null,"finish_reason":null}],"usage":null%s}'

texts = st.text(st.characters(codec="utf-8") | st.sampled_from('"\\/\n\t\x00é€😀'), max_size=12)
raw_strings = st.sampled_from(
    [
        *(b'"a\x01b"', b'"\xff"', b'"\xed\xa0\x80"', b'"a\nb"', b'"\\q"', b'"ok\\u00e9"', b'""', b'"\x7f"'),
        *(b'"a\\"b"', b'"a"b"', b'"\xe2\x80\x8b"', b'"\\\\"', b'"x\\"', b'"},"obfuscation":"a"}"'),
    ]
)


def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice], **more}).encode()


@st.composite
def text_event(draw: st.DrawFn) -> bytes:
    """A text or reasoning event of one of a few shapes (as servers repeat them), its string valid or not."""
    field = draw(st.sampled_from([b"content", b"content", b"reasoning_content", b"reasoning"]))
    created = draw(st.sampled_from([1, 1, 2]))
    if draw(st.integers(0, 5)) == 0:
        string = draw(raw_strings)
    else:
        string = json.dumps(draw(texts), ensure_ascii=draw(st.booleans())).encode()
    obfuscation = draw(
        st.sampled_from(
            [b"", b',"obfuscation":"Ab1"', b',"obfuscation":"xYz9Q"', b',"obfuscation":"Ab1', b',"obfuscation":""']
        )
    )
    return HEAD % (created, field) + string + TAIL % obfuscation


tool_fragment = st.builds(
    lambda index, call_id, name, arguments: chunk(
        {"tool_calls": [{"index": index, "id": call_id, "function": {"name": name, "arguments": arguments}}]}
    ),
    st.sampled_from([0, 1]),
    st.sampled_from([None, "call_a", "call_b"]),
    st.sampled_from([None, "f", "g"]),
    st.sampled_from(["{}", '{"a":', "1}", "x", "", "NaN"]),
)
other_event = st.sampled_from(
    [
        chunk({"role": "assistant", "content": ""}),
        chunk({}, "stop"),
        chunk({}, "length"),
        chunk({"content": "t"}, timings={"prompt_ms": 1.0, "predicted_ms": 2.0}),
        json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode(),
        json.dumps({"id": "c", "choices": []}).encode(),
        json.dumps({"error": {"message": "boom"}}).encode(),
        chunk({"content": "a", "refusal": "no"}),
        b"[DONE]",
        b"not json",
    ]
)
events = st.lists(text_event() | text_event() | tool_fragment | other_event, max_size=14)


def pieces_of(body: list[bytes], how: str, cut: int) -> list[bytes]:
    if how == "one per event":
        return [b"data: " + e + b"\n\n" for e in body]
    if how == "CRLF":
        return [b"data: " + e + b"\r\n\r\n" for e in body]
    if how == "multi-line":  # a JSON event split over two data lines is the same event
        return [b"data: " + e.replace(b",", b"\ndata: ,", 1) + b"\n\n" for e in body]
    whole = b"".join(b"data: " + e + b"\n\n" for e in body)
    return [whole[i : i + cut] for i in range(0, len(whole), cut)]


def renderers(kind: str, limit: int) -> ChunkStream:
    if kind == "anthropic":
        return ChunkStream(MessagesStream("m", 0, "msg_1"), limit)
    if kind == "responses":
        return ChunkStream(ResponsesStream("m", {}, response_id="resp_1", created_at=1), limit)
    return ollama_stream(kind, "m", Clock(0), max_event=limit)


_VARYING = re.compile(rb'"(created_at|[a-z_]*duration)":("[^"]*"|\d+)|\b(msg|fc|rs|toolu|call)_[0-9a-zA-Z]+')


def run(
    kind: str, pieces: list[bytes], strict: bool, limit: int = 4096
) -> tuple[bytes, Any, list[str], str | None, bool]:
    stream = renderers(kind, limit)
    out = []
    for piece in pieces:
        if strict:
            stream.reader.templates.clear()  # nothing learned: every event parsed and fed to the accumulator
        out.append(stream.feed(piece))
    out.append(stream.finish())
    body = _VARYING.sub(b"", b"".join(out))
    return body, stream.usage, stream.warnings, stream.error, stream.aborted


@SETTINGS
@given(
    st.sampled_from(["chat", "generate", "anthropic", "responses"]),
    events,
    st.sampled_from(["one per event", "one per event", "CRLF", "multi-line", "cut"]),
    st.integers(1, 90),
    st.sampled_from([4096, 190, 200]),  # sse_event_limit: some events of these shapes are longer than 190, 200
)
def test_the_fast_paths_change_nothing(kind: str, body: list[bytes], how: str, cut: int, limit: int) -> None:
    pieces = pieces_of(body, how, cut)
    assert run(kind, pieces, strict=False, limit=limit) == run(kind, pieces, strict=True, limit=limit)


def test_text_after_a_whole_call_closes_it_on_the_fast_path_too() -> None:
    """A call whose arguments are whole is done when text comes: pieces for it after that are dropped."""
    text = [HEAD % (1, b"content") + b'"%s"' % word + TAIL % b"" for word in (b"a", b"b", b"c")]
    body = [
        text[0],
        text[1],
        chunk({"tool_calls": [{"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}]}),
    ]
    body += [text[2], chunk({"tool_calls": [{"index": 0, "function": {"arguments": "junk"}}]}), b"[DONE]"]
    pieces = pieces_of(body, "one per event", 0)
    fast = run("chat", pieces, strict=False)
    assert fast == run("chat", pieces, strict=True)
    assert b'"arguments":{}' in fast[0] and not fast[2]


def test_an_event_over_sse_event_limit_ends_the_stream_on_the_fast_path_too() -> None:
    short, long = (HEAD % (1, b"content") + b'"%s"' % (b"a" * n) + TAIL % b"" for n in (1, 100))
    pieces = pieces_of([short, short, long, short], "one per event", 0)
    limit = len(short) + 50
    fast = run("chat", pieces, strict=False, limit=limit)
    assert fast == run("chat", pieces, strict=True, limit=limit)
    assert b"sse_event_limit" in fast[0] and fast[0].count(b'"content":"a"') == 2 and fast[4]


def test_a_key_in_text_read_on_the_fast_path_is_scrubbed() -> None:
    """The stream callable scans every line it sends, however the converter made it."""
    key = "sk-fastpath-7f3a9c1e5b2d4a6f"
    secrets.register("test", key)
    try:
        relay = Relay(ollama_stream("chat", "m", Clock(0)), 0)
        words = (b"hello", key.encode(), b"x" + key.encode()[:-1], b"in " + key.encode() + b" text")
        body = [HEAD % (1, b"content") + b'"%s"' % word + TAIL % b',"obfuscation":"Q"' for word in words]
        pieces = pieces_of([*body, b"[DONE]"], "one per event", 0)
        assert len(relay.converter.reader.templates) == 0
        sent = b"".join(b"".join(relay(piece)) for piece in pieces)
        assert relay.converter.reader.templates, "the events after the first were read on the fast path"
        assert key.encode() not in sent and sent.count(b"[redacted]") == 2 and b"hello" in sent
    finally:
        secrets.register("test", "")


keys = st.sampled_from(["sk-fastpath-7f3a9c1e5b2d4a6f", "2026-", "assistant", 'Z","mes', "m-xy", "ab/c+d=e"]) | st.text(
    st.sampled_from('ab"/:.-Z0123456789 é'), min_size=4, max_size=12
)


@SETTINGS
@given(keys, st.sampled_from(["m", "m-x", "assistant", "é"]), st.sampled_from(["chat", "generate"]), st.data())
def test_a_framed_scan_answers_as_a_scan_of_the_whole_line(
    key: str, model: str, shape: str, data: st.DataObject
) -> None:
    """The key scan of an Ollama text line, read from its string alone, says what a scan of the line says."""
    forms = secrets.forms(key) or [key]
    text = data.draw(st.text(st.sampled_from('ab"/\\:.-Z0123456789 é\n'), max_size=20) | st.sampled_from(forms))
    text = data.draw(st.sampled_from(["", "x", '"', "2026-"])) + text + data.draw(st.sampled_from(["", "y", '"', ":"]))
    lines = OllamaLines(shape, model, Clock(0))
    line = lines.one(Text(text))
    assert lines.frame is not None and lines.span is not None
    secrets.register("test", key)
    try:
        framed = secrets.FramedScan(*lines.frame)
        assert framed.shows(line, lines.span) == secrets.shows_secret(line)
        assert framed.shows(line, lines.span) == secrets.shows_secret(line)  # (the second time from what it learned)
    finally:
        secrets.register("test", "")
    assert not framed.shows(line, lines.span)
