"""The bytes of one upstream SSE event → deltas: the one driver's entry into the accumulator.

`ChunkReader.read` parses an event's JSON strictly (`wire.openai.loads`) and hands it to the
one `Accumulator` (`translate.chunks`). Its fast path reads the common event — only new text,
or only new reasoning — without a JSON parse, when the event is byte for byte one parsed before
but for that one string: the same bytes around a valid JSON string are the same JSON but for
that string (`_Template`). A shape is remembered only from an event whose string's member name
occurs once and in which nothing but that string has an escape, so what the bytes show is what
the parser saw. OpenAI's `obfuscation` member (random letters, different in every chunk) is
left out of the comparison. `ChunkReader.piece` is the same match over a whole piece of one
`data:` line (the driver's fast path: no decoder, no slice). Neither applies while a tool call
is open (text then may close it: the accumulator's rule), nor learns from an event that carries
anything the accumulator keeps (usage, timings).
"""

from __future__ import annotations

import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from addon.translate.chunks import Accumulator, Delta, StreamFault, Text, Thinking
from addon.wire.openai import invalid_json, loads

# A JSON string's body, strictly (no control characters, only JSON's escapes), up to its closing quote.
_STRING = rb'([^"\\\x00-\x1f]+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*|(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)+)"'
_LITERAL = re.compile(rb'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')
# OpenAI's `obfuscation` member at the end of a chunk: random letters that change with every chunk.
_OBFUSCATION = b',"obfuscation":"'
_LETTERS = re.compile(rb'[A-Za-z0-9]*"\}')
_REST = rb'(?:,"obfuscation":"[A-Za-z0-9]*")?\}'  # what follows a template's tail (without its "}")
_KINDS: dict[bytes, type[Text] | type[Thinking]] = {
    b'"content":': Text,
    b'"reasoning_content":': Thinking,
    b'"reasoning":': Thinking,
}
_TEMPLATES = 4  # the shapes remembered per stream (content, reasoning, and a spare)


def _without_obfuscation(tail: bytes) -> bytes:
    """The end of an event without a last `"obfuscation":"<letters>"` member (unchanged if it has none)."""
    cut = tail.rfind(_OBFUSCATION)
    if cut < 0 or _LETTERS.fullmatch(tail, cut + len(_OBFUSCATION)) is None:
        return tail
    return tail[:cut] + b"}"


class _Template:
    """An event parsed before that carried only new text (or reasoning) in one string: the bytes before that
    string and after it (without OpenAI's `obfuscation`), as one pattern whose group is a valid string's
    body. An event that matches it whole is the same JSON but for that string: its delta is known without
    parsing. The patterns are compiled when first needed (a compile takes ~0.3 ms, once per stream, as every
    stream's events carry their own id; the common string is found without them)."""

    __slots__ = ("_pattern", "_whole", "data_head", "head", "kind", "one_line", "source", "tail")

    def __init__(self, source: bytes, kind: type[Text] | type[Thinking], head: bytes, tail: bytes, one_line: bool):
        self.source = source  # the pattern's source: the event's bytes
        self.kind = kind
        self.data_head = head  # the event's bytes up to the string (its opening quote included)
        self.head = b"data: " + head  # ... and a piece's
        self.tail = tail  # the event's bytes after the string's closing quote, but its last `}` (and an obfuscation)
        self.one_line = one_line  # the event had no LF: a piece of one `data: ` line can be of this shape
        self._pattern: re.Pattern[bytes] | None = None
        self._whole: re.Pattern[bytes] | None = None

    def pattern(self) -> re.Pattern[bytes]:
        if self._pattern is None:
            self._pattern = re.compile(self.source, re.S)
        return self._pattern

    def whole(self) -> re.Pattern[bytes]:
        """The same over a whole piece: `data: `, the event, LF LF."""
        if self._whole is None:
            self._whole = re.compile(b"data: " + self.source + b"\n\n", re.S)
        return self._whole


class ChunkReader:
    """The bytes of one SSE event → deltas, through one `Accumulator` (`chunks`)."""

    __slots__ = ("chunks", "templates")

    def __init__(self) -> None:
        self.chunks = Accumulator()
        self.templates: list[_Template] = []

    def piece(self, piece: bytes) -> Text | Thinking | None:
        """The delta of a piece that is one `data: ` line of a shape seen before (`data: {...}` LF LF), or None
        (then read it otherwise). Only for a piece the decoder would hand on whole as one event (its `idle`, the
        piece at most `sse_event_limit` + 8 bytes): the pattern matches no CR and no LF but the last two."""
        if self.chunks.open_calls:
            return None
        for template in self.templates:
            head, tail = template.head, template.tail
            if not template.one_line or not piece.startswith(head):
                continue  # (the pattern starts with the head)
            # The common string first, without the pattern: no escape, nothing unprintable, and what follows its
            # first quote is the tail, then `}` LF LF (or an obfuscation member before them). Else the pattern.
            start = len(head)
            close = piece.find(b'"', start)
            if close > start and piece.startswith(tail, close + 1):
                rest, end = close + 1 + len(tail), len(piece) - 4
                if (rest == end + 1 and piece.endswith(b"}\n\n")) or (
                    piece.startswith(_OBFUSCATION, rest)
                    and piece.endswith(b'"}\n\n')
                    and (rest + len(_OBFUSCATION) == end or piece[rest + len(_OBFUSCATION) : end].isalnum())
                ):
                    literal = piece[start:close]
                    if b"\\" not in literal:
                        try:
                            text = literal.decode("utf-8", "surrogatepass")
                        except UnicodeDecodeError:
                            return None
                        if text.isprintable():  # (no control character: JSON has none unescaped)
                            return tuple.__new__(template.kind, (text,))
            if (same := template.whole().fullmatch(piece)) is not None:
                return _delta(template.kind, same.group(1))
        return None

    def read(self, data: bytes, start: int = 0, end: int | None = None) -> list[Delta]:
        """The deltas of one event's data, `data[start:end]` (not `[DONE]`). Raises `StreamFault`."""
        if end is None:
            end = len(data)
        if not self.chunks.open_calls:
            for template in self.templates:
                if not data.startswith(template.data_head, start):
                    continue  # (the pattern starts with the head: not compiled for events of other shapes)
                if (same := template.pattern().fullmatch(data, start, end)) is not None:
                    if (delta := _delta(template.kind, same.group(1))) is None:
                        break
                    return [delta]
        if start or end != len(data):
            data = data[start:end]
        try:
            chunk = loads(data)
        except RecursionError:
            raise StreamFault("the upstream sent an invalid stream event: nested too deeply") from None
        except ValueError as e:
            why = invalid_json(data, e).removeprefix("the upstream sent ")
            raise StreamFault(f"the upstream sent an invalid stream event: {why}") from None
        try:
            deltas = self.chunks.feed(chunk)
        except StreamFault:
            raise
        except (AttributeError, TypeError, KeyError, IndexError, ValueError):  # a JSON object of another shape
            raise StreamFault(
                f"the upstream sent an invalid stream event: {data[:200].decode('utf-8', 'replace')!r}"
            ) from None
        if len(deltas) == 1 and type(deltas[0]) in (Text, Thinking):
            self._learn(data, chunk)
        return deltas

    def _learn(self, data: bytes, chunk: dict[str, Any]) -> None:
        """Remember this event's shape if it holds its one piece of text in one string at a place its bytes
        show plainly: the member's name once, and no escape anywhere but in that string."""
        if chunk.get("usage") is not None or "timings" in chunk or len(chunk.get("choices") or ()) != 1:
            return
        choice = chunk["choices"][0]
        delta = choice.get("delta")
        if not isinstance(delta, dict) or choice.get("finish_reason") is not None or choice.get("logprobs"):
            return
        given = [
            name for name in ("content", "reasoning_content", "reasoning", "refusal", "tool_calls") if delta.get(name)
        ]
        if len(given) != 1 or given[0] in ("refusal", "tool_calls") or not isinstance(delta[given[0]], str):
            return
        field = f'"{given[0]}":'.encode()
        if "text" in choice or data.count(field) != 1:
            return
        at = data.index(field) + len(field)
        while data[at : at + 1] in (b" ", b"\t", b"\n", b"\r"):
            at += 1
        if data[at : at + 1] != b'"':
            return
        found = _LITERAL.match(data, at + 1)
        if found is None:
            return
        head, tail = data[: at + 1], data[found.end() :]
        if b"\\" in head or b"\\" in tail:
            return
        tail = _without_obfuscation(tail)
        if not tail.endswith(b"}"):
            return
        source = re.escape(head) + _STRING + re.escape(tail[:-1]) + _REST
        if all(source != known.source for known in self.templates):
            if len(self.templates) == _TEMPLATES:  # (a shape that changes, as `created` every second: the newest)
                del self.templates[0]
            self.templates.append(_Template(source, _KINDS[field], head, tail[:-1], b"\n" not in data))


def _delta(kind: type[Text] | type[Thinking], literal: bytes) -> Text | Thinking | None:
    """The delta of a template's string (a valid JSON string's body), or None if it is no UTF-8."""
    try:
        text = literal.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    if b"\\" in literal:
        text = scanstring(text + '"', 0)[0]
    return tuple.__new__(kind, (text,))  # the NamedTuple without its generated __new__: a hot path
