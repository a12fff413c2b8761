"""The OpenAI Responses view: a `/v1/responses` stream put back together.

The assembled output text, refusal, reasoning (summary and raw text), function calls (`name`,
`call_id`, the `namespace` of a namespaced tool, their argument deltas joined), the final
status (`completed`, `incomplete` with its reason, `failed` with its error), the usage, and any
`error` event; then, when the flow keeps it, the upstream's chat-completion SSE it was made
from. Picked automatically for `text/event-stream` bodies whose first event is `response.*`.
"""

from __future__ import annotations

import json
from typing import Any

from addon.views.openai_sse import ConvertedSSEView, typed_events
from addon.views.summary import StreamSummary, ToolCall, as_int, error_text, first_line, text_of

_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def summarize_responses(data: bytes | str) -> StreamSummary:
    """Assemble an OpenAI Responses SSE stream. Never raises: events not understood end up in `raw_lines`."""
    summary = StreamSummary(format="openai-responses", finish_label="status")
    calls: dict[Any, ToolCall] = {}  # by output_index (and item id)
    last = typed_events(data, summary, lambda obj: _event(summary, obj, calls), "responses")
    summary.finish()
    if not summary.events and not summary.raw_lines:
        summary.format = "unknown"
    summary.finished = last in _ENDS
    if summary.events:
        summary.ending = last if summary.finished else f"no response.completed (last event: {last})"
    return summary


def _response(summary: StreamSummary, response: Any) -> None:
    if not isinstance(response, dict):
        return
    if isinstance(response.get("model"), str):
        summary.model = response["model"]
    if response.get("id") and "id" not in summary.info:
        summary.info["id"] = response["id"]
    if isinstance(response.get("usage"), dict):
        summary.stats = response["usage"]
    status = response.get("status")
    if status in ("completed", "incomplete", "failed"):
        choice = summary.choice(0)
        reason = response.get("incomplete_details")
        choice.finish_reason = text_of(status) + (
            f" ({text_of(reason.get('reason'))})" if isinstance(reason, dict) and reason.get("reason") else ""
        )
        if isinstance(response.get("error"), dict) and not summary.errors:
            summary.errors.append(error_text(response["error"]))


def _call(summary: StreamSummary, calls: dict[Any, ToolCall], obj: dict[str, Any]) -> ToolCall:
    key = as_int(obj.get("output_index"))
    call = calls.get(key)
    if call is None:
        choice = summary.choice(0)
        call = calls[key] = ToolCall(index=len(choice.tool_calls))
        choice.tool_calls.append(call)
    return call


def _event(summary: StreamSummary, obj: dict[str, Any], calls: dict[Any, ToolCall]) -> None:
    kind = obj["type"]
    summary.events += 1
    if kind.startswith("response.") and "response" in obj:
        _response(summary, obj["response"])
        return
    choice = summary.choice(0)
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = obj.get("item")
        if isinstance(item, dict) and item.get("type") == "function_call":
            call = _call(summary, calls, obj)
            call.id = text_of(item.get("call_id")) or call.id
            name = text_of(item.get("name"))
            call.name = f"{text_of(item['namespace'])}.{name}" if item.get("namespace") else name
            if kind.endswith(".done") and not call.arguments and not call._parts:
                call.add_arguments(text_of(item.get("arguments")))
        elif isinstance(item, dict) and item.get("role") and choice.role is None:
            choice.role = text_of(item["role"])
    elif kind == "response.output_text.delta":
        choice.add("content", text_of(obj.get("delta")))
    elif kind == "response.refusal.delta":
        choice.add("refusal", text_of(obj.get("delta")))
    elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        choice.add("thinking", text_of(obj.get("delta")))
    elif kind == "response.function_call_arguments.delta":
        _call(summary, calls, obj).add_arguments(text_of(obj.get("delta")))
    elif kind == "error":
        summary.errors.append(error_text({"message": obj.get("message"), "code": obj.get("code")}))


def _sniff(data: bytes) -> bool:
    """Does the first event look like a Responses stream?"""
    found = first_line(data, b"data:")
    if found is None:
        return False
    payload, cut = found
    try:
        obj = json.loads(payload)
    except ValueError:
        return cut and payload.startswith(b'{"type":"response.')
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return False
    return obj["type"].startswith("response.") or (obj["type"] == "error" and "sequence_number" in obj)


class ResponsesSSEView(ConvertedSSEView):
    """OpenAI Responses SSE streams (`/v1/responses`)."""

    name = "OpenAI Responses SSE"

    def _summarize(self, data: bytes) -> StreamSummary:
        return summarize_responses(data)

    def sniff(self, data: bytes) -> bool:
        return _sniff(data)


responses_sse_view = ResponsesSSEView()
