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
- `compressed`: a compressed stream is not relayed piece by piece; the proxy asked for
  `identity`, so such an answer is gathered (bounded) and converted whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

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
