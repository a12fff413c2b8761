"""The content views (addon/views/): the pure stream summarisers and the mitmproxy views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import contentviews, http
from mitmproxy.contentviews import Metadata
from mitmproxy.test import taddons, tflow, tutils

from addon import views as cv
from addon.views.summary import SNIFF_BYTES

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def registered():
    """Our views in mitmproxy's global registry for the test, removed afterwards."""
    cv.register()
    return contentviews.registry


def response_flow(body: bytes, content_type: str | None) -> http.HTTPFlow:
    headers = http.Headers()
    if content_type is not None:
        headers["content-type"] = content_type
    return tflow.tflow(resp=tutils.tresp(headers=headers, content=body))


# --------------------------------------------------------------------------
# OpenAI SSE: real recordings
# --------------------------------------------------------------------------


def test_sse_tool_call_fragments():
    s = cv.summarize_sse(fixture("openai-tool-call-fragments.sse"))
    assert s.format == "openai-chat"
    assert s.finished
    assert s.model == "gpt-4.1-nano-2025-04-14"
    assert len(s.choices) == 1
    c = s.choices[0]
    assert c.role == "assistant"
    assert c.content == ""
    assert c.finish_reason == "tool_calls"
    assert len(c.tool_calls) == 1
    call = c.tool_calls[0]
    assert (call.index, call.id, call.name) == (0, "call_Ri18CzwNncOY61C3aLD9JKX1", "weather")
    assert call.parsed_arguments() == {"latitude": "52.5200", "longitude": "13.4050"}
    assert s.stats["total_tokens"] == 127
    assert s.raw_lines == [] and s.errors == []


def test_sse_tool_call_in_first_chunk_with_role():
    s = cv.summarize_sse(fixture("openai-tool-call-fragments-role-in-first-tool-chunk.sse"))
    c = s.choices[0]
    assert c.role == "assistant"
    assert [t.name for t in c.tool_calls] == ["multiply"]
    assert c.tool_calls[0].parsed_arguments() == {"a": 1231, "b": 2331}
    assert c.refusal == ""
    assert c.finish_reason == "tool_calls"


def test_sse_parallel_tool_calls_accumulated_by_index():
    s = cv.summarize_sse(fixture("openai-tool-calls-parallel.sse"))
    calls = s.choices[0].tool_calls
    assert [(t.index, t.name) for t in calls] == [
        (0, "secret_retrieval_tool"),
        (1, "secret_retrieval_tool"),
    ]
    assert [t.id for t in calls] == ["call_M26z19sncd7b4LBgzKRRbaUE", "call_KPXe5NX7IcKkaBUhc6dto2QV"]
    assert [t.parsed_arguments() for t in calls] == [{"password": "mellon"}, {"password": "radiance"}]
    text = cv.render_summary(s)
    assert text.count("- name: secret_retrieval_tool") == 2
    assert 'password: "mellon"' in text and 'password: "radiance"' in text


def test_sse_refusal():
    s = cv.summarize_sse(fixture("openai-refusal.sse"))
    c = s.choices[0]
    assert c.refusal == "I'm very sorry, but I can't assist with that request."
    assert c.content == ""
    assert c.finish_reason == "stop"
    assert "refusal: \"I'm very sorry" in cv.render_summary(s)


def test_sse_reasoning_model_usage():
    s = cv.summarize_sse(fixture("openai-reasoning-gpt-5-nano.sse"))
    assert s.choices[0].content == "3"
    assert s.choices[0].thinking == ""  # api.openai.com streams no reasoning text
    assert s.stats["completion_tokens_details"]["reasoning_tokens"] == 64
    text = cv.render_summary(s)
    assert "reasoning_tokens: 64" in text


def test_sse_include_usage():
    s = cv.summarize_sse(fixture("openai-plain-text-include-usage.sse"))
    assert s.choices[0].content == "1, 2, 3, 4, 5"
    assert s.stats["prompt_tokens"] == 14
    assert s.stats["completion_tokens"] == 13
    assert s.finished


def test_sse_no_usage():
    s = cv.summarize_sse(fixture("openai-plain-text-no-usage.sse"))
    assert s.choices[0].content == "South Atlantic Ocean."
    assert s.stats == {}
    assert "usage:" not in cv.render_summary(s)


def test_sse_usage_chunk_not_last():
    s = cv.summarize_sse(fixture("openai-moderation-second-trailing-chunk.sse"))
    assert s.choices[0].content == "Paris."
    assert s.stats["total_tokens"] == 24  # the trailing moderation chunk has no usage
    assert s.raw_lines == []


def test_sse_reasoning_content_and_reasoning():
    s = cv.summarize_sse(fixture("openai-reasoning-content-handmade.sse"))
    assert s.choices[0].thinking == "Two plus two is four."
    assert s.choices[0].content == "4"
    # Ollama's and OpenRouter's OpenAI-compatible endpoints call it "reasoning".
    body = (
        b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"reasoning":"hm"}}]}\n\n'
        b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ok"},'
        b'"finish_reason":"stop"}]}\n\n'
    )
    s = cv.summarize_sse(body)
    assert (s.choices[0].thinking, s.choices[0].content) == ("hm", "ok")
    assert not s.finished  # no [DONE]
    assert "finish_reason seen, but no [DONE]" in cv.render_summary(s)


def test_sse_awkward_framing():
    """CRLF line ends, multi-line data, comments, event names, a missing index."""
    body = (
        b": keep-alive\r\n\r\n"
        b"event: message\r\n"
        b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"Hel"},\r\n'
        b'data: "index":0}]}\r\n\r\n'
        b'data:{"choices":[{"index":0,"delta":{"content":"lo","tool_calls":'
        b'[{"id":"c1","function":{"name":"f","arguments":"{\\"a\\""}}]}}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":": 1}"}}]}}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    s = cv.summarize_sse(body)
    assert s.choices[0].content == "Hello"
    assert [(t.id, t.name, t.parsed_arguments()) for t in s.choices[0].tool_calls] == [("c1", "f", {"a": 1})]
    assert s.finished and s.raw_lines == []


def test_sse_multiple_choices_and_legacy_function_call():
    body = b"".join(
        b"data: " + json.dumps(o).encode() + b"\n\n"
        for o in [
            {"object": "chat.completion.chunk", "choices": [{"index": 1, "delta": {"content": "B"}}]},
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "A"}}]},
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"function_call": {"name": "g", "arguments": "{}"}}}],
            },
        ]
    )
    s = cv.summarize_sse(body)
    assert [(c.index, c.content) for c in s.choices] == [(0, "A"), (1, "B")]
    assert s.choices[0].tool_calls[0].name == "g"
    text = cv.render_summary(s)
    assert "choice 0:" in text and "choice 1:" in text


def test_sse_error_event():
    body = (
        b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        b'data: {"error":{"message":"upstream overloaded","type":"server_error","code":503}}\n\n'
        b'event: error\ndata: {"message":"second"}\n\n'
    )
    s = cv.summarize_sse(body)
    assert s.errors == ["upstream overloaded type=server_error code=503", "second"]
    assert "upstream overloaded" in cv.render_summary(s)


def test_sse_incomplete_arguments_are_shown_raw():
    body = (
        b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":'
        b'[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":"{\\"a\\": 1"}}]}}]}\n\n'
    )
    s = cv.summarize_sse(body)
    assert s.choices[0].tool_calls[0].parsed_arguments() is None
    text = cv.render_summary(s)
    assert "not valid JSON" in text
    assert "cut short" in text


# --------------------------------------------------------------------------
# Ollama NDJSON: hand-made streams
# --------------------------------------------------------------------------


def test_ndjson_chat_thinking_tools_metrics():
    s = cv.summarize_ndjson(fixture("ollama-chat-thinking-tools.ndjson"))
    assert s.format == "ollama-chat"
    assert s.finished
    assert s.model == "qwen3:4b"
    c = s.choices[0]
    assert c.role == "assistant"
    assert c.thinking == "The user wants the weather in Tokyo.\nI should call the tool."
    assert c.content == "Let me check that for you."
    assert [(t.index, t.id, t.name, t.parsed_arguments()) for t in c.tool_calls] == [
        (0, "call_k3j9x0qa", "get_weather", {"city": "Tokyo", "unit": "celsius"}),
        (1, "call_p2m8z7rb", "get_time", {"timezone": "Asia/Tokyo"}),
    ]
    assert c.finish_reason == "stop"
    assert s.stats == {
        "prompt_eval_count": 169,
        "eval_count": 15,
        "total_duration_ms": 182.24,
        "load_duration_ms": 41.3,
        "prompt_eval_duration_ms": 24.57,
        "eval_duration_ms": 115.96,
        "tokens_per_s": 129.36,
        "prompt_tokens_per_s": 6877.42,
    }
    text = cv.render_summary(s)
    for needle in (
        "Ollama chat stream",
        "done_reason: stop",
        "thinking: |\n  The user wants the weather in Tokyo.\n  I should call the tool.",
        'content: "Let me check that for you."',
        "- name: get_weather",
        'city: "Tokyo"',
        "tokens_per_s: 129.36",
        "eval_duration_ms: 115.96",
    ):
        assert needle in text, needle


def test_ndjson_generate():
    s = cv.summarize_ndjson(fixture("ollama-generate.ndjson"))
    assert s.format == "ollama-generate"
    assert s.choices[0].content == "The sky is blue."
    assert s.choices[0].finish_reason == "stop"
    assert s.stats["eval_count"] == 18
    assert s.stats["context_tokens"] == 3
    assert s.stats["tokens_per_s"] == pytest.approx(18 / 52479709 * 1e9, abs=0.01)


def test_ndjson_generate_thinking_and_tool_calls():
    body = (
        b'{"model":"m","response":"","thinking":"hmm","done":false}\n'
        b'{"model":"m","response":"","done":true,"done_reason":"stop",'
        b'"tool_calls":[{"function":{"name":"f","arguments":{"x":[1,2]}}}]}\n'
    )
    s = cv.summarize_ndjson(body)
    assert s.format == "ollama-generate"
    assert s.choices[0].thinking == "hmm"
    assert s.choices[0].tool_calls[0].parsed_arguments() == {"x": [1, 2]}


def test_ndjson_error_line():
    s = cv.summarize_ndjson(fixture("ollama-chat-error.ndjson"))
    assert s.choices[0].content == "Partial answer"
    assert s.errors == ["upstream stream ended without [DONE] or finish_reason"]
    assert not s.finished
    text = cv.render_summary(s)
    assert "error:" in text and "upstream stream ended" in text
    assert "cut short" in text


def test_ndjson_only_error():
    s = cv.summarize_ndjson(b'{"error":"model \'x\' not found"}\n')
    assert s.errors == ["model 'x' not found"]
    assert s.choices == []
    assert "model 'x' not found" in cv.render_summary(s)


def test_ndjson_garbage_is_kept_raw():
    body = (
        b"\xff\xfe\x00garbage\n"
        b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}\n'
        b"[1, 2]\n"
        b'{"model":"m","message":"not an object","done":"yes","eval_count":"x"}\n'
        b"{not json\n"
    )
    s = cv.summarize_ndjson(body)
    assert s.choices[0].content == "hi"
    assert len(s.raw_lines) == 3  # the binary line, the list, the broken JSON
    text = cv.render_summary(s)
    assert "3 line(s) not understood" in text
    assert "{not json" in text


def test_unicode_line_separators_inside_strings():
    """U+2028 / U+0085 are legal unescaped inside JSON strings: they must not split lines."""
    text = "a\u2028b\x85c"
    ndjson = json.dumps({"model": "m", "message": {"content": text}, "done": False}, ensure_ascii=False)
    s = cv.summarize_ndjson((ndjson + "\n").encode())
    assert s.choices[0].content == text and s.raw_lines == []
    sse = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}, ensure_ascii=False)
    s = cv.summarize_sse((sse + "\r\rdata: [DONE]\r\r").encode())
    assert s.choices[0].content == text and s.finished and s.raw_lines == []


def test_odd_number_fields():
    body = (
        rb'{"model":"m","response":"","done":true,"eval_count":"\u00b2","eval_duration":"12","prompt_eval_count":1.0}'
        + b"\n"
    )
    s = cv.summarize_ndjson(body)
    assert s.raw_lines == []
    assert "eval_count" not in s.stats and s.stats["prompt_eval_count"] == 1
    assert s.stats["eval_duration_ms"] == 0.0


@pytest.mark.parametrize("summarize", [cv.summarize_ndjson, cv.summarize_sse])
def test_empty_input(summarize):
    s = summarize(b"")
    assert s.empty
    assert "(empty body)" in cv.render_summary(s)
    s = summarize(b"\n\n  \n")
    assert s.empty


def test_raw_lines_are_capped():
    s = cv.summarize_ndjson(b"x\n" * 1000)
    assert len(s.raw_lines) == 200 and s.raw_lines_dropped == 800
    assert "1000 line(s) not understood" in cv.render_summary(s)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_arbitrary_bytes(data):
    md = Metadata(content_type="application/x-ndjson")
    for view in cv.VIEWS:
        assert isinstance(view.prettify(data, md), str)
        assert isinstance(view.render_priority(data, md), (int, float))
    cv.render_summary(cv.summarize_ndjson(data))
    cv.render_summary(cv.summarize_sse(data))
    cv.render_summary(cv.summarize_anthropic(data))
    cv.render_summary(cv.summarize_responses(data))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_odd_chunks = st.dictionaries(
    st.sampled_from(
        [
            "model",
            "message",
            "response",
            "thinking",
            "done",
            "done_reason",
            "tool_calls",
            "error",
            "eval_count",
            "eval_duration",
            "choices",
            "usage",
            "object",
            "delta",
            "index",
        ]
    ),
    _json_values,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_odd_chunks, max_size=6))
def test_never_raises_on_odd_json_shapes(chunks):
    ndjson = b"".join(json.dumps(c).encode() + b"\n" for c in chunks)
    sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    assert isinstance(cv.render_summary(cv.summarize_ndjson(ndjson)), str)
    assert isinstance(cv.render_summary(cv.summarize_sse(sse)), str)
    typed = b"".join(
        b"data: " + json.dumps({"type": t, **c}).encode() + b"\n\n" for t, c in zip(_TYPES, chunks, strict=False)
    )
    assert isinstance(cv.render_summary(cv.summarize_anthropic(typed)), str)
    assert isinstance(cv.render_summary(cv.summarize_responses(typed)), str)


_TYPES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.completed",
]


# --------------------------------------------------------------------------
# The agents' streams: Anthropic Messages and OpenAI Responses, made by the proxy's converters
# --------------------------------------------------------------------------


def agent_stream(sink, upstream: bytes) -> bytes:
    from addon.translate.stream import ChunkStream

    converter = ChunkStream(sink)
    return converter.feed(upstream) + converter.finish()


def test_anthropic_stream_with_thinking_and_tool_calls():
    from addon.translate.anthropic import MessagesStream

    body = agent_stream(MessagesStream("claude-sonnet-5-5", 12), fixture("openai-reasoning-content-handmade.sse"))
    s = cv.summarize_anthropic(body)
    assert (s.format, s.model, s.finished) == ("anthropic-messages", "claude-sonnet-5-5", True)
    c = s.choices[0]
    assert (c.role, c.thinking, c.content, c.finish_reason) == ("assistant", "Two plus two is four.", "4", "end_turn")
    assert s.stats["input_tokens"] > 0 and s.info["id"].startswith("msg_")
    tools = cv.summarize_anthropic(agent_stream(MessagesStream("m"), fixture("openai-tool-calls-parallel.sse")))
    calls = tools.choices[0].tool_calls
    assert [(t.name, t.parsed_arguments()) for t in calls] == [
        ("secret_retrieval_tool", {"password": "mellon"}),
        ("secret_retrieval_tool", {"password": "radiance"}),
    ]
    assert calls[0].id == "call_M26z19sncd7b4LBgzKRRbaUE" and tools.choices[0].finish_reason == "tool_use"
    text = cv.render_summary(tools)
    assert "# Anthropic Messages stream (/v1/messages):" in text and "message_stop" in text
    assert "stop_reason: tool_use" in text and "password: " in text and "usage:" in text


def test_anthropic_stream_cut_short():
    from addon.translate.anthropic import MessagesStream

    cut = fixture("openai-plain-text-no-usage.sse").split(b"data: [DONE]")[0].rsplit(b"data:", 2)[0]
    s = cv.summarize_anthropic(agent_stream(MessagesStream("m"), cut))
    assert not s.finished and s.errors == ["the upstream stream ended before the answer was complete type=api_error"]
    assert "no message_stop (last event: error)" in cv.render_summary(s)


def test_responses_stream_with_reasoning_and_function_calls():
    from addon.translate.responses import ResponsesStream

    s = cv.summarize_responses(
        agent_stream(ResponsesStream("gpt-oss", {}), fixture("openai-reasoning-content-handmade.sse"))
    )
    assert (s.format, s.model, s.finished, s.ending) == ("openai-responses", "gpt-oss", True, "response.completed")
    c = s.choices[0]
    assert (c.role, c.thinking, c.content, c.finish_reason) == ("assistant", "Two plus two is four.", "4", "completed")
    request = {"tools": [{"type": "function", "name": "secret_retrieval_tool", "parameters": {}}]}
    tools = cv.summarize_responses(
        agent_stream(ResponsesStream("m", request), fixture("openai-tool-calls-parallel.sse"))
    )
    calls = tools.choices[0].tool_calls
    assert [(t.id, t.parsed_arguments()) for t in calls] == [
        ("call_M26z19sncd7b4LBgzKRRbaUE", {"password": "mellon"}),
        ("call_KPXe5NX7IcKkaBUhc6dto2QV", {"password": "radiance"}),
    ]
    assert tools.stats["total_tokens"] > 0 and "status: completed" in cv.render_summary(tools)


def test_responses_stream_failed():
    from addon.translate.responses import ResponsesStream

    s = cv.summarize_responses(
        agent_stream(ResponsesStream("m", {}), b'data: {"error": {"message": "overloaded"}}\n\n')
    )
    assert (
        s.finished
        and s.choices[0].finish_reason == "failed"
        and s.errors == ["upstream error: overloaded code=server_error"]
    )


def test_agent_views_are_picked_and_show_the_upstream_stream(registered):
    from addon.translate.anthropic import MessagesStream
    from addon.translate.responses import ResponsesStream

    upstream = fixture("openai-tool-call-fragments.sse")
    for sink, view in ((MessagesStream("m"), "Anthropic SSE"), (ResponsesStream("m", {}), "OpenAI Responses SSE")):
        f = response_flow(agent_stream(sink, upstream), "text/event-stream; charset=utf-8")
        f.metadata[cv.UPSTREAM_SSE_METADATA_KEY] = upstream
        with taddons.context():
            result = contentviews.prettify_message(f.response, f)
        assert result.view_name == view and "- name: weather" in result.text
        assert "# ---- upstream SSE" in result.text and "OpenAI chat completion stream" in result.text
    error = b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n'
    assert cv.anthropic_sse_view.render_priority(error, Metadata(content_type="text/event-stream")) == 2.5
    assert cv.responses_sse_view.render_priority(error, Metadata(content_type="text/event-stream")) == -1
    chat = fixture("openai-tool-call-fragments.sse")
    for view in (cv.anthropic_sse_view, cv.responses_sse_view):
        assert view.render_priority(chat, Metadata(content_type="text/event-stream")) == -1


# --------------------------------------------------------------------------
# The views inside mitmproxy
# --------------------------------------------------------------------------


def test_names_are_url_safe():
    import re

    for view in cv.VIEWS:
        assert re.fullmatch(r"[A-Za-z0-9_\- ]+", view.name), view.name
    assert [v.name for v in cv.VIEWS] == ["Ollama NDJSON", "OpenAI SSE", "Anthropic SSE", "OpenAI Responses SSE"]


def test_register_is_idempotent_and_replaces_by_name():
    reg = contentviews.ContentviewRegistry()
    changes = []

    def on_change(view):
        changes.append(view)

    reg.on_change.connect(on_change)

    class Other(contentviews.Contentview):
        name = "OpenAI SSE"

        def prettify(self, data, metadata):
            return ""

    reg.register(Other())
    cv.register(reg)
    cv.register(reg)
    assert reg["ollama ndjson"] is cv.ollama_ndjson_view
    assert reg["openai sse"] is cv.openai_sse_view, "a view of the same name is replaced, as mitmproxy does"
    assert len(changes) == 1 + len(cv.VIEWS)  # the second register() was a no-op


@pytest.mark.parametrize(
    ("body", "content_type", "expected_view", "needle"),
    [
        (fixture("ollama-chat-thinking-tools.ndjson"), "application/x-ndjson", "Ollama NDJSON", "- name: get_weather"),
        (fixture("ollama-generate.ndjson"), "application/x-ndjson; charset=utf-8", "Ollama NDJSON", "The sky is blue."),
        (fixture("ollama-chat-error.ndjson"), "application/x-ndjson", "Ollama NDJSON", "error:"),
        (fixture("openai-tool-calls-parallel.sse"), "text/event-stream; charset=utf-8", "OpenAI SSE", "radiance"),
        (fixture("openai-refusal.sse"), "text/event-stream", "OpenAI SSE", "refusal:"),
        (fixture("openai-plain-text-no-usage.sse"), None, "OpenAI SSE", "South Atlantic Ocean."),
        (fixture("ollama-generate.ndjson"), None, "Ollama NDJSON", "The sky is blue."),
    ],
)
def test_auto_selected_by_content_type(registered, body, content_type, expected_view, needle):
    f = response_flow(body, content_type)
    with taddons.context():
        result = contentviews.prettify_message(f.response, f)  # view_name="auto"
        assert result.view_name == expected_view
        assert result.syntax_highlight == "yaml"
        assert needle in result.text
        metadata = contentviews.make_metadata(f.response, f)
        assert registered.get_view(body, metadata).name == expected_view


@pytest.mark.parametrize(
    ("body", "content_type", "not_view"),
    [
        # Non-streamed JSON stays with mitmproxy's JSON view.
        (b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":true}', "application/json", None),
        (b'{"id":"x","object":"chat.completion","choices":[]}', "application/json", None),
        # Other SSE (e.g. Anthropic-style events) and other NDJSON are not claimed.
        (b'event: message_start\ndata: {"type":"message_start"}\n\n', "text/event-stream", "OpenAI SSE"),
        (b"hello", "text/plain", None),
    ],
)
def test_not_selected_for_other_bodies(registered, body, content_type, not_view):
    f = response_flow(body, content_type)
    with taddons.context():
        result = contentviews.prettify_message(f.response, f)
        assert result.view_name not in ("Ollama NDJSON", "OpenAI SSE")


def test_sniffing_survives_a_first_line_longer_than_the_sniff_limit():
    big = "x" * (SNIFF_BYTES + 10)
    sse = (
        b"data: "
        + json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": big}}]}).encode()
        + b"\n\ndata: [DONE]\n\n"
    )
    ndjson = (
        json.dumps({"model": "m", "message": {"role": "assistant", "content": big}, "done": False}).encode() + b"\n"
    )
    assert cv.openai_sse_view.render_priority(sse, Metadata(content_type="text/event-stream")) == 2
    assert cv.ollama_ndjson_view.render_priority(ndjson, Metadata(content_type="application/x-ndjson")) == 2
    assert cv.summarize_sse(sse).choices[0].content == big


def test_other_ndjson_still_readable(registered):
    """Pull progress is NDJSON too: the view claims it (the JSON view would fail) and shows it."""
    body = b'{"status":"pulling manifest"}\n{"status":"success"}\n'
    f = response_flow(body, "application/x-ndjson")
    with taddons.context():
        result = contentviews.prettify_message(f.response, f)
        assert result.view_name == "Ollama NDJSON"
        assert "last_status: success" in result.text


def test_sse_view_on_ndjson_shows_lines_raw():
    s = cv.summarize_sse(fixture("ollama-generate.ndjson"))
    assert s.events == 0 and len(s.raw_lines) == 4
    assert s.format == "unknown"


def test_explicit_view_on_garbage_does_not_error(registered):
    f = response_flow(b"\x00\x01\x02 not a stream", "application/x-ndjson")
    with taddons.context():
        for name in ("Ollama NDJSON", "OpenAI SSE"):
            result = contentviews.prettify_message(f.response, f, view_name=name)
            assert result.view_name == name
            assert result.syntax_highlight != "error"
            assert "not a stream" in result.text


def test_ndjson_view_appends_upstream_sse_from_flow_metadata(registered):
    f = response_flow(fixture("ollama-chat-thinking-tools.ndjson"), "application/x-ndjson")
    f.metadata[cv.UPSTREAM_SSE_METADATA_KEY] = fixture("openai-tool-call-fragments.sse")
    with taddons.context():
        result = contentviews.prettify_message(f.response, f)
    assert "upstream SSE" in result.text
    assert "call_Ri18CzwNncOY61C3aLD9JKX1" in result.text


def test_streamed_body_not_stored(registered):
    f = response_flow(b"", "application/x-ndjson")
    f.response.content = None  # what a streamed flow looks like without store_streamed_bodies
    with taddons.context():
        result = contentviews.prettify_message(f.response, f)
    assert result.text == "Content is missing."


def test_the_proxy_addon_adds_the_views(monkeypatch):
    """`mitmweb -r saved.flow -s addon/proxy.py` shows saved flows with the views: the addon adds them on load."""
    from addon.proxy import OllamaProxy

    registry = contentviews.ContentviewRegistry()  # as in a fresh process
    monkeypatch.setattr(contentviews, "registry", registry)
    with taddons.context(OllamaProxy()):
        assert registry["ollama ndjson"] is cv.ollama_ndjson_view and registry["openai sse"] is cv.openai_sse_view


def test_flow_list_columns_put_the_comment_in_mitmweb_s_list():
    from mitmproxy.options import Options
    from mitmproxy.tools.web.webaddons import WebAddon

    options = Options()
    cv.flow_list_columns(options)  # mitmdump: no web_columns option, nothing to do
    assert "web_columns" not in options
    with taddons.context(WebAddon(), options=options) as tctx:
        assert tuple(options.web_columns) == cv.MITMWEB_COLUMNS
        cv.flow_list_columns(options)
        assert tuple(options.web_columns) == cv.COLUMNS
        tctx.configure(WebAddon(), web_columns=["icon", "path"])  # the user's choice stays
        cv.flow_list_columns(options)
        assert options.web_columns == ["icon", "path"]
