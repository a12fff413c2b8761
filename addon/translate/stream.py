"""The one driver of a streamed answer: upstream SSE → decoder → accumulator → a family's renderer.

`ChunkStream` is the stream converter (`addon.endpoints.base.StreamConverter`) of every family
that is translated from chat completions: the upstream's body goes through the one SSE decoder
(`wire.sse.SSEDecoder`), each event through `translate.reader.ChunkReader` into the one
accumulator's deltas (`translate.chunks`), and the deltas to a `Renderer`: Ollama NDJSON
(`translate.ndjson.OllamaLines`), Anthropic events, Responses events. `[DONE]` ends the answer;
a body that ends without it is whole only if a finish reason came; an error event, an event that
is no chunk and an event over `sse_event_limit` end it with the renderer's error.

(`ChunkConverter` and `EventSink`: the agents' streams until they render from deltas.)
"""

from __future__ import annotations

from typing import Any, Protocol

from addon.translate.chunks import Delta, StreamFault
from addon.translate.reader import ChunkReader
from addon.wire.openai import Usage, loads, usage_of
from addon.wire.sse import MAX_EVENT, SSEDecoder, SSETooLarge

INCOMPLETE = "the upstream stream ended before the answer was complete"


class Renderer(Protocol):
    """One family's stream, made from deltas. `render` never gets an empty list; the `Finish` delta
    ends the stream (`ended`); after the end every call returns b""."""

    content_type: str | None
    warnings: list[str]
    ended: bool
    error: str | None  # the message of the final error piece, once made

    def render(self, deltas: list[Delta]) -> bytes:
        """The bytes these deltas make (possibly b"")."""

    def fail(self, message: str) -> bytes:
        """The final error piece (b"" after the end)."""


class ChunkStream:
    """Feeds an upstream chat-completions SSE body, piece by piece, to one renderer."""

    final_error_on_break = True

    __slots__ = ("_events", "aborted", "content_type", "reader", "renderer", "warnings")

    def __init__(self, renderer: Renderer, max_event: int = MAX_EVENT) -> None:
        self.renderer = renderer
        self.content_type = renderer.content_type
        self.warnings = renderer.warnings
        self.reader = ChunkReader()
        self.aborted = False  # the upstream's stream broke a limit: the rest of it is not read
        self._events = SSEDecoder(max_event)

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
        if self.renderer.ended:
            return b""
        try:
            events = self._events.feed(piece)
        except SSETooLarge as e:
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream: {e}")
        if len(events) == 1:
            return self._event(events[0][0])
        return b"".join([self._event(data) for data, _ in events])

    def finish(self) -> bytes:
        """The tail once the upstream body has ended: the close, or an error if it was cut short."""
        if self.renderer.ended:
            return b""
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


class EventSink(Protocol):
    """A translator of decoded OpenAI stream chunks into another API's stream events (one bytes
    object per event; never an empty one): `addon.translate.anthropic.MessagesStream`,
    `addon.translate.responses.ResponsesStream`."""

    ended: bool
    error: str | None  # the message of the final error event, once made

    def feed_event(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events one decoded `chat.completion.chunk` yields."""

    def finish(self) -> list[bytes]:
        """The closing events once the upstream stream has ended (an error event if it was cut short)."""

    def fail(self, message: str) -> list[bytes]:
        """A final error event."""


class ChunkConverter:
    """A `StreamConverter` for any `EventSink`: the upstream's SSE decoded (by the one SSE
    decoder), each chunk handed to the sink, its events sent on as they come.

    `[DONE]` finishes the sink, an upstream error event or data that is no JSON object fails it,
    and so does an event over the decoder's cap; the token counts of the last `usage` seen are
    the exchange's. A body that ends with neither `[DONE]` nor a finish reason was cut short:
    the sink fails, whatever it would make of the end (a Responses stream would complete).
    """

    final_error_on_break = True

    def __init__(
        self, sink: EventSink, content_type: str | None = "text/event-stream; charset=utf-8", max_event: int = MAX_EVENT
    ) -> None:
        self.sink = sink
        self.content_type = content_type
        self.warnings: list[str] = []
        self.raw_usage: Any = None
        self.aborted = False  # the upstream's stream broke a limit: the rest of it is not read
        self.finished = False  # a chunk with a finish reason was seen
        self._events = SSEDecoder(max_event)

    @property
    def ended(self) -> bool:
        return self.sink.ended

    @property
    def error(self) -> str | None:
        return self.sink.error

    @property
    def usage(self) -> Usage | None:
        return usage_of(self.raw_usage)

    def feed(self, data: bytes) -> bytes:
        if self.sink.ended:
            return b""
        try:
            events = self._events.feed(data)
        except SSETooLarge as e:
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream: {e}")
        return b"".join(piece for event in events for piece in self._event(event.data))

    def finish(self) -> bytes:
        out: list[bytes] = []
        if not self.sink.ended:
            try:
                events = self._events.finish()
            except SSETooLarge as e:
                return self.fail(f"the upstream sent an invalid stream: {e}")
            out += [piece for event in events for piece in self._event(event.data)]
        if self.finished:
            out += self.sink.finish()
        else:
            out += self.sink.fail("the upstream stream ended before the answer was complete")
        return b"".join(out)

    def fail(self, message: str) -> bytes:
        return b"".join(self.sink.fail(message))

    def _event(self, data: bytes) -> list[bytes]:
        if self.sink.ended:
            return []
        if data == b"[DONE]":
            return self.sink.finish()
        try:
            chunk = loads(data)
        except ValueError:
            return self.sink.fail(
                f"the upstream sent an invalid stream event: {data[:200].decode('utf-8', 'replace')!r}"
            )
        if not isinstance(chunk, dict):
            return self.sink.fail("the upstream sent an invalid stream event")
        if "error" in chunk:
            error = chunk["error"]
            return self.sink.fail(f"upstream error: {error.get('message') if isinstance(error, dict) else error}")
        if isinstance(chunk.get("usage"), dict):
            self.raw_usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
            self.finished = True
        return self.sink.feed_event(chunk)
