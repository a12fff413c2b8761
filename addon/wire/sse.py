"""The one Server-Sent Events decoder: incremental, linear, and bounded.

Every SSE body the addon reads goes through here: the upstream streams it converts, the `/v1`
streams it relays, and the bodies the content views summarise. Following the WHATWG rules:

- a line ends with CRLF, LF or CR (a CR at the end of one piece and an LF at the start of the
  next are one line end); a UTF-8 byte order mark at the very start is ignored;
- `data:` lines accumulate (joined by LF) until a blank line dispatches the event; `event:`
  names it; `id:`, `retry:` and `:` comments are ignored; a last event not followed by a blank
  line is dispatched only by `finish()` when the body has ended.

`LineReader` splits bytes into lines; `SSEDecoder` builds events on it (and, for the content
views, can also hand out the lines that are no SSE field at all, as events named `?`). Both are linear in the
input: a piece is scanned once, and an unfinished line is kept as a list of pieces joined once
when it completes (never `buffer + piece` per piece). Both are bounded: one line, or one event,
longer than `max_size` bytes raises `SSETooLarge` (the converters turn it into an error line
or event), so a stream without line ends cannot grow the proxy's memory without limit.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_EVENT = 16 * 1024 * 1024  # bytes of one line or one event; a chat chunk is a few hundred
_BOM = b"\xef\xbb\xbf"


class SSETooLarge(ValueError):
    """One line or event is longer than the decoder's cap."""


class Event(NamedTuple):
    """One dispatched event: its data lines joined by LF, and its type (`message` unless named)."""

    data: bytes
    name: str = "message"


class LineReader:
    """Complete lines (without their line ends) from pieces of a body, however it was cut."""

    __slots__ = ("_cr", "_pending", "_size", "_started", "max_size")

    def __init__(self, max_size: int = MAX_EVENT) -> None:
        self.max_size = max_size
        self._pending: list[bytes] = []  # the pieces of the unfinished last line
        self._size = 0
        self._cr = False  # the last piece ended with CR: an LF starting the next one belongs to it
        self._started = False

    def feed(self, data: bytes) -> list[bytes]:
        """The lines this piece completes (possibly none)."""
        if not self._started:
            if not data:
                return []
            self._started = True
            if data.startswith(_BOM):
                data = data[3:]
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n")
        if end < 0:
            if data:
                self._pending.append(data)
                self._size += len(data)
                if self._size > self.max_size:
                    raise SSETooLarge(f"a line of the stream is longer than {self.max_size} bytes")
            return []
        lines = data[:end].split(b"\n")
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            if len(lines[0]) > self.max_size:
                raise SSETooLarge(f"a line of the stream is longer than {self.max_size} bytes")
        rest = data[end + 1 :]
        self._pending = [rest] if rest else []
        self._size = len(rest)
        return lines

    def finish(self) -> list[bytes]:
        """The last line, if the body did not end with a line end."""
        rest = b"".join(self._pending)
        self._pending = []
        self._size = 0
        return [rest] if rest else []


class SSEDecoder:
    """Events from pieces of an SSE body: `feed(piece)` as it arrives, `finish()` at its end."""

    __slots__ = ("_data", "_lines", "_name", "_size", "keep_unknown", "max_size")

    def __init__(self, max_size: int = MAX_EVENT, keep_unknown: bool = False) -> None:
        self.max_size = max_size
        self.keep_unknown = keep_unknown  # lines that are no SSE field come out as events named "?"
        self._lines = LineReader(max_size)
        self._data: list[bytes] = []
        self._size = 0
        self._name = "message"

    def feed(self, data: bytes) -> list[Event]:
        """The events this piece completes (possibly none). Raises `SSETooLarge`."""
        return self._events(self._lines.feed(data))

    def finish(self) -> list[Event]:
        """The events left when the body has ended: a last line, and a last event without its blank line."""
        events = self._events(self._lines.finish())
        if self._data:
            events.append(self._dispatch())
        return events

    def _events(self, lines: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._name = "message"
            elif line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data.append(value)
                self._size += len(value) + 1
                if self._size > self.max_size:
                    raise SSETooLarge(f"an event of the stream is longer than {self.max_size} bytes")
            elif line.startswith(b"event:"):
                self._name = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", "replace")
            elif self.keep_unknown and not line.startswith(b":") and line.partition(b":")[0] not in (b"id", b"retry"):
                if self._data:
                    events.append(self._dispatch())
                if line.strip():  # (a line of spaces ends an event, as a blank line does)
                    events.append(Event(line, "?"))
            # id:, retry:, ":" comments (and, unless kept, lines that are no SSE field) carry nothing for us
        return events

    def _dispatch(self) -> Event:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = Event(data, self._name)
        self._data = []
        self._size = 0
        self._name = "message"
        return event
