"""How large a client's request body may be: `request_body_limit` (default 16 MB) on every route.

Why 16 MB (issue 21 §4): what real clients send, and what keeps one request from stalling the
others. Agents send a few hundred KB to a few MB (a long context, tool definitions, an image or
two: Anthropic takes 5 MB per image); an Ollama client sends images as base64 inside the JSON
(4/3 of the file: a 10 MB photo is 13.3 MB). The work a body costs is linear in its size but
steep for a hostile shape (millions of tiny messages: about 0.2 s of CPU per MB, 30× the body in
memory), and part of it holds Python's GIL in one piece (`addon.offload`): at 16 MB the longest
stall of the other clients stays well under a second. Several large photos in one request need
a larger limit (`--set request_body_limit=64m`), at that cost (docs/limits.md).

- `declared_too_large` (requestheaders): a `Content-Length` over the limit gets 413 before any of
  the body is read (`addon.guard.early` sends it).
- a chunked body has no length to check in advance: `addon.guard.client_buffer` counts it as
  mitmproxy reads it and answers 413 the moment it crosses the limit (`OllamaProxy.requestheaders`
  registers it); `too_large` (request) is the same check on a body that was read whole (HTTP/2).
- `decode` (request): a body sent with a `Content-Encoding` (gzip, deflate, br, zstd) is decoded
  by the addon's bounded decompressors (`addon.guard.upstream.decompressed`), never by mitmproxy's
  unbounded `get_content()`: its decoded size is bounded by `request_body_limit` too (413 beyond;
  a 426-byte brotli body would otherwise decode to 512 MB). The request then carries the decoded
  body without the header. Another encoding, or a list of them: 415 with `Accept-Encoding` (RFC
  7694); data that does not decode: 400. A refused body is dropped from the flow, so that no view
  decodes it later. (Real Ollama decodes nothing: its JSON decoder refuses the compressed bytes
  with a 400. Decoding, bounded, serves the clients that compress large requests, and costs
  nothing to the others: one header lookup.)
- `ceiling`: what mitmproxy may buffer of any body is bounded by its own `body_size_limit`; in
  reverse mode, when the user left it unset, it is set to the larger of `request_body_limit` and
  what one upstream answer may be (mitmproxy applies the same option to responses).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from mitmproxy import exceptions, http

from addon import mitm_internals as fence
from addon.guard import upstream

if TYPE_CHECKING:
    from addon.endpoints.base import Endpoint
    from addon.reply import Answer

# The largest upstream answer mitmproxy may buffer when the addon sets body_size_limit: an OpenAI
# embeddings batch (2,048 inputs × 3,072 floats) is about 126 MB of JSON.
UPSTREAM_CEILING = 256 << 20
TOO_LARGE = "request body too large"


def parse_limit(value: str, option: str = "request_body_limit") -> int:
    """A size in mitmproxy's syntax (`64m`, `512k`, `1g`, bytes); 0 or empty: no limit."""
    try:
        size = fence.parse_size(value.strip() or None)
    except ValueError as e:
        raise exceptions.OptionsError(f"{option} must be a size such as 64m, 512k or 1g, got {value!r}") from e
    return size or 0


def describe(size: int) -> str:
    return fence.pretty_size(size)


def declared_too_large(request: http.Request, limit: int, endpoint: Endpoint) -> Answer | None:
    """413 for a Content-Length over the limit, before the body is read."""
    if not limit:
        return None
    try:
        size = fence.expected_body_size(request)
    except ValueError:
        return None  # mitmproxy answers a malformed length itself
    if size is not None and size > limit:
        return refusal(endpoint, limit, f"{describe(size)} declared")
    return None


def too_large(request: http.Request, limit: int, endpoint: Endpoint) -> Answer | None:
    """413 for a body (chunked, so not checked at its headers) over the limit, once it is read."""
    raw = request.raw_content
    if limit and raw is not None and len(raw) > limit:
        return chunked_refusal(endpoint, limit)
    return None


ACCEPTED_ENCODINGS = "gzip, deflate, br, zstd"


def decode(request: http.Request, limit: int, endpoint: Endpoint) -> Answer | None:
    """Replace a compressed body by its decoded bytes, bounded by `limit` (0: the body size ceiling);
    an answer (413, 415, 400) when that is refused."""
    encoding = request.headers.get("content-encoding")
    if encoding is None:
        return None
    coding = encoding.strip().lower()
    del request.headers["content-encoding"]
    if coding in ("", "identity"):
        return None
    most = limit or UPSTREAM_CEILING
    raw = request.raw_content or b""
    request.raw_content = b""  # (a view must never decode a refused body later)
    try:
        decoded = upstream.decompressed(coding, raw, most)
    except upstream.TooLarge:
        return endpoint.error(413, f"{TOO_LARGE}: over {describe(most)} once decompressed (request_body_limit)")
    except ValueError as e:
        return endpoint.error(400, f"cannot decode the {coding} request body: {str(e)[:200]}")
    if decoded is None:
        answer = endpoint.error(
            415, f"unsupported Content-Encoding {coding[:40]!r}: the proxy decodes {ACCEPTED_ENCODINGS}"
        )
        return dataclasses.replace(answer, headers=(*answer.headers, ("Accept-Encoding", ACCEPTED_ENCODINGS)))
    request.raw_content = decoded
    return None


def chunked_refusal(endpoint: Endpoint, limit: int) -> Answer:
    return refusal(endpoint, limit, f"more than {describe(limit)} sent")


def refusal(endpoint: Endpoint, limit: int, what: str) -> Answer:
    return endpoint.error(413, f"{TOO_LARGE}: {what}, the limit is {describe(limit)} (request_body_limit)")


def chunked(request: http.Request) -> bool:
    """Whether the body's length is not declared (chunked)."""
    if not request.headers.get("transfer-encoding"):  # the common case: one lookup, not mitmproxy's whole rule
        return False
    try:
        return fence.expected_body_size(request) is None
    except ValueError:
        return False


def ceiling(options: Any, request_limit: int, ours: str | None) -> str | None:
    """In reverse mode, bound what mitmproxy buffers of any body, unless the user chose a body_size_limit.

    `ours` is the value this function set before (None: none), which it may change again; the
    result is the value it set now (or `ours`, if it left the option alone)."""
    if "body_size_limit" not in options or "mode" not in options:
        return ours
    current = options.body_size_limit
    if current and current != ours:
        return ours  # the user's choice
    try:
        reverse = any(fence.is_reverse(m) for m in options.mode)
    except ValueError:
        return ours
    if not reverse:
        return ours
    wanted = str(max(request_limit, UPSTREAM_CEILING)) if request_limit else str(UPSTREAM_CEILING)
    if current != wanted:
        options.body_size_limit = wanted
    return wanted
