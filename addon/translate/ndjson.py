"""Ollama's stream (`/api/chat`, `/api/generate`): NDJSON lines rendered from the accumulator's deltas.

One line per upstream chunk that carries text, thinking or logprobs; the tool calls whole, all in
one line after the text (Ollama clients read a call whole); then the final `done` line with
`done_reason` and the metrics. Every line is the one chunk builder's (`translate.response.chunk`);
the line of a chunk that carries only text — nearly every line of a stream — is written from
parts encoded once per stream, byte for byte what the builder would make of it; such a line is
those parts (`frame`) around a timestamp and one JSON string, whose bytes it tells (`span`), so
that the key scan can read the string alone (`guard.secrets.FramedScan`).
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

from addon.translate.chunks import Delta, Finish, Logprobs, Refusal, Text, Thinking, ToolDone
from addon.translate.response import (
    Clock,
    Shape,
    chunk,
    final,
    logprobs_of,
    metrics,
    ollama_tool_call,
    rfc3339_now,
)
from addon.translate.stream import ChunkStream
from addon.wire.ollama import NDJSON, OllamaToolCall, dumps_line, utf8
from addon.wire.sse import MAX_EVENT

_STAMP = b"0123456789-:.TZ"  # the bytes of an RFC 3339 timestamp (`rfc3339_now`)
_encode_text = encode_basestring  # a JSON string, not ASCII-escaped (as `wire.ollama`'s encoder writes it)


class OllamaLines:
    """The renderer of one Ollama chat or generate stream (`translate.stream.Renderer`).

    A generate line carries `context` (empty: there are no token ids) unless the request was `raw`.
    """

    content_type: str | None = NDJSON

    __slots__ = (
        "_after",
        "_before",
        "_calls",
        "_lead",
        "_tail",
        "clock",
        "context",
        "ended",
        "error",
        "frame",
        "model",
        "shape",
        "span",
        "warnings",
    )

    def __init__(self, shape: Shape, model: str, clock: Clock, raw: bool = False) -> None:
        self.shape: Shape = shape
        self.model = model
        self.clock = clock
        self.context = shape == "generate" and not raw
        self.warnings: list[str] = []
        self.ended = False
        self.error: str | None = None
        self._calls: list[OllamaToolCall] = []  # calls done, sent together before the final line
        self._before = '{"model":' + _encode_text(model) + ',"created_at":"'
        if shape == "chat":
            self._after = ('","message":{"role":"assistant","content":', '},"done":false}\n')
        else:
            self._after = ('","response":', ',"done":false,"context":[]}\n' if self.context else ',"done":false}\n')
        # A text line: before, a timestamp (of _STAMP's bytes), middle, the JSON string, end; each part after the
        # first starts with a `"` or follows one (`guard.secrets.FramedScan`). `span`: the string's bytes in the
        # line just made by `one` (None for any other output).
        self.frame: tuple[tuple[bytes, ...], bytes] | None = (
            (utf8(self._before), self._after[0].encode(), self._after[1].encode()),
            _STAMP,
        )
        self._lead = len(utf8(self._before)) + len(self._after[0])  # bytes before the string, but the timestamp's
        self._tail = len(self._after[1])
        self.span: tuple[int, int] | None = None

    def one(self, delta: Text | Thinking) -> bytes:
        if type(delta) is not Text or self.ended:
            return self.render([delta])
        if self.clock.first_token_ns is None:
            self.clock.mark_token()
        middle, end = self._after
        stamp = rfc3339_now()
        line = f"{self._before}{stamp}{middle}{_encode_text(delta.text)}{end}"  # (one string built, not four)
        try:
            out = line.encode()
        except UnicodeEncodeError:
            self.span = None
            return utf8(line)
        self.span = (self._lead + len(stamp), len(out) - self._tail)
        return out

    def render(self, deltas: list[Delta]) -> bytes:
        self.span = None
        if self.ended:
            return b""
        if len(deltas) == 1 and type(delta := deltas[0]) is Text:
            return self.one(delta)
        out: list[bytes] = []
        text: list[str] = []
        thinking: list[str] = []
        logprobs: list[Any] = []
        for delta in deltas:
            match delta:
                case Text() | Refusal():
                    text.append(delta.text)
                case Thinking():
                    thinking.append(delta.text)
                case Logprobs():
                    logprobs += delta.items
                case ToolDone():
                    if delta.warning:
                        self.warnings.append(delta.warning)
                    self._calls.append(ollama_tool_call(delta.position, delta.call_id, delta.name, delta.arguments))
                case Finish():
                    self._line(out, text, thinking, logprobs, self._calls)
                    last = chunk(self.shape, self.model, "", None, None, self.context)
                    final(last, delta.reason, metrics(self.clock, delta.usage, delta.timings))
                    out.append(dumps_line(last))
                    self.ended = True
                case _:  # a call starting or its arguments: Ollama sends calls whole
                    self.clock.mark_token()
        self._line(out, text, thinking, logprobs, [])
        return b"".join(out)

    def _line(
        self, out: list[bytes], text: list[str], thinking: list[str], logprobs: list[Any], calls: list[OllamaToolCall]
    ) -> None:
        if calls:  # after the text of the same chunk, in a line of their own
            self._line(out, text, thinking, logprobs, [])
            out.append(dumps_line(chunk(self.shape, self.model, "", None, calls, self.context)))
            return
        if not (text or thinking or logprobs):
            return
        self.clock.mark_token()
        line = chunk(self.shape, self.model, "".join(text), "".join(thinking) or None, None, self.context)
        if logprobs and (converted := logprobs_of({"logprobs": {"content": logprobs}})):
            line["logprobs"] = converted
        out.append(dumps_line(line))
        text.clear()
        thinking.clear()
        logprobs.clear()

    def fail(self, message: str) -> bytes:
        """The final `{"error"}` line (nothing if a final line was already written)."""
        self.span = None
        if self.ended:
            return b""
        self.ended = True
        self.error = message
        return dumps_line({"error": message})


def ollama_stream(shape: Shape, model: str, clock: Clock, raw: bool = False, max_event: int = MAX_EVENT) -> ChunkStream:
    """The converter of one Ollama stream: the one driver with this renderer."""
    return ChunkStream(OllamaLines(shape, model, clock, raw), max_event)
