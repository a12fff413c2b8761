"""The OpenAI SSE view: a chat-completion stream put back together.

The assembled content, reasoning (`reasoning_content` / `reasoning`), refusal, tool calls
accumulated by index from their argument fragments, `finish_reason` per choice and the `usage`
object; legacy `text_completion` streams too. Picked automatically for `text/event-stream`
bodies that look like OpenAI's. The events come from the proxy's one SSE decoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mitmproxy.contentviews import Metadata

from addon.views.summary import (
    Choice,
    ProxyView,
    StreamSummary,
    ToolCall,
    as_int,
    error_text,
    first_line,
    json_text,
    logger,
    render_summary,
    text_of,
)
from addon.wire.sse import Event, SSEDecoder

_SSE_TYPES = frozenset({"text/event-stream"})


def _sse_events(data: bytes | str) -> list[Event]:
    """The events of a whole SSE body; lines that are not SSE fields come as events named ``?``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    decoder = SSEDecoder(max_size=len(raw) + 1, keep_unknown=True)
    return decoder.feed(raw) + decoder.finish()


def _raw(event: Event) -> str:
    """An event as a person reads it in the stream."""
    text = event.data.decode("utf-8", "replace")
    if event.name == "?":
        return text
    return "\n".join(f"data: {line}" for line in text.split("\n"))


def summarize_sse(data: bytes | str) -> StreamSummary:
    """Assemble an OpenAI(-compatible) chat-completion SSE stream.

    Handles content, ``reasoning_content``/``reasoning``, ``refusal``, tool
    calls accumulated per index from argument fragments, legacy ``function_call``
    and ``text`` deltas, ``finish_reason``, ``usage`` and in-stream errors.
    Never raises: events that are not understood end up in ``raw_lines``.
    """
    summary = StreamSummary()
    kinds: set[str] = set()
    # Per choice: tool-call key (index, or id for servers that omit index) -> call.
    calls: dict[int, dict[Any, ToolCall]] = {}
    for ev in _sse_events(data):
        if ev.name == "?":  # not an SSE line at all
            summary.add_raw(_raw(ev))
            continue
        payload = ev.data.decode("utf-8", "replace").strip()
        if payload == "[DONE]":
            summary.finished = True
            continue
        try:
            obj = json.loads(payload)
        except ValueError:
            summary.add_raw(_raw(ev))
            continue
        if not isinstance(obj, dict):
            summary.add_raw(_raw(ev))
            continue
        try:
            if ev.name == "error" and "error" not in obj:
                obj = {"error": obj}
            _openai_chunk(summary, obj, kinds, calls)
        except Exception as e:  # noqa: BLE001 - defensive: never let one odd event break the view
            logger.debug("openai chunk not understood: %r", e)
            summary.add_raw(_raw(ev))
    summary.finish()
    if "chat" in kinds:
        summary.format = "openai-chat"
    elif "completion" in kinds:
        summary.format = "openai-completion"
    elif summary.events:
        summary.format = "openai"
    return summary


def _openai_chunk(
    summary: StreamSummary,
    obj: dict[str, Any],
    kinds: set[str],
    calls: dict[int, dict[Any, ToolCall]],
) -> None:
    summary.events += 1
    obj_type = obj.get("object")
    if isinstance(obj_type, str):
        if obj_type.startswith("chat.completion"):
            kinds.add("chat")
        elif obj_type == "text_completion":
            kinds.add("completion")
    if isinstance(obj.get("model"), str) and summary.model is None:
        summary.model = obj["model"]
    for key in ("id", "system_fingerprint", "service_tier", "created"):
        value = obj.get(key)
        if value not in (None, "") and key not in summary.info:
            summary.info[key] = value
    if "error" in obj and obj["error"] not in (None, ""):
        summary.errors.append(error_text(obj["error"]))
    usage = obj.get("usage")
    if isinstance(usage, dict):
        summary.stats = usage
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return
    for position, ch in enumerate(choices):
        if not isinstance(ch, dict):
            continue
        index = as_int(ch.get("index"))
        if index is None:
            index = position
        choice = summary.choice(index)
        delta = ch.get("delta")
        if not isinstance(delta, dict):
            delta = ch.get("message")
        if not isinstance(delta, dict):
            delta = {}
        if "delta" in ch or "message" in ch:
            kinds.add("chat")
        if isinstance(delta.get("role"), str) and choice.role is None:
            choice.role = delta["role"]
        choice.add("content", text_of(delta.get("content")))
        choice.add("thinking", text_of(delta.get("reasoning_content")))
        choice.add("thinking", text_of(delta.get("reasoning")))
        choice.add("refusal", text_of(delta.get("refusal")))
        if "text" in ch:  # legacy /v1/completions stream
            kinds.add("completion")
            choice.add("content", text_of(ch.get("text")))
        per_choice = calls.setdefault(index, {})
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for pos, frag in enumerate(tool_calls):
                if isinstance(frag, dict):
                    _tool_fragment(choice, per_choice, frag, pos)
        fc = delta.get("function_call")  # deprecated single function call
        if isinstance(fc, dict):
            _tool_fragment(choice, per_choice, {"index": "function_call", "function": fc}, 0)
        reason = ch.get("finish_reason")
        if reason not in (None, ""):
            choice.finish_reason = text_of(reason)


def _tool_fragment(choice: Choice, calls: dict[Any, ToolCall], frag: dict[str, Any], position: int) -> None:
    """Merge one ``delta.tool_calls[]`` fragment into the call it belongs to."""
    raw_index = frag.get("index")
    index = as_int(raw_index)
    frag_id = frag.get("id") if isinstance(frag.get("id"), str) and frag.get("id") else None
    key: Any
    if raw_index == "function_call":
        key = raw_index
    elif index is not None:
        key = index
    elif frag_id is not None:
        key = ("id", frag_id)  # servers that omit index: one id per call
    elif calls:
        key = next(reversed(calls))  # continuation of the latest call
    else:
        key = position
    call = calls.get(key)
    if call is None:
        call = ToolCall(index=index if index is not None else len(choice.tool_calls))
        calls[key] = call
        choice.tool_calls.append(call)
    if frag_id and not call.id:
        call.id = frag_id
    fn = frag.get("function")
    if isinstance(fn, dict):
        name = text_of(fn.get("name"))
        if name and name != call.name:
            call.name = name if not call.name else call.name + name
        args = fn.get("arguments")
        if isinstance(args, str):
            call.add_arguments(args)
        elif args is not None:
            call.add_arguments(json_text(args))


def _sniff_sse(data: bytes) -> bool:
    """Does the first ``data:`` event look like an OpenAI chat/completion chunk (or an error)?"""
    found = first_line(data, b"data:")
    if found is None:
        return False
    payload, cut = found
    try:
        obj = json.loads(payload)
    except ValueError:
        return cut and payload.startswith(b"{") and (b'"chat.completion' in payload or b'"choices"' in payload)
    if not isinstance(obj, dict):
        return False
    obj_type = obj.get("object")
    if isinstance(obj_type, str) and (obj_type.startswith("chat.completion") or obj_type == "text_completion"):
        return True
    return isinstance(obj.get("choices"), list) or "error" in obj


#: Key in ``flow.metadata`` under which the addon keeps the raw upstream body (bytes or str): the
#: views of converted streams append a summary of it, since mitmweb does not show ``flow.metadata``.
UPSTREAM_SSE_METADATA_KEY = "upstream_response"  # = addon.exchange.UPSTREAM_BODY


def with_upstream_sse(text: str, metadata: Metadata) -> str:
    """A converted stream's view followed by the summary of the upstream SSE it was made from, if the flow keeps it."""
    try:
        flow = metadata.flow
        upstream = getattr(flow, "metadata", {}).get(UPSTREAM_SSE_METADATA_KEY) if flow else None
        if isinstance(upstream, (bytes, str)) and upstream:
            body = upstream.encode("utf-8", "replace") if isinstance(upstream, str) else upstream
            if not body.lstrip().startswith((b"data:", b":")):  # a whole JSON answer, not a stream
                return text
            text += f"\n# ---- upstream SSE (flow.metadata[{UPSTREAM_SSE_METADATA_KEY!r}]) ----\n" + render_summary(
                summarize_sse(body)
            )
    except Exception:  # noqa: BLE001 - defensive: a view never raises
        logger.debug("upstream SSE summary failed", exc_info=True)
    return text


class ConvertedSSEView(ProxyView):
    """A view of a stream the proxy converted from the upstream's SSE (the agents' APIs): picked above the
    OpenAI SSE view (2), which claims any error event, for bodies its `sniff` recognizes; the upstream's
    SSE summarized after it."""

    def sniff(self, data: bytes) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        return with_upstream_sse(super().prettify(data, metadata), metadata)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        try:
            if not data or metadata.content_type != "text/event-stream":
                return -1
            return 2.5 if self.sniff(data) else -1
        except Exception:  # noqa: BLE001 - defensive: a view never raises
            return -1


def sse_events(data: bytes | str) -> list[Event]:
    """The events of a whole SSE body (lines that are not SSE fields come as events named ``?``)."""
    return _sse_events(data)


def raw_event(event: Event) -> str:
    """An event as a person reads it in the stream."""
    return _raw(event)


def typed_events(
    data: bytes | str, summary: StreamSummary, handle: Callable[[dict[str, Any]], None], api: str
) -> str | None:
    """Hand each event whose data is a JSON object with a string `type` (the Anthropic and Responses
    APIs' events) to `handle`; anything else, and an event `handle` fails on, goes to the summary's
    raw lines. Never raises. Returns the type of the last event handed over."""
    last = None
    for event in sse_events(data):
        try:
            obj = json.loads(event.data) if event.name != "?" else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            summary.add_raw(raw_event(event))
            continue
        try:
            last = obj["type"]
            handle(obj)
        except Exception as e:  # noqa: BLE001 - defensive: never let one odd event break the view
            logger.debug("%s event not understood: %r", api, e)
            summary.add_raw(raw_event(event))
    return last


class OpenAISSEView(ProxyView):
    """OpenAI(-compatible) chat-completion SSE streams."""

    name = "OpenAI SSE"

    def _summarize(self, data: bytes) -> StreamSummary:
        return summarize_sse(data)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        try:
            if not data:
                return -1
            ctype = metadata.content_type
            if ctype in _SSE_TYPES:
                return 2 if _sniff_sse(data) else -1
            if ctype in (None, "text/plain", "application/octet-stream"):
                if data.lstrip().startswith(b"data:") and _sniff_sse(data):
                    return 1.5
            return -1
        except Exception:  # noqa: BLE001 - defensive: a view never raises
            return -1


openai_sse_view = OpenAISSEView()
