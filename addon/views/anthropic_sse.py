"""The Anthropic Messages view: a `/v1/messages` stream put back together.

The assembled text, thinking, tool calls (`tool_use` blocks with their `input_json_delta`s
joined), `stop_reason`, the usage (`message_start`'s, updated by `message_delta`'s) and any
`event: error`; then, when the flow keeps it, the upstream's chat-completion SSE it was made
from. Picked automatically for `text/event-stream` bodies that start like Anthropic's.
"""

from __future__ import annotations

import json
from typing import Any

from addon.views.openai_sse import ConvertedSSEView, typed_events
from addon.views.summary import StreamSummary, ToolCall, as_int, error_text, first_line, text_of

_START_EVENTS = frozenset({"message_start", "ping", "content_block_start"})


def summarize_anthropic(data: bytes | str) -> StreamSummary:
    """Assemble an Anthropic Messages SSE stream. Never raises: events not understood end up in `raw_lines`."""
    summary = StreamSummary(format="anthropic-messages", finish_label="stop_reason")
    choice = summary.choice(0)
    blocks: dict[int, str | ToolCall] = {}  # content block index → its kind, or its tool call
    last = typed_events(data, summary, lambda obj: _event(summary, obj, blocks), "anthropic")
    summary.finish()
    if not summary.events and not summary.raw_lines:
        summary.format = "unknown"
    if choice.role is None and not (choice.content or choice.thinking or choice.tool_calls or choice.finish_reason):
        summary.choices.clear()
    summary.finished = last == "message_stop"
    if summary.events:
        summary.ending = "message_stop" if summary.finished else f"no message_stop (last event: {last})"
    return summary


def _event(summary: StreamSummary, obj: dict[str, Any], blocks: dict[int, str | ToolCall]) -> None:
    kind = obj["type"]
    summary.events += 1
    choice = summary.choice(0)
    if kind == "message_start":
        message = obj.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("model"), str):
                summary.model = message["model"]
            if message.get("id"):
                summary.info["id"] = message["id"]
            choice.role = text_of(message.get("role")) or "assistant"
            if isinstance(message.get("usage"), dict):
                summary.stats.update(message["usage"])
    elif kind == "content_block_start":
        index = as_int(obj.get("index"))
        block = obj.get("content_block")
        if index is None or not isinstance(block, dict):
            return
        if block.get("type") == "tool_use":
            call = ToolCall(index=len(choice.tool_calls), id=text_of(block.get("id")) or None)
            call.name = text_of(block.get("name"))
            choice.tool_calls.append(call)
            blocks[index] = call
        else:
            blocks[index] = text_of(block.get("type"))
            if block.get("type") == "text":
                choice.add("content", text_of(block.get("text")))
    elif kind == "content_block_delta":
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return
        target = blocks.get(as_int(obj.get("index")) or 0)
        if delta.get("type") == "text_delta":
            choice.add("content", text_of(delta.get("text")))
        elif delta.get("type") == "thinking_delta":
            choice.add("thinking", text_of(delta.get("thinking")))
        elif delta.get("type") == "input_json_delta" and isinstance(target, ToolCall):
            target.add_arguments(text_of(delta.get("partial_json")))
    elif kind == "message_delta":
        delta = obj.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            choice.finish_reason = text_of(delta["stop_reason"])
            if delta.get("stop_sequence"):
                summary.info["stop_sequence"] = delta["stop_sequence"]
        if isinstance(obj.get("usage"), dict):
            summary.stats.update(obj["usage"])
    elif kind == "error":
        summary.errors.append(error_text(obj.get("error")))


def _sniff(data: bytes) -> bool:
    """Does the first event look like an Anthropic Messages stream (or its error)?"""
    found = first_line(data, b"data:")
    if found is None:
        return False
    payload, cut = found
    try:
        obj = json.loads(payload)
    except ValueError:
        return cut and b'"type":"message_start"' in payload
    if not isinstance(obj, dict):
        return False
    kind = obj.get("type")
    return kind in _START_EVENTS or (kind == "error" and isinstance(obj.get("error"), dict) and "type" in obj["error"])


class AnthropicSSEView(ConvertedSSEView):
    """Anthropic Messages SSE streams (`/v1/messages`)."""

    name = "Anthropic SSE"

    def _summarize(self, data: bytes) -> StreamSummary:
        return summarize_anthropic(data)

    def sniff(self, data: bytes) -> bool:
        return _sniff(data)


anthropic_sse_view = AnthropicSSEView()
