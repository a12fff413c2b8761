"""The Ollama NDJSON view: an /api/chat or /api/generate stream put back together.

The assembled message text, thinking, tool calls with their arguments, `done_reason`, the final
metrics (token counts, durations in ms, tokens/s) and any `{"error": ...}` line; then, when the
flow keeps the raw upstream SSE (metadata `upstream_response`), the same summary of that.
Picked automatically for NDJSON bodies.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy.contentviews import Metadata

from addon.views.openai_sse import with_upstream_sse
from addon.views.summary import (
    SNIFF_BYTES,
    ProxyView,
    StreamSummary,
    ToolCall,
    as_int,
    decode,
    error_text,
    first_line,
    json_text,
    logger,
    text_of,
)

_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)

_OLLAMA_DURATIONS = (
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)


def _ollama_tool_call(raw: Any, position: int) -> ToolCall:
    """An Ollama tool call: ``{"id", "function": {"index", "name", "arguments": {...}}}``."""
    if not isinstance(raw, dict):
        return ToolCall(index=position, name="?", arguments=json_text(raw))
    fn = raw.get("function")
    if not isinstance(fn, dict):
        fn = {}
    index = as_int(fn.get("index"))
    if index is None:
        index = as_int(raw.get("index"))
    args = fn.get("arguments")
    if args is None:
        arguments = ""
    elif isinstance(args, str):
        arguments = args
    else:
        arguments = json_text(args)
    call_id = raw.get("id")
    return ToolCall(
        index=index if index is not None else position,
        id=call_id if isinstance(call_id, str) and call_id else None,
        name=text_of(fn.get("name")),
        arguments=arguments,
    )


def summarize_ndjson(data: bytes | str) -> StreamSummary:
    """Assemble an Ollama ``/api/chat`` or ``/api/generate`` NDJSON stream.

    Never raises: lines that are not JSON objects end up in ``raw_lines``.
    """
    summary = StreamSummary()
    kinds: set[str] = set()
    text = decode(data)
    # Split on "\n" only: str.splitlines() would also split on U+2028, U+0085, ...
    # which JSON allows unescaped inside strings.
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        stripped = line.strip()
        if not stripped:
            continue
        try:
            obj = json.loads(stripped)
        except ValueError:
            summary.add_raw(line)
            continue
        if not isinstance(obj, dict):
            summary.add_raw(line)
            continue
        try:
            _ollama_chunk(summary, obj, kinds)
        except Exception as e:  # noqa: BLE001 - defensive: never let one odd line break the view
            logger.debug("ollama chunk not understood: %r", e)
            summary.add_raw(line)
    summary.finish()
    if "chat" in kinds:
        summary.format = "ollama-chat"
    elif "generate" in kinds:
        summary.format = "ollama-generate"
    elif summary.events:
        summary.format = "ollama"
    return summary


def _ollama_chunk(summary: StreamSummary, obj: dict[str, Any], kinds: set[str]) -> None:
    summary.events += 1
    if isinstance(obj.get("model"), str) and summary.model is None:
        summary.model = obj["model"]
    if isinstance(obj.get("created_at"), str):
        summary.info.setdefault("first_created_at", obj["created_at"])
        summary.info["last_created_at"] = obj["created_at"]
    if "error" in obj and obj["error"] not in (None, ""):
        summary.errors.append(error_text(obj["error"]))

    msg = obj.get("message")
    has_text = isinstance(msg, dict) or "response" in obj or "thinking" in obj
    choice = summary.choice(0) if has_text or obj.get("tool_calls") else None

    if isinstance(msg, dict):
        kinds.add("chat")
        assert choice is not None
        if isinstance(msg.get("role"), str) and choice.role is None:
            choice.role = msg["role"]
        choice.add("content", text_of(msg.get("content")))
        choice.add("thinking", text_of(msg.get("thinking")))
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for raw in calls:
                choice.tool_calls.append(_ollama_tool_call(raw, len(choice.tool_calls)))
        images = msg.get("images")
        if isinstance(images, list) and images:
            summary.info["images"] = summary.info.get("images", 0) + len(images)
    if "response" in obj or ("thinking" in obj and not isinstance(msg, dict)):
        kinds.add("generate")
        assert choice is not None
        choice.add("content", text_of(obj.get("response")))
        choice.add("thinking", text_of(obj.get("thinking")))
    calls = obj.get("tool_calls")  # generate: built-in parsers put them top level
    if isinstance(calls, list) and choice is not None:
        for raw in calls:
            choice.tool_calls.append(_ollama_tool_call(raw, len(choice.tool_calls)))

    if "status" in obj and isinstance(obj["status"], str):  # pull/push/create progress
        summary.info["last_status"] = obj["status"]

    if obj.get("done") is True:
        summary.finished = True
        reason = obj.get("done_reason")
        if reason is not None:
            summary.choice(0).finish_reason = text_of(reason)
        _ollama_metrics(summary, obj)


def _ollama_metrics(summary: StreamSummary, obj: dict[str, Any]) -> None:
    stats = summary.stats
    for key in ("prompt_eval_count", "eval_count"):
        n = as_int(obj.get(key))
        if n is not None:
            stats[key] = n
    for key in _OLLAMA_DURATIONS:
        ns = as_int(obj.get(key))
        if ns is not None:
            stats[f"{key}_ms"] = round(ns / 1e6, 2)
    eval_count, eval_ns = as_int(obj.get("eval_count")), as_int(obj.get("eval_duration"))
    if eval_count is not None and eval_ns:
        stats["tokens_per_s"] = round(eval_count / eval_ns * 1e9, 2)
    p_count, p_ns = as_int(obj.get("prompt_eval_count")), as_int(obj.get("prompt_eval_duration"))
    if p_count is not None and p_ns:
        stats["prompt_tokens_per_s"] = round(p_count / p_ns * 1e9, 2)
    context = obj.get("context")
    if isinstance(context, list):
        stats["context_tokens"] = len(context)


def _sniff_ndjson(data: bytes) -> bool:
    """Does the body start like an Ollama chat/generate stream (or an Ollama error line)?"""
    found = first_line(data)
    if found is None:
        return False
    line, cut = found
    try:
        obj = json.loads(line)
    except ValueError:
        # A first line longer than the sniff limit: judge by its keys.
        return cut and line.startswith(b"{") and (b'"message"' in line or b'"response"' in line)
    if not isinstance(obj, dict):
        return False
    if "message" in obj or "response" in obj:
        return "done" in obj or "model" in obj
    return "error" in obj and len(obj) <= 2


class OllamaNDJSONView(ProxyView):
    """Ollama ``/api/chat`` and ``/api/generate`` NDJSON streams."""

    name = "Ollama NDJSON"

    def _summarize(self, data: bytes) -> StreamSummary:
        return summarize_ndjson(data)

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        return with_upstream_sse(super().prettify(data, metadata), metadata)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        try:
            if not data:
                return -1
            ctype = metadata.content_type
            if ctype in _NDJSON_TYPES:
                # Beats the JSON view (1), which claims */*json types and then fails on NDJSON.
                return 2 if _sniff_ndjson(data) else 1.1
            if ctype in (None, "text/plain", "application/octet-stream", "application/json"):
                if data.count(b"\n", 0, SNIFF_BYTES) >= 2 and _sniff_ndjson(data):
                    return 1.5
            return -1
        except Exception:  # noqa: BLE001 - defensive: a view never raises
            return -1


ollama_ndjson_view = OllamaNDJSONView()
