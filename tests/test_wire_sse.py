"""The one SSE decoder (addon/wire/sse.py): line ends, piece boundaries, fields, caps, linear cost."""

from __future__ import annotations

import pytest

from addon.wire.sse import Event, SSEDecoder, SSETooLarge


def decode(body: bytes, size: int | None = None, **options: object) -> list[Event]:
    decoder = SSEDecoder(**options)  # type: ignore[arg-type]
    step = size or max(len(body), 1)
    events = [e for i in range(0, len(body), step) for e in decoder.feed(body[i : i + step])]
    return events + decoder.finish()


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, None])
def test_every_line_end_and_every_cut(end: bytes, size: int | None) -> None:
    body = (
        end.join([b"data: one", b"", b"event: note", b"data:two", b"data:  three", b"", b": comment", b"id: 7", b""])
        + end
    )
    assert decode(body, size) == [Event(b"one"), Event(b"two\n three", "note")]


def test_a_crlf_split_between_two_pieces_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == [Event(b"a")]
    assert decoder.feed(b"\ndata: b\n\n") == [Event(b"b")], "the LF after the CR ends nothing more"


def test_the_byte_order_mark_and_the_last_event_without_its_blank_line() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\ndata: tail") == [Event(b"x"), Event(b"tail")]
    assert decode(b"") == [] and decode(b"\n\n\n") == []


def test_lines_that_are_no_field_are_kept_only_when_asked() -> None:
    body = b'{"not": "sse"}\ndata: x\n\n'
    assert decode(body) == [Event(b"x")]
    assert decode(body, keep_unknown=True) == [Event(b'{"not": "sse"}', "?"), Event(b"x")]


def test_a_line_or_an_event_over_the_cap_raises() -> None:
    decoder = SSEDecoder(max_size=100)
    decoder.feed(b"data: " + b"x" * 60)
    with pytest.raises(SSETooLarge, match="line"):
        decoder.feed(b"y" * 60)
    events = SSEDecoder(max_size=100)
    with pytest.raises(SSETooLarge, match="event"):
        events.feed(b"".join(b"data: " + b"z" * 30 + b"\n" for _ in range(5)))


def test_an_unfinished_line_is_kept_as_its_pieces_and_joined_once() -> None:
    """Linear in the input: the pieces of a long line are kept as they came (never `buffer + piece`
    per piece, which made one 64 MB event cost 30 s of CPU) and joined once, when the line ends.
    Checked on the pieces themselves rather than with a clock: tests assert no timings."""
    decoder = SSEDecoder(max_size=64 * 1024 * 1024)
    pieces = [bytes([65 + n % 26]) * 16384 for n in range(256)]  # 4 MB, no line end
    assert decoder.feed(b"data: ") == []
    for piece in pieces:
        assert decoder.feed(piece) == []
    assert all(kept is piece for kept, piece in zip(decoder._pending[-len(pieces) :], pieces, strict=True))
    (event,) = decoder.feed(b"\n\n")
    assert event.data == b"".join(pieces) and decoder._pending == []
