"""The one driver of a streamed answer: upstream SSE → decoder → accumulator → a family's renderer.

`ChunkStream` is the stream converter (`addon.endpoints.base.StreamConverter`) of every family
that is translated from chat completions: the upstream's body goes through the one SSE decoder
(`wire.sse.SSEDecoder`), each event through `translate.reader.ChunkReader` into the one
accumulator's deltas (`translate.chunks`), and the deltas to a `Renderer`: Ollama NDJSON
(`translate.ndjson.OllamaLines`), Anthropic events, Responses events. `[DONE]` ends the answer;
a body that ends without it is whole only if a finish reason came; an error event, an event that
is no chunk and an event over `sse_event_limit` end it with the renderer's error.
"""

from __future__ import annotations

from typing import Protocol

from addon.translate.chunks import Delta, StreamFault, Text, Thinking
from addon.translate.reader import ChunkReader
from addon.wire.openai import Usage, usage_of
from addon.wire.sse import MAX_EVENT, SSEDecoder, SSETooLarge

INCOMPLETE = "the upstream stream ended before the answer was complete"


class Renderer(Protocol):
    """One family's stream, made from deltas. `render` never gets an empty list; the `Finish` delta
    ends the stream (`ended`); after the end every call returns b""."""

    content_type: str | None
    warnings: list[str]
    ended: bool
    error: str | None  # the message of the final error piece, once made
    # A renderer whose common output is one line of fixed parts around a JSON string (`translate.ndjson`):
    # those parts and the timestamp's bytes (`guard.secrets.FramedScan`), and the string's bytes in what the
    # last call returned (None: not such a line). None and None for any other renderer.
    frame: tuple[tuple[bytes, ...], bytes] | None
    span: tuple[int, int] | None

    def render(self, deltas: list[Delta]) -> bytes:
        """The bytes these deltas make (possibly b"")."""

    def one(self, delta: Text | Thinking) -> bytes:
        """`render([delta])`: the common event's one delta (a renderer may write it more directly)."""

    def fail(self, message: str) -> bytes:
        """The final error piece (b"" after the end)."""


class ChunkStream:
    """Feeds an upstream chat-completions SSE body, piece by piece, to one renderer."""

    final_error_on_break = True

    __slots__ = (
        "_events",
        "_idle",
        "_one",
        "_piece",
        "_whole",
        "aborted",
        "content_type",
        "frame",
        "reader",
        "renderer",
        "span",
        "warnings",
    )

    def __init__(self, renderer: Renderer, max_event: int = MAX_EVENT) -> None:
        self.renderer = renderer
        self.content_type = renderer.content_type
        self.warnings = renderer.warnings
        self.reader = ChunkReader()
        self.aborted = False  # the upstream's stream broke a limit: the rest of it is not read
        self._events = SSEDecoder(max_event)
        self._idle = False  # the decoder's `idle()`, as of its last feed: nothing of the body is pending
        self._whole = max_event + 8  # the longest piece that is one event of one `data: ` line (sse_event_limit)
        self.frame = renderer.frame
        self._piece = self.reader.piece  # (bound once: called for every piece)
        self._one = renderer.one
        self.span: tuple[int, int] | None = None  # the renderer's `span` of what the last `feed` returned

    @property
    def ended(self) -> bool:
        return self.renderer.ended

    @property
    def error(self) -> str | None:
        return self.renderer.error

    @property
    def usage(self) -> Usage | None:
        return usage_of(self.reader.chunks.usage)

    def feed(self, piece: bytes) -> bytes:
        """What this piece of the upstream body completes (possibly b"")."""
        renderer = self.renderer
        if renderer.ended:
            self.span = None
            return b""
        if self._idle and len(piece) <= self._whole and (delta := self._piece(piece)) is not None:
            out = self._one(delta)  # the common event: a shape seen before, only its text new
            self.span = renderer.span
            return out
        self.span = None
        if self._events.one_data_line(piece):  # the common piece: one chunk, read where it lies
            if piece == b"data: [DONE]\n\n":
                return self.renderer.render(self.reader.chunks.end())
            try:
                deltas = self.reader.read(piece, 6, len(piece) - 2)
            except StreamFault as e:
                return self.renderer.fail(str(e))
            return self.renderer.render(deltas) if deltas else b""
        self._idle = False
        try:
            events = self._events.feed(piece)
        except SSETooLarge as e:
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream: {e}")
        self._idle = self._events.idle()
        if len(events) == 1:
            return self._event(events[0][0])
        return b"".join([self._event(data) for data, _ in events])

    def finish(self) -> bytes:
        """The tail once the upstream body has ended: the close, or an error if it was cut short."""
        self.span = None
        if self.renderer.ended:
            return b""
        self._idle = False
        try:
            events = self._events.finish()
        except SSETooLarge as e:
            return self.fail(f"the upstream sent an invalid stream: {e}")
        out = [self._event(data) for data, _ in events]
        if not self.renderer.ended:
            if self.reader.chunks.finished:
                out.append(self.renderer.render(self.reader.chunks.end()))
            else:
                out.append(self.fail(INCOMPLETE))
        return b"".join(out)

    def fail(self, message: str) -> bytes:
        self.span = None
        return self.renderer.fail(message)

    def _event(self, data: bytes) -> bytes:
        if self.renderer.ended:
            return b""
        if data == b"[DONE]":
            return self.renderer.render(self.reader.chunks.end())
        try:
            deltas = self.reader.read(data)
        except StreamFault as e:
            return self.renderer.fail(str(e))
        return self.renderer.render(deltas) if deltas else b""
