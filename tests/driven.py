"""A renderer of the agents' streams driven chunk by chunk through the one accumulator, as the
translator tests feed it: `feed_event(chunk)`, `finish()` and `fail()` give the events one by one."""

from __future__ import annotations

from typing import Any

from addon.translate.chunks import Accumulator, StreamFault
from addon.translate.stream import INCOMPLETE, Renderer


def events(data: bytes) -> list[bytes]:
    """SSE bytes → one bytes object per event."""
    return [piece + b"\n\n" for piece in data.split(b"\n\n") if piece]


class Driven:
    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.chunks = Accumulator()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.renderer, name)

    def feed_event(self, chunk: Any) -> list[bytes]:
        if self.renderer.ended:
            return []
        try:
            deltas = self.chunks.feed(chunk)
        except StreamFault as e:
            return self.fail(str(e))
        start = getattr(self.renderer, "start", list)()
        return events(b"".join(start) + (self.renderer.render(deltas) if deltas else b""))

    def finish(self) -> list[bytes]:
        """[DONE] (or the end of a body after a finish reason)."""
        if self.renderer.ended:
            return []
        return events(self.renderer.render(self.chunks.end()))

    def cut(self) -> list[bytes]:
        """The end of a body: whole if a finish reason came, else cut short."""
        if self.renderer.ended:
            return []
        return self.finish() if self.chunks.finished else self.fail(INCOMPLETE)

    def fail(self, message: str, *args: Any, **kwargs: Any) -> list[bytes]:
        return events(self.renderer.fail(message, *args, **kwargs))  # type: ignore[call-arg]


def driven(renderer: Renderer) -> Driven:
    return Driven(renderer)
