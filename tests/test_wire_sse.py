"""The one SSE decoder (addon/wire/sse.py): line ends, piece boundaries, fields, caps, linear cost."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon.wire.sse import Event, SSEDecoder, SSEFramer, SSETooLarge, split_lines


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


# ---------------------------------------------------------------------------------------------
# The framer of the byte-exact relays

_LINE = st.sampled_from([b'data: {"a":1}', b"data: [DONE]", b"event: x", b": ping", b"", b"data:\xc3\xa9", b"id: 7"])
_END = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_LINE, _END), max_size=30))
    body = b"".join(line + end for line, end in lines)
    return body + draw(st.sampled_from([b"", b"data: unfinished"]))


def framed(body: bytes, cuts: list[int], limit: int = 1 << 20) -> list[bytes]:
    framer = SSEFramer(limit)
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    out = [framer.feed(body[a:b]) for a, b in itertools.pairwise(points)]
    return [*out, framer.finish()]


@settings(max_examples=300, deadline=None)
@given(sse_bodies(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_the_framer_passes_every_byte_on_and_only_whole_lines(body: bytes, cuts: list[int]) -> None:
    out = framed(body, cuts)
    assert b"".join(out) == body, "byte for byte, whatever the line ends and the cuts"
    for piece in out[:-1]:
        assert not piece or piece.endswith((b"\n", b"\r")), "only whole lines before the end"
    assert b"".join(split_lines(b"".join(out))) == body


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_the_event_limit_holds_for_every_line_end(end: bytes) -> None:
    line = b"data: " + b"x" * 50 + end
    framer = SSEFramer(1000)
    with pytest.raises(SSETooLarge, match="an event"):
        for _ in range(100):  # lines that never end their event
            framer.feed(line)
    framer = SSEFramer(1000)
    with pytest.raises(SSETooLarge, match="a line"):
        for _ in range(100):  # a line that never ends
            framer.feed(b"x" * 50)
    framer = SSEFramer(1000)
    for _ in range(100):  # events that end: nothing held, no limit broken
        assert framer.feed(line + end) == line + end


def test_a_cr_cut_from_its_lf_ends_the_line_at_once() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: a\r") == b"data: a\r"
    assert framer.feed(b"\n\r\ndata: b") == b"\n\r\n"
    assert framer.feed(b"\r\n") == b"data: b\r\n"
    assert framer.finish() == b""


def test_a_big_piece_of_whole_events_is_checked_inside() -> None:
    framer = SSEFramer(100)
    with pytest.raises(SSETooLarge):
        framer.feed(b"data: ok\n\n" + b"data: " + b"y" * 200 + b"\n\n" + b"data: ok\n\n")
