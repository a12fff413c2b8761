"""Ollama-style JSON instead of mitmproxy's HTML error page when the upstream cannot be reached.

mitmproxy answers a failed upstream connection (refused, unknown host, TLS failure, timeout)
itself, with a `502 text/html` page that no addon hook can replace: setting `flow.response` in
the `error` hook is ignored. The page is made by one private function of mitmproxy's HTTP/1
layer; this module swaps it for one that writes `{"error": "..."}`. The function is private, so
the mitmproxy version is pinned in pyproject.toml and tests/test_guard_errorpage.py guards the swap.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable

from mitmproxy import http, version
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

_original: Callable[..., bytes] | None = None

# Set by an `error` hook (addon.guard.timeouts) that knows better than mitmproxy what happened. mitmproxy
# runs the hook and then writes the error answer in the same asyncio task, so a context variable
# reaches exactly that answer and no other connection's.
_override: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "ollama_error_override", default=None
)


def override(status: int, message: str) -> None:
    """Make the error answer mitmproxy is about to write for this flow say `message` with `status`."""
    _override.set((status, message))


def friendly_message(status: int, message: str) -> str:
    """mitmproxy's terse error text, said so that an Ollama user understands it."""
    lowered = message.lower()
    if "connect call failed" in lowered or "connection refused" in lowered:
        return f"cannot reach the upstream: connection refused ({message})"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return f"cannot reach the upstream: unknown host ({message})"
    if "certificate" in lowered or "tls" in lowered or "ssl" in lowered:
        return f"cannot reach the upstream: TLS handshake failed ({message})"
    if "server closed connection" in lowered:
        return "the upstream closed the connection without answering"
    if "peer closed connection" in lowered or "incomplete" in lowered:
        return f"the upstream connection broke off before the answer was complete ({message})"
    if "timed out" in lowered or "timeout" in lowered:
        return f"the upstream did not answer in time ({message})"
    return message or f"proxy error {status}"


def json_error_response(status_code: int, message: str = "") -> bytes:
    text = friendly_message(status_code, message)
    if (chosen := _override.get()) is not None:
        status_code, text = chosen
        _override.set(None)
    response = http.Response.make(
        status_code,
        json.dumps({"error": text}).encode(),
        http.Headers(Server=version.MITMPROXY, Connection="close", Content_Type="application/json; charset=utf-8"),
    )
    return bytes(http1.assemble_response(response))


def install() -> None:
    global _original
    if _original is None:
        _original = _http1.make_error_response
        _http1.make_error_response = json_error_response


def uninstall() -> None:
    global _original
    if _original is not None:
        _http1.make_error_response = _original
        _original = None
