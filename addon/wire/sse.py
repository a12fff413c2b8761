"""The one Server-Sent Events decoder: incremental, linear, and bounded.

Every SSE body the addon decodes goes through `SSEDecoder`: the upstream streams it converts
(`addon.translate.stream`) and the bodies the content views summarise. Following the WHATWG rules:

- a line ends with CRLF, LF or CR (a CR at the end of one piece and an LF at the start of the
  next are one line end); a UTF-8 byte order mark at the very start is ignored;
- `data:` lines accumulate (joined by LF) until a blank line dispatches the event; `event:`
  names it; `id:`, `retry:` and `:` comments are ignored; a last event not followed by a blank
  line is dispatched only by `finish()` when the body has ended.

It is linear in the input: a piece is scanned once, and an unfinished line is kept as a list of
pieces joined once when it completes (never `buffer + piece` per piece). It is bounded: one
line, or one event, longer than `max_size` bytes raises `SSETooLarge` (the converters turn it
into their final error line or event), so a stream without line ends or without blank lines
cannot grow the proxy's memory without limit. For the content views it can also hand out the
lines that are no SSE field at all, as events named `?`.

The byte-exact relays (`/v1` chat completions, the Responses pass-through:
`addon.endpoints.openai.SSERelay`) decode no events: `SSEFramer` hands them the complete lines
of each piece byte for byte, whichever line ends the stream uses, holding back only an
unfinished last line, with the same bound on one line and one event.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_EVENT = (
    16 * 1024 * 1024
)  # bytes of one line or one event (the default of sse_event_limit); a chat chunk is a few hundred
_BOM = b"\xef\xbb\xbf"


class SSETooLarge(ValueError):
    """One line or event is longer than the decoder's cap."""


class Event(NamedTuple):
    """One dispatched event: its data lines joined by LF, and its type (`message` unless named)."""

    data: bytes
    name: str = "message"


_new_event = tuple.__new__  # Event(data, name) without the generated __new__: this is the hot path


class SSEDecoder:
    """Events from pieces of an SSE body: `feed(piece)` as it arrives, `finish()` at its end."""

    __slots__ = ("_cr", "_data", "_name", "_pending", "_pending_size", "_size", "_started", "keep_unknown", "max_size")

    def __init__(self, max_size: int = MAX_EVENT, keep_unknown: bool = False) -> None:
        self.max_size = max_size
        self.keep_unknown = keep_unknown  # lines that are no SSE field come out as events named "?"
        self._pending: list[bytes] = []  # the pieces of the unfinished last line
        self._pending_size = 0
        self._cr = False  # the last piece ended with CR: an LF starting the next one belongs to it
        self._started = False
        self._data: list[bytes] = []  # the data lines of the event being read
        self._size = 0
        self._name = "message"

    def feed(self, data: bytes) -> list[Event]:
        """The events this piece completes (possibly none). Raises `SSETooLarge`."""
        if self._cr or not self._started or b"\r" in data:
            data = self._line_ends(data)
        if data.endswith(b"\n\n") and data.startswith(b"data: ") and data.count(b"\n") == 2 and not self._pending:
            # The common piece: exactly one event of one data line.
            if self._data or len(data) - 8 > self.max_size:
                return self._events(data.split(b"\n")[:-1])
            event: Event = _new_event(Event, (data[6:-2], self._name))
            self._name = "message"
            return [event]
        lines = data.split(b"\n")
        rest = lines.pop()
        if not lines:  # no line end in this piece
            if rest:
                self._pending.append(rest)
                self._pending_size += len(rest)
                if self._pending_size > self.max_size:
                    raise SSETooLarge(f"a line of the stream is longer than sse_event_limit ({self.max_size} bytes)")
            return []
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            if len(lines[0]) > self.max_size:
                raise SSETooLarge(f"a line of the stream is longer than sse_event_limit ({self.max_size} bytes)")
        self._pending = [rest] if rest else []
        self._pending_size = len(rest)
        return self._events(lines)

    def one_data_line(self, data: bytes) -> bool:
        """Whether this piece is exactly one event of one `data: ` line ended by LFs, with nothing of the body
        before it pending: its data is `data[6:-2]`, and the caller may take it so instead of feeding it."""
        return (
            data.endswith(b"\n\n")
            and data.startswith(b"data: ")
            and data.count(b"\n") == 2
            and self.idle()
            and len(data) - 8 <= self.max_size
            and b"\r" not in data
        )

    def idle(self) -> bool:
        """Whether nothing of the body is pending (no unfinished line, event, CR or event name) after the first
        piece: a next piece of one `data: ` line, LF-ended, without CR, at most `max_size` + 8 bytes long, is
        then exactly one event, `data[6:-2]` (`one_data_line`). Changes only with `feed` and `finish`."""
        return not self._pending and not self._data and not self._cr and self._started and self._name == "message"

    def finish(self) -> list[Event]:
        """The events left when the body has ended: a last line, and a last event without its blank line."""
        rest = b"".join(self._pending)
        self._pending = []
        self._pending_size = 0
        events = self._events([rest]) if rest else []
        if self._data:
            events.append(self._dispatch())
        return events

    def _line_ends(self, data: bytes) -> bytes:
        """CRLF and CR as LF, across pieces; the byte order mark of the first piece dropped."""
        if not self._started:
            if not data:
                return data
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
        return data

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
                    raise SSETooLarge(f"an event of the stream is longer than sse_event_limit ({self.max_size} bytes)")
            elif line.startswith(b"event:"):
                self._name = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", "replace")
            elif self.keep_unknown and not line.startswith(b":") and line.partition(b":")[0] not in (b"id", b"retry"):
                if self._data:
                    events.append(self._dispatch())
                if line.strip():  # (a line of spaces ends an event, as a blank line does)
                    events.append(_new_event(Event, (line, "?")))
            # id:, retry:, ":" comments (and, unless kept, lines that are no SSE field) carry nothing for us
        return events

    def _dispatch(self) -> Event:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event: Event = _new_event(Event, (data, self._name))
        self._data = []
        self._size = 0
        self._name = "message"
        return event


_LINE_ENDS = re.compile(rb"(\r\n|\r|\n)")


class SSEFramer:
    """Complete lines of an SSE body, byte for byte: `feed(piece)` returns the bytes of the lines the piece
    completes (b"" for none), `finish()` the unfinished last line once the body has ended.

    A line ends with LF, CRLF or CR alike; a CR that ends a piece completes its line at once (an LF
    that follows in the next piece is passed on with that piece's lines and ends no line of its
    own). Linear: pieces of an unfinished line are joined once. Bounded: one line, or one event
    (the bytes since the last blank line), longer than `max_size` bytes raises `SSETooLarge`.
    """

    __slots__ = ("_cr", "_event", "_line_start", "_pending", "_pending_size", "max_size")

    def __init__(self, max_size: int = MAX_EVENT) -> None:
        self.max_size = max_size
        self._pending: list[bytes] = []  # the pieces of the unfinished last line
        self._pending_size = 0
        self._event = 0  # bytes of the event being passed, since the last blank line
        self._line_start = True  # the last byte passed ended a line (or nothing was passed yet)
        self._cr = False  # the last piece ended with CR: an LF starting the next one belongs to it

    def feed(self, data: bytes) -> bytes:
        """The bytes of the lines this piece completes. Raises `SSETooLarge`."""
        if not data:
            return b""
        if (
            data.endswith(b"\n\n")
            and not self._pending
            and not self._cr
            and len(data) <= self.max_size
            and (not self._event or self._event + data.find(b"\n\n") <= self.max_size)
            and b"\r" not in data
        ):  # the common piece: whole events, LF-ended, none of them too long
            self._event = 0
            self._line_start = True
            return data
        lines = data
        if self._cr and data[:1] == b"\n":
            lines = data[1:]
        self._cr = data.endswith(b"\r")
        if b"\r" in lines:
            lines = lines.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        last = lines.rfind(b"\n")
        if last < 0:  # no line end in this piece
            self._pending.append(data)
            self._pending_size += len(lines)
            self._event += len(lines)
            self._line_start = self._line_start and not lines
            self._check(self._pending_size, "a line")
            self._check(self._event, "an event")
            return b""
        self._check(self._pending_size + lines.find(b"\n"), "a line")
        blank = (b"\n" if self._line_start else b"") + lines
        first_end = blank.find(b"\n\n")
        if first_end >= 0:
            self._check(self._event + first_end, "an event")
            self._event = len(blank) - blank.rfind(b"\n\n") - 2
        else:
            self._event += len(lines)
        if len(lines) > self.max_size:  # whole lines and events inside one piece larger than the bound
            self._check(max(map(len, lines.split(b"\n"))), "a line")
            self._check(max(map(len, blank.split(b"\n\n"))), "an event")
        self._check(self._event, "an event")
        self._pending_size = len(lines) - last - 1
        self._line_start = self._pending_size == 0
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if self._pending:
            self._pending.append(data[:end])
            out = b"".join(self._pending)
        else:
            out = data[:end] if end < len(data) else data
        self._pending = [data[end:]] if end < len(data) else []
        return out

    def finish(self) -> bytes:
        """The unfinished last line, once the body has ended (b"" if there is none)."""
        rest = b"".join(self._pending)
        self._pending = []
        self._pending_size = 0
        return rest

    def _check(self, size: int, what: str) -> None:
        if size > self.max_size:
            raise SSETooLarge(f"{what} of the stream is longer than sse_event_limit ({self.max_size} bytes)")


def split_lines(lines: bytes) -> list[bytes]:
    """Lines (as `SSEFramer` hands them) → each line with its line end, whichever it is."""
    parts = _LINE_ENDS.split(lines)
    out = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    if parts[-1]:
        out.append(parts[-1])
    return out
