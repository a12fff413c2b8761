"""How large a client's request body may be: `request_body_limit` (default 64 MB) on every route.

Why 64 MB: Ollama clients send images as base64 inside the JSON body (4/3 of the image's size),
and OpenAI takes at most about 50 MB of image payload per request; three 10 MB photos are about
40 MB of JSON and fit, with room. Text alone never comes near it.

- `declared_too_large` (requestheaders): a `Content-Length` over the limit gets 413 before any of
  the body is read (`addon.guard.early` sends it).
- a chunked body has no length to check in advance: `addon.guard.client_buffer` counts it as
  mitmproxy reads it and answers 413 the moment it crosses the limit (`OllamaProxy.requestheaders`
  registers it); `too_large` (request) is the same check on a body that was read whole (HTTP/2).
- `ceiling`: what mitmproxy may buffer of any body is bounded by its own `body_size_limit`; in
  reverse mode, when the user left it unset, it is set to the larger of `request_body_limit` and
  what one upstream answer may be (mitmproxy applies the same option to responses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mitmproxy import exceptions, http

from addon import mitm_internals as fence

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
