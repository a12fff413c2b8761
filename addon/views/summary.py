"""What the content views show: a stream summarised (`StreamSummary`) and rendered as YAML-like text.

The summarisers (`views.ollama_ndjson.summarize_ndjson`, `views.openai_sse.summarize_sse`,
`views.anthropic_sse.summarize_anthropic`, `views.responses_sse.summarize_responses`) fill a
`StreamSummary`; `render_summary` formats it. None of them raise on malformed input: lines that
cannot be understood are kept and shown raw. `ProxyView` is the base of the views: it never lets
an exception out of mitmproxy's `prettify` / `render_priority` calls.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from mitmproxy.contentviews import Contentview, Metadata, SyntaxHighlight

logger = logging.getLogger(__name__)

#: How much of a body ``render_priority`` looks at to recognise the format.
SNIFF_BYTES = 64 * 1024
#: At most this many unparsable lines are kept in a summary (the rest counted).
_MAX_RAW_LINES = 200
#: Unparsable lines longer than this are cut for display.
_MAX_RAW_LINE_CHARS = 2000

Format = Literal[
    "ollama-chat",
    "ollama-generate",
    "ollama",
    "openai-chat",
    "openai-completion",
    "openai",
    "anthropic-messages",
    "openai-responses",
    "unknown",
]

_FORMAT_TITLES: dict[str, str] = {
    "ollama-chat": "Ollama chat stream (/api/chat)",
    "ollama-generate": "Ollama generate stream (/api/generate)",
    "ollama": "Ollama NDJSON stream",
    "openai-chat": "OpenAI chat completion stream",
    "openai-completion": "OpenAI legacy completion stream",
    "openai": "OpenAI SSE stream",
    "anthropic-messages": "Anthropic Messages stream (/v1/messages)",
    "openai-responses": "OpenAI Responses stream (/v1/responses)",
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
    ending: str | None = None
    """How the stream ended, as the header says it (the agents' streams: their last event)."""
    finish_label: str = "finish_reason"
    """What `Choice.finish_reason` is called in this format (stop_reason, status, ...)."""

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


def decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    text = bytes(data).decode("utf-8", "replace")
    return text.removeprefix("\ufeff")


def text_of(value: Any) -> str:
    """Text pieces from a chunk: strings as they are, None as "", anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json_text(value)


def json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def as_int(value: Any) -> int | None:
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


def error_text(value: Any) -> str:
    """Ollama's ``"error": "text"`` or OpenAI's ``"error": {"message": ...}``."""
    if isinstance(value, dict):
        msg = value.get("message")
        parts = [str(msg) if msg is not None else json_text(value)]
        for key in ("type", "code"):
            if value.get(key) not in (None, ""):
                parts.append(f"{key}={value[key]}")
        return " ".join(parts) if msg is not None else parts[0]
    return text_of(value)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _block(lines: list[str], key: str, text: str, indent: str = "") -> None:
    """``key: |`` followed by the text indented (YAML literal-block look)."""
    if "\n" not in text and len(text) <= 100 and text == text.strip() and text:
        lines.append(f"{indent}{key}: {json_text(text)}")
        return
    lines.append(f"{indent}{key}: |")
    for part in text.split("\n"):
        lines.append(f"{indent}  {part}" if part else "")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if value and value.strip() == value and "\n" not in value else json_text(value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 1e15 else (f"{value:.2f}".rstrip("0").rstrip("."))
    return json_text(value)


def _mapping(lines: list[str], value: Any, indent: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                lines.append(f"{indent}{k}:")
                _mapping(lines, v, indent + "  ")
            else:
                lines.append(f"{indent}{k}: {json_text(v)}")
    else:
        lines.append(f"{indent}{json_text(value)}")


def render_summary(summary: StreamSummary) -> str:
    """Format a summary as YAML-like text (it reads well with YAML highlighting)."""
    lines: list[str] = []
    head = _FORMAT_TITLES.get(summary.format, summary.format)
    if summary.empty:
        return f"# {head}\n# (empty body)\n"
    ending = "complete" if summary.finished else "no end marker"
    if summary.format.startswith("ollama"):
        ending = "done" if summary.finished else "no done:true line (cut short?)"
    elif summary.ending is not None:
        ending = summary.ending
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
                    lines.append(f"{indent}    arguments: {json_text(parsed)}")
                elif call.arguments.strip():
                    lines.append(f"{indent}    arguments: {json_text(call.arguments)}")
                    lines.append(f"{indent}    # arguments are not valid JSON (incomplete?)")
                else:
                    lines.append(f"{indent}    arguments: {{}}")
        label = "done_reason" if summary.format.startswith("ollama") else summary.finish_label
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
            lines.append(f"  - {json_text(err)}")
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


def fallback(data: bytes, err: BaseException) -> str:
    return f"# could not summarise this body ({err!r}); raw:\n" + decode(data)


# --------------------------------------------------------------------------
# Sniffing and the views' base
# --------------------------------------------------------------------------


def first_line(data: bytes, prefix: bytes = b"") -> tuple[bytes, bool] | None:
    """The first non-blank line (starting with ``prefix``) in the sniffed head of ``data``,
    without the prefix, and whether it may have been cut off by the sniff limit."""
    head = data[:SNIFF_BYTES]
    lines = head.splitlines()
    for n, line in enumerate(lines):
        line = line.strip()
        if not line or not line.startswith(prefix):
            continue
        cut = n == len(lines) - 1 and len(data) > SNIFF_BYTES
        return line[len(prefix) :].strip(), cut
    return None


class ProxyView(Contentview):
    """Shared behaviour: never raise from prettify/render_priority."""

    name = "?"
    syntax_highlight: SyntaxHighlight = "yaml"

    def _summarize(self, data: bytes) -> StreamSummary:  # pragma: no cover - abstract
        raise NotImplementedError

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        try:
            return render_summary(self._summarize(data))
        except Exception as e:  # the parsers do not raise; this is belt and braces
            logger.debug("%s failed", self.name, exc_info=True)
            return fallback(data, e)
