"""What of an upstream's answer the proxy takes: its head, and at most `upstream_body_limit` of its body.

A hostile upstream (or a man in the middle, or a misconfigured gateway) chooses every byte of its
answer. The proxy passes on only what a client needs, and refuses what it cannot pass on safely:

- `clean_head` (responseheaders, every forwarded flow, streams and errors too, before any view,
  the dumper or a saved flow sees the answer): the upstream's headers by an allow-list
  (`ALLOWED_HEADERS`: framing, `date`, `retry-after`, request ids and rate limits; never
  `set-cookie`, `www-authenticate`, `link`, `location` or unknown `x-*`), their values without
  any configured key, and the standard reason phrase of the status (an upstream's reason phrase
  is its own text). `content-encoding` is kept only until `decoded_body` has decoded the body.
- `refusal` (responseheaders): an answer the proxy does not relay, as `(status, message)` for a
  502 in the route's shape: an interim `1xx` (mitmproxy 12 takes a `103 Early Hints` for the
  final answer), a `3xx` (a client would follow it with its request; its `Location` is the
  upstream's), a `Content-Length` over `upstream_body_limit` (the upstream connection is then
  closed before the body is read).
- `decoded_body` (response): the body of a whole answer decoded with a bounded decompressor
  (gzip, deflate, brotli, zstd: never mitmproxy's unbounded `get_content()`), so that a 300 MB
  gzip bomb costs at most `upstream_body_limit` of memory; over it, or undecodable: refused.
- `stream_decoder` (responseheaders): a compressed stream (the proxy asked for `identity`, but an
  upstream may compress anyway) is decoded piece by piece as it arrives (`StreamDecoder`), before
  the stream's framing and conversion, so that `sse_event_limit` applies to its events and no more
  than one piece's output is held: a piece that expands beyond `most` bytes (a bomb) or does not
  decode ends the stream with a 502-style error. An encoding it cannot decode is gathered whole and
  refused by `decoded_body`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import brotli  # type: ignore[import-untyped]
from mitmproxy import http

from addon import mitm_internals as fence
from addon.guard import secrets

try:  # Python 3.14's standard library, else the backport mitmproxy depends on
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

# Response headers a client may get from the upstream (plus the proxy's own framing and CORS headers).
ALLOWED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "date",
        "retry-after",
        "retry-after-ms",
        "x-request-id",
        "openai-processing-ms",
        *(f"x-ratelimit-{kind}-{what}" for kind in ("limit", "remaining", "reset") for what in ("requests", "tokens")),
    }
)
_KEPT_UNTIL_DECODED = "content-encoding"


class Refused(ValueError):
    """An upstream answer the proxy does not pass on; the message says why (for a 502)."""


class TooLarge(Exception):
    """A decompressed body reached its cap."""


def size(limit: int) -> str:
    return fence.pretty_size(limit)


def clean_head(response: http.Response) -> None:
    """The upstream's head as a client may see it: allow-listed headers, values without keys, the standard reason."""
    fields = []
    for name, value in response.headers.fields:
        lowered = name.lower().decode("latin-1")
        if lowered in ALLOWED_HEADERS or lowered == _KEPT_UNTIL_DECODED:
            fields.append((name, secrets.scrub_bytes(value)))
    response.headers = http.Headers(fields)
    response.reason = fence.REASONS.get(response.status_code, "")


def refusal(response: http.Response, streamed: bool, limit: int) -> tuple[str, bool] | None:
    """Why the proxy refuses this answer at its headers, and whether its body must not be read; None: taken."""
    status = response.status_code
    named = f"{status} {phrase}" if (phrase := fence.REASONS.get(status)) else str(status)
    if 100 <= status < 200:
        return f"the upstream sent an interim answer ({named}) where its answer was due", True
    if 300 <= status < 400:
        return f"the upstream answered with a redirect ({named}), which the proxy does not follow", False
    if not streamed:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return (
                f"the upstream's answer is larger than upstream_body_limit ({size(limit)}): "
                f"Content-Length {size(int(length))}"
            ), True
    return None


def compressed(response: http.Response) -> bool:
    return response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")


def decoded_body(response: http.Response, limit: int) -> bytes:
    """The body, decoded (at most `limit` bytes of it); the response then carries it without
    `Content-Encoding`. Raises `Refused` when it is larger, or cannot be decoded."""
    raw = response.raw_content or b""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise Refused(f"the upstream's answer is larger than upstream_body_limit ({size(limit)})")
        return raw
    decode = _DECODERS.get(encoding)
    if decode is None:
        raise Refused(f"the upstream's answer has a content encoding the proxy cannot decode ({encoding[:40]!r})")
    try:
        body = decode(raw, limit + 1)
    except TooLarge:
        raise Refused(
            f"the upstream's answer is larger than upstream_body_limit ({size(limit)}) once decompressed"
        ) from None
    except (zlib.error, brotli.error, zstd.ZstdError, ValueError, EOFError) as e:
        raise Refused(f"the upstream's {encoding} answer cannot be decoded ({e})") from None
    response.headers.pop("content-encoding", None)
    response.raw_content = body
    return body


# ---------------------------------------------------------------------------------------------
# Bounded decompressors: at most `most` bytes of output, whatever the input expands to, made in steps
# of STEP bytes (one call with max_length = most would hold its output twice: blocks, then their join).

STEP = 1 << 20


def _gathered(pieces: Iterator[bytes], most: int) -> bytes:
    """The pieces joined; `TooLarge` at `most` bytes: no more than that is ever held (nor joined, which
    would hold it twice)."""
    out: list[bytes] = []
    total = 0
    for piece in pieces:
        out.append(piece)
        total += len(piece)
        if total >= most:
            del out[:]
            raise TooLarge
    return b"".join(out)


def _zlib(data: bytes, wbits: int) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(wbits)
    while data:
        piece = decompressor.decompress(data, STEP)
        data = decompressor.unconsumed_tail
        if not piece and data:
            raise ValueError("compressed data makes no progress")
        yield piece
    yield decompressor.flush()


def _gzip(data: bytes, most: int) -> bytes:
    return _gathered(_zlib(data, 47), most)  # gzip or zlib framing, detected


def _deflate(data: bytes, most: int) -> bytes:
    try:
        return _gathered(_zlib(data, 15), most)  # zlib framing (what "deflate" means)
    except zlib.error:
        return _gathered(_zlib(data, -15), most)  # raw deflate (what some servers send)


def _brotli_pieces(data: bytes) -> Iterator[bytes]:
    decompressor = brotli.Decompressor()
    yield decompressor.process(data, output_buffer_limit=STEP)  # (the limit is a soft one: about STEP)
    while not decompressor.is_finished():
        piece = decompressor.process(b"", output_buffer_limit=STEP)
        if not piece:
            break  # (a truncated stream: what was decoded is all there is)
        yield piece


def _brotli(data: bytes, most: int) -> bytes:
    return _gathered(_brotli_pieces(data), most)


def _zstd_pieces(data: bytes) -> Iterator[bytes]:
    decompressor = zstd.ZstdDecompressor()
    yield decompressor.decompress(data, max_length=STEP)
    while not decompressor.eof and not decompressor.needs_input:
        yield decompressor.decompress(b"", max_length=STEP)


def _zstd(data: bytes, most: int) -> bytes:
    return _gathered(_zstd_pieces(data), most)


class StreamDecoder:
    """An upstream stream's Content-Encoding undone incrementally: bytes in, bytes out.

    `feed` returns what a piece decodes to, made in steps of STEP bytes and never more than `most`
    in one call (`Refused` beyond, or when the data does not decode); `finish` what is left at the
    end. Concatenated members (gzip) or frames (zstd) are decoded one after the other."""

    def __init__(self, encoding: str, most: int) -> None:
        self.encoding = encoding
        self.most = most
        self.decompressor: Any = None
        self.raw_deflate = False
        self.refused: str | None = None  # why it gave up on the stream (`through`)

    def through(self, converter: Any, data: bytes) -> tuple[bytes, bytes]:
        """A piece of the stream (b"": its end) decoded, then fed to the stream's converter: (what the
        client gets, the decoded piece). A piece it refuses ends the stream with the converter's
        error piece (`refused` says why); nothing more is decoded after that."""
        if self.refused is not None:
            return b"", b""
        try:
            plain = self.feed(data) if data else self.finish()
        except Refused as e:
            self.refused = str(e)
            return converter.fail(self.refused) or b"", b""
        out = converter.feed(plain) if plain else b""
        return (out if data else out + converter.finish()), plain

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        total = 0
        try:
            for piece in self._pieces(data):
                total += len(piece)
                if total > self.most:
                    raise Refused(
                        f"the upstream's {self.encoding} stream expands beyond {size(self.most)} in one piece "
                        "(sse_event_limit): cut"
                    )
                out.append(piece)
        except Refused:
            raise
        except (zlib.error, brotli.error, zstd.ZstdError, ValueError, EOFError) as e:
            raise Refused(f"the upstream's {self.encoding} stream cannot be decoded ({e})") from None
        return b"".join(out)

    def finish(self) -> bytes:
        """What the decompressor still holds at the end of the stream (zlib's buffered tail)."""
        if self.decompressor is None or self.encoding in ("br", "zstd"):
            return b""
        return bytes(self.decompressor.flush())

    def _new(self, first: bytes) -> Any:
        if self.encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(47)
        if self.encoding == "deflate":
            # zlib framing (what "deflate" means), or raw deflate (what some servers send)
            self.raw_deflate = len(first) >= 2 and ((first[0] << 8) | first[1]) % 31 != 0
            return zlib.decompressobj(-15 if self.raw_deflate else 15)
        if self.encoding == "br":
            return brotli.Decompressor()
        return zstd.ZstdDecompressor()

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self.decompressor is None:
                self.decompressor = self._new(data)
            decompressor = self.decompressor
            if self.encoding == "br":
                yield decompressor.process(data, output_buffer_limit=STEP)
                while not decompressor.is_finished() and (piece := decompressor.process(b"", output_buffer_limit=STEP)):
                    yield piece
                return
            if self.encoding == "zstd":
                yield decompressor.decompress(data, max_length=STEP)
                while not decompressor.eof and not decompressor.needs_input:
                    yield decompressor.decompress(b"", max_length=STEP)
                data = decompressor.unused_data if decompressor.eof else b""
            else:
                yield decompressor.decompress(data, STEP)
                while decompressor.unconsumed_tail:
                    if not (piece := decompressor.decompress(decompressor.unconsumed_tail, STEP)):
                        raise ValueError("compressed data makes no progress")
                    yield piece
                data = decompressor.unused_data if decompressor.eof else b""
            if data:
                self.decompressor = None  # the next member or frame


def frame_whole(response: http.Response, http10: bool) -> None:
    """A whole answer's framing headers say what its body is now, whatever rewrote it (a decoded
    Content-Encoding, a scrubbed key, a converted answer): chunked as the upstream framed it (mitmproxy
    writes the chunks), else Content-Length its length; HTTP/1.0 cannot read chunks."""
    headers = response.headers
    body = response.raw_content or b""
    if not http10 and "chunked" in headers.get("transfer-encoding", "").lower():
        if "content-length" in headers:
            del headers["content-length"]
        return
    if "transfer-encoding" in headers:
        del headers["transfer-encoding"]
    if response.status_code not in (204, 304) and headers.get("content-length") != str(len(body)):
        headers["content-length"] = str(len(body))


def stream_decoder(response: http.Response, most: int) -> StreamDecoder | None:
    """A decoder for a compressed stream in an encoding the proxy decodes, else None (identity, or
    an encoding `decoded_body` refuses); the response then says it carries the decoded bytes."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in _DECODERS or encoding in ("", "identity"):
        return None
    response.headers.pop("content-encoding", None)
    return StreamDecoder(encoding, most)


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def decompressed(encoding: str, data: bytes, most: int) -> bytes | None:
    """`data` decoded from `encoding` (at most `most` bytes: `TooLarge` beyond); None for an encoding
    the proxy cannot decode. Raises `ValueError` for data that is not in that encoding."""
    decode = _DECODERS.get(encoding)
    if decode is None:
        return None
    try:
        return decode(data, most + 1)
    except (zlib.error, brotli.error, zstd.ZstdError, EOFError) as e:
        raise ValueError(str(e)) from None
