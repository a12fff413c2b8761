"""What of an upstream's answer the proxy takes (addon/guard/upstream.py): the head by an allow-list, and a
body decoded at most as far as upstream_body_limit. (End to end: tests/hostile/.)"""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
from mitmproxy import http

from addon.endpoints.openai import SSERelay
from addon.guard import secrets, upstream

try:
    from compression import zstd
except ImportError:
    from backports import zstd

KEY = "sk-upstream-0123456789abcdef"


def test_the_head_keeps_only_allowed_headers_without_keys_and_the_standard_reason() -> None:
    secrets.register("test", KEY)
    try:
        response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        response.reason = f"Bearer {KEY}"
        for name, value in [
            ("x-request-id", f"req-{KEY}"),
            ("x-ratelimit-remaining-tokens", "99"),
            ("retry-after", "1"),
            ("set-cookie", f"k={KEY}"),
            ("www-authenticate", "Bearer"),
            ("link", "<https://x>"),
            ("location", "https://x"),
            ("x-innocent", "1"),
            ("content-encoding", "gzip"),
        ]:
            response.headers.add(name, value)
        upstream.clean_head(response)
        assert set(response.headers.keys()) == {
            "content-type",
            "content-length",
            "x-request-id",
            "x-ratelimit-remaining-tokens",
            "retry-after",
            "content-encoding",  # only until the body is decoded
        }
        assert response.headers["x-request-id"] == "req-[redacted]" and response.reason == "OK"
    finally:
        secrets.register("test", "")


@pytest.mark.parametrize(
    ("status", "words", "unread"),
    [(103, "interim answer (103 Early Hints)", True), (307, "redirect (307 Temporary Redirect)", False)],
)
def test_interim_answers_and_redirects_are_refused(status: int, words: str, unread: bool) -> None:
    refused = upstream.refusal(http.Response.make(status, b""), streamed=False, limit=1 << 20)
    assert refused is not None and words in refused[0] and refused[1] is unread


def test_a_content_length_over_the_limit_is_refused_at_the_headers() -> None:
    response = http.Response.make(200, b"")
    response.headers["content-length"] = str(300 << 20)
    refused = upstream.refusal(response, streamed=False, limit=256 << 20)
    assert refused is not None and "upstream_body_limit" in refused[0] and refused[1]
    assert upstream.refusal(response, streamed=True, limit=256 << 20) is None  # a stream has its own limit
    assert upstream.refusal(http.Response.make(200, b"x" * 10), streamed=False, limit=256 << 20) is None


BODY = b'{"a": "' + b"x" * 3_000_000 + b'"}'
ENCODED = {
    "gzip": gzip.compress(BODY),
    "deflate": zlib.compress(BODY),
    "br": brotli.compress(BODY),
    "zstd": zstd.compress(BODY),
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_bodies_are_decoded_within_the_limit(encoding: str) -> None:
    response = http.Response.make(200, b"", {"content-encoding": encoding})
    response.raw_content = ENCODED[encoding]
    assert upstream.decoded_body(response, 4_000_000) == BODY
    assert "content-encoding" not in response.headers and response.raw_content == BODY
    response = http.Response.make(200, b"", {"content-encoding": encoding})
    response.raw_content = ENCODED[encoding]
    with pytest.raises(upstream.Refused, match="upstream_body_limit"):
        upstream.decoded_body(response, 1_000_000)


def test_raw_deflate_undecodable_and_unknown_encodings() -> None:
    raw = zlib.compressobj(wbits=-15)
    response = http.Response.make(200, b"", {"content-encoding": "deflate"})
    response.raw_content = raw.compress(b"hello") + raw.flush()
    assert upstream.decoded_body(response, 100) == b"hello"
    for encoding, data in (("gzip", b"not gzip"), ("compress", b"x")):
        response = http.Response.make(200, b"")
        response.headers["content-encoding"] = encoding  # (make() drops an encoding it cannot apply)
        response.raw_content = data
        with pytest.raises(upstream.Refused):
            upstream.decoded_body(response, 100)
    response = http.Response.make(200, b"x" * 101)
    with pytest.raises(upstream.Refused, match="upstream_body_limit"):
        upstream.decoded_body(response, 100)


def test_the_v1_relay_caps_one_event_linearly_and_refuses_nan() -> None:
    relay = SSERelay(None, max_event=1000)
    assert relay.feed(b'data: {"a": 1}\n\n') == b'data: {"a": 1}\n\n'
    for _ in range(7):  # data lines without a blank line: one event growing
        out = relay.feed(b'data: {"b": "' + b"y" * 150 + b'"}\n')
    assert relay.ended and relay.aborted and b"sse_event_limit" in out
    relay = SSERelay(None, max_event=1000)
    assert relay.feed(b'data: {"a": 1}\r\n\r\n' * 100)  # many events, each small: no limit
    assert not relay.ended
    relay = SSERelay(None)
    out = relay.feed(b'data: {"created": NaN}\n\n')
    assert relay.ended and b"not JSON" in out and b"NaN" not in out.split(b"\n\n")[-2][:20]
    relay = SSERelay(None)
    assert relay.feed(b'data: {"content": "NaN and Infinity are words"}\n\n').startswith(b"data:")
    assert not relay.ended


# ---------------------------------------------------------------------------------------------
# A compressed stream, decoded piece by piece (issue 21 §4)

EVENTS = b"".join(b'data: {"n": %d, "text": "%s"}\n\n' % (n, b"word " * n) for n in range(200)) + b"data: [DONE]\n\n"
ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def decoded_in_pieces(encoding: str, data: bytes, size: int, most: int = 1 << 20) -> bytes:
    decoder = upstream.StreamDecoder(encoding, most)
    out = [decoder.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + decoder.finish()


@pytest.mark.parametrize("encoding", list(ENCODERS))
@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20])
def test_a_stream_decodes_piece_by_piece(encoding: str, size: int) -> None:
    assert decoded_in_pieces(encoding, ENCODERS[encoding](EVENTS), size) == EVENTS


def test_members_frames_and_raw_deflate() -> None:
    assert decoded_in_pieces("gzip", gzip.compress(EVENTS[:500]) + gzip.compress(EVENTS[500:]), 100) == EVENTS
    assert decoded_in_pieces("zstd", zstd.compress(EVENTS[:500]) + zstd.compress(EVENTS[500:]), 100) == EVENTS
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert decoded_in_pieces("deflate", raw.compress(EVENTS) + raw.flush(), 50) == EVENTS


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_a_piece_that_expands_too_far_or_does_not_decode_is_refused(encoding: str) -> None:
    bomb = ENCODERS[encoding](b" " * (8 << 20))
    with pytest.raises(upstream.Refused, match="expands beyond") as refused:
        upstream.StreamDecoder(encoding, 1 << 20).feed(bomb)
    assert "cannot be decoded" not in str(refused.value)
    with pytest.raises(upstream.Refused):
        decoded_in_pieces(encoding, b"\x00not compressed at all" * 10, 100)


def test_only_encodings_it_decodes_are_streamed() -> None:
    def response(encoding: str) -> http.Response:
        return http.Response.make(200, b"", {"content-type": "text/event-stream", "content-encoding": encoding})

    assert upstream.stream_decoder(response("identity"), 1) is None
    assert upstream.stream_decoder(response("compress"), 1) is None  # gathered, then refused by decoded_body
    gz = response("gzip")
    assert isinstance(upstream.stream_decoder(gz, 1), upstream.StreamDecoder)
    assert "content-encoding" not in gz.headers, "the client gets the decoded stream"
