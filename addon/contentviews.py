"""mitmproxy content views for LLM streams: Ollama NDJSON and OpenAI SSE.

Two views for mitmproxy 12 (``mitmweb``, the ``mitmproxy`` console, and
``mitmdump --set flow_detail=3``) that turn a streamed chat answer back into
something a person can read:

``Ollama NDJSON``
    ``application/x-ndjson`` bodies from ``/api/chat`` and ``/api/generate``:
    the assembled message text, thinking, tool calls with their arguments,
    ``done_reason``, the final metrics (token counts, durations in ms,
    tokens/s) and any ``{"error": ...}`` line.

``OpenAI SSE``
    ``text/event-stream`` chat-completion streams (``chat.completion.chunk``;
    legacy ``text_completion`` streams too): the assembled content, reasoning
    (``reasoning_content`` / ``reasoning``), refusal, tool calls accumulated by
    index from their argument fragments, ``finish_reason`` per choice and the
    ``usage`` object.

Both are picked automatically by content type (``render_priority``) and can
also be chosen by name. Non-streamed JSON bodies are left to mitmproxy's own
JSON view.

The parsing is pure and usable without mitmproxy running:
``summarize_ndjson(data)`` and ``summarize_sse(data)`` return a
:class:`StreamSummary`, and ``render_summary(summary)`` formats it as the
YAML-like text the views show. None of them raise on malformed input: lines
that cannot be understood are kept and shown raw.

Registration: call :func:`register` (idempotent) from the addon's ``load``
hook and :func:`unregister` from ``done``, or put :class:`ContentViews` in
the script's ``addons`` list, which does exactly that. The file is also a
mitmproxy script of its own that adds only the views:
``mitmweb -n -r saved.flow -s addon/contentviews.py``.
"""

import json
import logging
import math
import re
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

from mitmproxy import contentviews
from mitmproxy.contentviews import Contentview
from mitmproxy.contentviews import Metadata
from mitmproxy.contentviews import SyntaxHighlight

__all__ = [
    "ToolCall",
    "Choice",
    "StreamSummary",
    "summarize_ndjson",
    "summarize_sse",
    "render_summary",
    "OllamaNDJSONView",
    "OpenAISSEView",
    "ollama_ndjson_view",
    "openai_sse_view",
    "VIEWS",
    "register",
    "unregister",
    "ContentViews",
    "UPSTREAM_SSE_METADATA_KEY",
]

logger = logging.getLogger(__name__)

#: Key in ``flow.metadata`` under which the addon may keep the raw upstream SSE
#: body (bytes or str). When present, the Ollama NDJSON view appends a summary
#: of it, since mitmweb does not show ``flow.metadata`` otherwise.
UPSTREAM_SSE_METADATA_KEY = "upstream_response"  # = addon.routes.UPSTREAM_BODY

#: How much of a body ``render_priority`` looks at to recognise the format.
_SNIFF_BYTES = 64 * 1024
#: At most this many unparsable lines are kept in a summary (the rest counted).
_MAX_RAW_LINES = 200
#: Unparsable lines longer than this are cut for display.
_MAX_RAW_LINE_CHARS = 2000

_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
_SSE_TYPES = frozenset({"text/event-stream"})
#: SSE line ends (CRLF, LF or CR); not str.splitlines(), which also splits on U+2028 etc.
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")

_OLLAMA_DURATIONS = (
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)

Format = Literal[
    "ollama-chat",
    "ollama-generate",
    "ollama",
    "openai-chat",
    "openai-completion",
    "openai",
    "unknown",
]

_FORMAT_TITLES: dict[str, str] = {
    "ollama-chat": "Ollama chat stream (/api/chat)",
    "ollama-generate": "Ollama generate stream (/api/generate)",
    "ollama": "Ollama NDJSON stream",
    "openai-chat": "OpenAI chat completion stream",
    "openai-completion": "OpenAI legacy completion stream",
    "openai": "OpenAI SSE stream",
    "unknown": "Unrecognised stream",
}


# --------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------


@dataclass
class ToolCall:
    """One tool call, assembled from its stream fragments."""

    index: int | None = None
    id: str | None = None
    name: str = ""
    arguments: str = ""
    """The arguments as JSON text (OpenAI: the concatenated fragments;
    Ollama: the argument object re-serialised)."""

    _parts: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def add_arguments(self, text: str) -> None:
        """Queue an argument fragment (joined by ``finish()``: no quadratic concatenation)."""
        if text:
            self._parts.append(text)

    def finish(self) -> None:
        if self._parts:
            self.arguments += "".join(self._parts)
            self._parts.clear()

    def parsed_arguments(self) -> Any | None:
        """The arguments decoded from JSON, or None if they are not valid JSON."""
        if not self.arguments.strip():
            return None
        try:
            return json.loads(self.arguments)
        except ValueError:
            return None


@dataclass
class Choice:
    """One assistant answer: an OpenAI choice, or Ollama's single message."""

    index: int = 0
    role: str | None = None
    content: str = ""
    thinking: str = ""
    """Ollama ``thinking``; OpenAI-compatible ``reasoning_content`` / ``reasoning``."""
    refusal: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    """OpenAI ``finish_reason`` or Ollama ``done_reason``."""
    _parts: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def add(self, name: Literal["content", "thinking", "refusal"], text: str) -> None:
        """Queue a text piece (joined by ``finish()``: no quadratic concatenation)."""
        if text:
            self._parts.setdefault(name, []).append(text)

    def finish(self) -> None:
        for name, parts in self._parts.items():
            setattr(self, name, getattr(self, name) + "".join(parts))
        self._parts.clear()
        for call in self.tool_calls:
            call.finish()


@dataclass
class StreamSummary:
    """What a whole streamed answer amounts to."""

    format: Format = "unknown"
    model: str | None = None
    choices: list[Choice] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    """Ollama: final metrics (durations converted to ms, plus tokens/s).
    OpenAI: the last ``usage`` object seen."""
    info: dict[str, Any] = field(default_factory=dict)
    """Other identifying fields: id, created_at, system_fingerprint, ..."""
    errors: list[str] = field(default_factory=list)
    events: int = 0
    """How many JSON chunks were understood."""
    finished: bool = False
    """Ollama: a ``done: true`` line was seen. OpenAI: ``data: [DONE]`` was seen."""
    raw_lines: list[str] = field(default_factory=list)
    """Lines (or SSE events) that could not be understood, shown as they are."""
    raw_lines_dropped: int = 0

    @property
    def empty(self) -> bool:
        return not (self.events or self.raw_lines or self.errors or self.finished)

    def choice(self, index: int = 0) -> Choice:
        """The choice with this index, created on first use."""
        for c in self.choices:
            if c.index == index:
                return c
        c = Choice(index=index)
        self.choices.append(c)
        self.choices.sort(key=lambda x: x.index)
        return c

    def finish(self) -> None:
        """Join the queued text pieces of every choice and tool call."""
        for c in self.choices:
            c.finish()

    def add_raw(self, line: str) -> None:
        if len(self.raw_lines) >= _MAX_RAW_LINES:
            self.raw_lines_dropped += 1
            return
        if len(line) > _MAX_RAW_LINE_CHARS:
            line = line[:_MAX_RAW_LINE_CHARS] + f"... ({len(line)} chars)"
        self.raw_lines.append(line)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    text = bytes(data).decode("utf-8", "replace")
    return text.removeprefix("\ufeff")


def _str(value: Any) -> str:
    """Text pieces from a chunk: strings as they are, None as "", anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _json_text(value)


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _error_text(value: Any) -> str:
    """Ollama's ``"error": "text"`` or OpenAI's ``"error": {"message": ...}``."""
    if isinstance(value, dict):
        msg = value.get("message")
        parts = [str(msg) if msg is not None else _json_text(value)]
        for key in ("type", "code"):
            if value.get(key) not in (None, ""):
                parts.append(f"{key}={value[key]}")
        return " ".join(parts) if msg is not None else parts[0]
    return _str(value)


def _ollama_tool_call(raw: Any, position: int) -> ToolCall:
    """An Ollama tool call: ``{"id", "function": {"index", "name", "arguments": {...}}}``."""
    if not isinstance(raw, dict):
        return ToolCall(index=position, name="?", arguments=_json_text(raw))
    fn = raw.get("function")
    if not isinstance(fn, dict):
        fn = {}
    index = _as_int(fn.get("index"))
    if index is None:
        index = _as_int(raw.get("index"))
    args = fn.get("arguments")
    if args is None:
        arguments = ""
    elif isinstance(args, str):
        arguments = args
    else:
        arguments = _json_text(args)
    call_id = raw.get("id")
    return ToolCall(
        index=index if index is not None else position,
        id=call_id if isinstance(call_id, str) and call_id else None,
        name=_str(fn.get("name")),
        arguments=arguments,
    )


# --------------------------------------------------------------------------
# Ollama NDJSON
# --------------------------------------------------------------------------


def summarize_ndjson(data: bytes | str) -> StreamSummary:
    """Assemble an Ollama ``/api/chat`` or ``/api/generate`` NDJSON stream.

    Never raises: lines that are not JSON objects end up in ``raw_lines``.
    """
    summary = StreamSummary()
    kinds: set[str] = set()
    try:
        text = _decode(data)
    except Exception as e:  # pragma: no cover - decode with "replace" does not fail
        summary.errors.append(f"cannot decode body: {e}")
        return summary
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
        except Exception as e:  # defensive: never let one odd line break the view
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
        summary.errors.append(_error_text(obj["error"]))

    msg = obj.get("message")
    has_text = isinstance(msg, dict) or "response" in obj or "thinking" in obj
    choice = summary.choice(0) if has_text or obj.get("tool_calls") else None

    if isinstance(msg, dict):
        kinds.add("chat")
        assert choice is not None
        if isinstance(msg.get("role"), str) and choice.role is None:
            choice.role = msg["role"]
        choice.add("content", _str(msg.get("content")))
        choice.add("thinking", _str(msg.get("thinking")))
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
        choice.add("content", _str(obj.get("response")))
        choice.add("thinking", _str(obj.get("thinking")))
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
            summary.choice(0).finish_reason = _str(reason)
        _ollama_metrics(summary, obj)


def _ollama_metrics(summary: StreamSummary, obj: dict[str, Any]) -> None:
    stats = summary.stats
    for key in ("prompt_eval_count", "eval_count"):
        n = _as_int(obj.get(key))
        if n is not None:
            stats[key] = n
    for key in _OLLAMA_DURATIONS:
        ns = _as_int(obj.get(key))
        if ns is not None:
            stats[f"{key}_ms"] = round(ns / 1e6, 2)
    eval_count, eval_ns = _as_int(obj.get("eval_count")), _as_int(obj.get("eval_duration"))
    if eval_count is not None and eval_ns:
        stats["tokens_per_s"] = round(eval_count / eval_ns * 1e9, 2)
    p_count, p_ns = _as_int(obj.get("prompt_eval_count")), _as_int(obj.get("prompt_eval_duration"))
    if p_count is not None and p_ns:
        stats["prompt_tokens_per_s"] = round(p_count / p_ns * 1e9, 2)
    context = obj.get("context")
    if isinstance(context, list):
        stats["context_tokens"] = len(context)


# --------------------------------------------------------------------------
# OpenAI SSE
# --------------------------------------------------------------------------


@dataclass
class _SSEEvent:
    event: str | None
    data: str
    raw: str


def _sse_events(text: str) -> list[_SSEEvent]:
    """Split an SSE body into events (WHATWG rules: blank line ends an event,
    multiple ``data:`` lines join with newlines, ``:`` lines are comments).

    Lines that are not SSE fields are returned as events with ``event="?"``.
    """
    events: list[_SSEEvent] = []
    data_lines: list[str] = []
    raw_lines: list[str] = []
    event_name: str | None = None

    def flush() -> None:
        nonlocal data_lines, raw_lines, event_name
        if data_lines:
            events.append(_SSEEvent(event_name, "\n".join(data_lines), "\n".join(raw_lines)))
        data_lines, raw_lines, event_name = [], [], None

    for line in _SSE_LINE_END.split(text):
        if not line.strip():
            flush()
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        name, sep, value = line.partition(":")
        if not sep:
            name, value = line, ""
        value = value.removeprefix(" ")
        if name == "data":
            data_lines.append(value)
            raw_lines.append(line)
        elif name == "event":
            event_name = value
            raw_lines.append(line)
        elif name in ("id", "retry"):
            pass
        else:
            # Not an SSE field (e.g. an NDJSON body viewed as SSE, or garbage).
            flush()
            events.append(_SSEEvent("?", line, line))
    flush()
    return events


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
    try:
        events = _sse_events(_decode(data))
    except Exception as e:  # pragma: no cover - defensive
        summary.errors.append(f"cannot split SSE body: {e}")
        return summary
    for ev in events:
        if ev.event == "?":  # not an SSE line at all
            summary.add_raw(ev.raw)
            continue
        payload = ev.data.strip()
        if payload == "[DONE]":
            summary.finished = True
            continue
        try:
            obj = json.loads(payload)
        except ValueError:
            summary.add_raw(ev.raw)
            continue
        if not isinstance(obj, dict):
            summary.add_raw(ev.raw)
            continue
        try:
            if ev.event == "error" and "error" not in obj:
                obj = {"error": obj}
            _openai_chunk(summary, obj, kinds, calls)
        except Exception as e:  # defensive: never let one odd event break the view
            logger.debug("openai chunk not understood: %r", e)
            summary.add_raw(ev.raw)
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
        summary.errors.append(_error_text(obj["error"]))
    usage = obj.get("usage")
    if isinstance(usage, dict):
        summary.stats = usage
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return
    for position, ch in enumerate(choices):
        if not isinstance(ch, dict):
            continue
        index = _as_int(ch.get("index"))
        if index is None:
            index = position
        choice = summary.choice(index)
        delta = ch.get("delta")
        if not isinstance(delta, dict):
            delta = ch.get("message") if isinstance(ch.get("message"), dict) else {}
        if "delta" in ch or "message" in ch:
            kinds.add("chat")
        if isinstance(delta.get("role"), str) and choice.role is None:
            choice.role = delta["role"]
        choice.add("content", _str(delta.get("content")))
        choice.add("thinking", _str(delta.get("reasoning_content")))
        choice.add("thinking", _str(delta.get("reasoning")))
        choice.add("refusal", _str(delta.get("refusal")))
        if "text" in ch:  # legacy /v1/completions stream
            kinds.add("completion")
            choice.add("content", _str(ch.get("text")))
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
            choice.finish_reason = _str(reason)


def _tool_fragment(
    choice: Choice, calls: dict[Any, ToolCall], frag: dict[str, Any], position: int
) -> None:
    """Merge one ``delta.tool_calls[]`` fragment into the call it belongs to."""
    raw_index = frag.get("index")
    index = _as_int(raw_index)
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
        name = _str(fn.get("name"))
        if name and name != call.name:
            call.name = name if not call.name else call.name + name
        args = fn.get("arguments")
        if isinstance(args, str):
            call.add_arguments(args)
        elif args is not None:
            call.add_arguments(_json_text(args))


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _block(lines: list[str], key: str, text: str, indent: str = "") -> None:
    """``key: |`` followed by the text indented (YAML literal-block look)."""
    if "\n" not in text and len(text) <= 100 and text == text.strip() and text:
        lines.append(f"{indent}{key}: {_json_text(text)}")
        return
    lines.append(f"{indent}{key}: |")
    for part in text.split("\n"):
        lines.append(f"{indent}  {part}" if part else "")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if value and value.strip() == value and "\n" not in value else _json_text(value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 1e15 else (f"{value:.2f}".rstrip("0").rstrip("."))
    return _json_text(value)


def _mapping(lines: list[str], value: Any, indent: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                lines.append(f"{indent}{k}:")
                _mapping(lines, v, indent + "  ")
            else:
                lines.append(f"{indent}{k}: {_json_text(v)}")
    else:
        lines.append(f"{indent}{_json_text(value)}")


def render_summary(summary: StreamSummary) -> str:
    """Format a summary as YAML-like text (it reads well with YAML highlighting)."""
    lines: list[str] = []
    head = _FORMAT_TITLES.get(summary.format, summary.format)
    if summary.empty:
        return f"# {head}\n# (empty body)\n"
    ending = "complete" if summary.finished else "no end marker"
    if summary.format.startswith("ollama"):
        ending = "done" if summary.finished else "no done:true line (cut short?)"
    elif summary.format.startswith("openai"):
        has_reason = any(c.finish_reason for c in summary.choices)
        if summary.finished:
            ending = "[DONE]"
        elif has_reason:
            ending = "finish_reason seen, but no [DONE]"
        else:
            ending = "no [DONE] and no finish_reason (cut short?)"
    lines.append(f"# {head}: {summary.events} chunks, {ending}")
    if summary.model is not None:
        lines.append(f"model: {_scalar(summary.model)}")
    for key, value in summary.info.items():
        lines.append(f"{key}: {_scalar(value)}")

    multi = len(summary.choices) > 1
    for choice in summary.choices:
        indent = "  " if multi else ""
        if multi:
            lines.append("")
            lines.append(f"choice {choice.index}:")
        else:
            lines.append("")
        if choice.role is not None:
            lines.append(f"{indent}role: {_scalar(choice.role)}")
        if choice.thinking:
            _block(lines, "thinking", choice.thinking, indent)
        if choice.refusal:
            _block(lines, "refusal", choice.refusal, indent)
        if choice.content:
            _block(lines, "content", choice.content, indent)
        elif not (choice.thinking or choice.refusal or choice.tool_calls):
            lines.append(f'{indent}content: ""')
        if choice.tool_calls:
            lines.append(f"{indent}tool_calls:")
            for call in choice.tool_calls:
                lines.append(f"{indent}  - name: {_scalar(call.name) if call.name else '?'}")
                if call.id:
                    lines.append(f"{indent}    id: {_scalar(call.id)}")
                if call.index is not None:
                    lines.append(f"{indent}    index: {call.index}")
                parsed = call.parsed_arguments()
                if isinstance(parsed, dict) and parsed:
                    lines.append(f"{indent}    arguments:")
                    _mapping(lines, parsed, indent + "      ")
                elif parsed is not None:
                    lines.append(f"{indent}    arguments: {_json_text(parsed)}")
                elif call.arguments.strip():
                    lines.append(f"{indent}    arguments: {_json_text(call.arguments)}")
                    lines.append(f"{indent}    # arguments are not valid JSON (incomplete?)")
                else:
                    lines.append(f"{indent}    arguments: {{}}")
        label = "done_reason" if summary.format.startswith("ollama") else "finish_reason"
        if choice.finish_reason is not None:
            lines.append(f"{indent}{label}: {_scalar(choice.finish_reason)}")

    if summary.stats:
        lines.append("")
        lines.append("metrics:" if summary.format.startswith("ollama") else "usage:")
        _mapping(lines, summary.stats, "  ")
    if summary.errors:
        lines.append("")
        lines.append("error:" if len(summary.errors) == 1 else "errors:")
        for err in summary.errors:
            lines.append(f"  - {_json_text(err)}")
    if summary.raw_lines:
        lines.append("")
        lines.append(f"# {len(summary.raw_lines) + summary.raw_lines_dropped} line(s) not understood, shown raw:")
        lines.append("unparsed: |")
        for raw in summary.raw_lines:
            for part in raw.split("\n"):
                lines.append(f"  {part}")
        if summary.raw_lines_dropped:
            lines.append(f"  ... and {summary.raw_lines_dropped} more")
    return "\n".join(lines) + "\n"


def _fallback(data: bytes, err: BaseException) -> str:
    return f"# could not summarise this body ({err!r}); raw:\n" + _decode(data)


# --------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------


def _first_line(data: bytes, prefix: bytes = b"") -> tuple[bytes, bool] | None:
    """The first non-blank line (starting with ``prefix``) in the sniffed head of ``data``,
    without the prefix, and whether it may have been cut off by the sniff limit."""
    head = data[:_SNIFF_BYTES]
    lines = head.splitlines()
    for n, line in enumerate(lines):
        line = line.strip()
        if not line or not line.startswith(prefix):
            continue
        cut = n == len(lines) - 1 and len(data) > _SNIFF_BYTES
        return line[len(prefix):].strip(), cut
    return None


def _sniff_ndjson(data: bytes) -> bool:
    """Does the body start like an Ollama chat/generate stream (or an Ollama error line)?"""
    found = _first_line(data)
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


def _sniff_sse(data: bytes) -> bool:
    """Does the first ``data:`` event look like an OpenAI chat/completion chunk (or an error)?"""
    found = _first_line(data, b"data:")
    if found is None:
        return False
    payload, cut = found
    try:
        obj = json.loads(payload)
    except ValueError:
        return cut and payload.startswith(b"{") and (
            b'"chat.completion' in payload or b'"choices"' in payload
        )
    if not isinstance(obj, dict):
        return False
    obj_type = obj.get("object")
    if isinstance(obj_type, str) and (
        obj_type.startswith("chat.completion") or obj_type == "text_completion"
    ):
        return True
    return isinstance(obj.get("choices"), list) or "error" in obj


# --------------------------------------------------------------------------
# The views
# --------------------------------------------------------------------------


class _ProxyView(Contentview):
    """Shared behaviour: never raise from prettify/render_priority."""

    #: Marks our views in the registry, so unregister() finds them even if this
    #: module was imported twice (script reload, or as `contentviews` and `addon.contentviews`).
    ollama_openai_proxy_view = True

    name = "?"
    syntax_highlight: SyntaxHighlight = "yaml"

    def _summarize(self, data: bytes) -> StreamSummary:  # pragma: no cover - abstract
        raise NotImplementedError

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        try:
            return render_summary(self._summarize(data))
        except Exception as e:  # the parsers do not raise; this is belt and braces
            logger.debug("%s failed", self.name, exc_info=True)
            return _fallback(data, e)


class OllamaNDJSONView(_ProxyView):
    """Ollama ``/api/chat`` and ``/api/generate`` NDJSON streams."""

    name = "Ollama NDJSON"

    def _summarize(self, data: bytes) -> StreamSummary:
        return summarize_ndjson(data)

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        text = super().prettify(data, metadata)
        try:
            flow = metadata.flow
            upstream = getattr(flow, "metadata", {}).get(UPSTREAM_SSE_METADATA_KEY) if flow else None
            if isinstance(upstream, (bytes, str)) and upstream:
                body = upstream.encode("utf-8", "replace") if isinstance(upstream, str) else upstream
                if not body.lstrip().startswith((b"data:", b":")):  # a whole JSON answer, not a stream
                    return text
                text += (
                    f"\n# ---- upstream SSE (flow.metadata[{UPSTREAM_SSE_METADATA_KEY!r}]) ----\n"
                    + render_summary(summarize_sse(body))
                )
        except Exception:  # pragma: no cover - defensive
            logger.debug("upstream SSE summary failed", exc_info=True)
        return text

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        try:
            if not data:
                return -1
            ctype = metadata.content_type
            if ctype in _NDJSON_TYPES:
                # Beats the JSON view (1), which claims */*json types and then fails on NDJSON.
                return 2 if _sniff_ndjson(data) else 1.1
            if ctype in (None, "text/plain", "application/octet-stream", "application/json"):
                if data.count(b"\n", 0, _SNIFF_BYTES) >= 2 and _sniff_ndjson(data):
                    return 1.5
            return -1
        except Exception:  # pragma: no cover - defensive
            return -1


class OpenAISSEView(_ProxyView):
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
        except Exception:  # pragma: no cover - defensive
            return -1


ollama_ndjson_view = OllamaNDJSONView()
openai_sse_view = OpenAISSEView()
VIEWS: tuple[Contentview, ...] = (ollama_ndjson_view, openai_sse_view)


# --------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------


def register(registry: contentviews.ContentviewRegistry | None = None) -> None:
    """Add both views to mitmproxy's content-view registry. Idempotent."""
    reg = contentviews.registry if registry is None else registry
    for view in VIEWS:
        if reg.get(view.name) is view:
            continue
        reg.register(view)


def unregister(registry: contentviews.ContentviewRegistry | None = None) -> None:
    """Remove our views from the registry (those of any copy of this module). Idempotent.

    mitmproxy 12 has no public removal API, so this edits the registry's
    name table and emits its change signal (the console re-renders on it).
    """
    reg = contentviews.registry if registry is None else registry
    table = getattr(reg, "_by_name", None)
    if not isinstance(table, dict):  # pragma: no cover - mitmproxy internals changed
        return
    for view in VIEWS:
        key = view.name.lower()
        current = table.get(key)
        if current is not None and getattr(current, "ollama_openai_proxy_view", False):
            del table[key]
            try:
                reg.on_change.send(current)
            except Exception:  # pragma: no cover - defensive
                logger.debug("contentview on_change failed", exc_info=True)


class ContentViews:
    """A tiny addon: registers the views on ``load`` and removes them on ``done``."""

    def load(self, loader: Any) -> None:
        register()

    def done(self) -> None:
        unregister()


# Lets this file be loaded on its own as a mitmproxy script, for the views only
# (e.g. `mitmweb -n -r saved.flow -s addon/contentviews.py`). Importing the module
# does not register anything; only mitmproxy's script loader reads `addons`.
addons = [ContentViews()]
