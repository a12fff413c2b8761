"""Ollama-style JSON instead of mitmproxy's HTML error page, and mitmproxy's error texts without upstream bytes.

mitmproxy answers a failed upstream connection (refused, unknown host, TLS failure, timeout)
itself, with a `502 text/html` page that no addon hook can replace: setting `flow.response` in
the `error` hook is ignored. The page is made by one private function of mitmproxy's HTTP/1
layer; this module swaps it for one that writes `{"error": "..."}`, or, for a flow of the proxy's,
the error answer of that flow's API family (OpenAI's and Anthropic's error objects on their
routes) with the headers all its answers carry (CORS for an allowed browser Origin): the proxy's
`error` hook, which mitmproxy runs just before it writes the page, sets it (`shape`).

mitmproxy's texts for a malformed answer quote the upstream's bytes (`Bad HTTP response line:
b'...'`, `Invalid header line: b'...'`, `unexpected server response: b'...'`): an upstream that
echoes the key would have it shown in the error page, in `flow.error.msg` (saved flows, mitmweb)
and in the log line. `describe` turns each into a fixed message, used for all three.

mitmproxy 12.3.1 cannot read HTTP/1 trailers: its body reader raises `NotImplementedError`, the
connection's layer crashes ("mitmproxy has crashed!") and the client waits for an answer that
never comes. `install` also swaps the private `make_body_reader` for one whose chunked reader
refuses trailers as a protocol error: the client gets a 502 at once (400 for a client's request).

Both functions are private, so the mitmproxy version is pinned in pyproject.toml and
tests/test_guard_errorpage.py guards the swaps.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import h11
from h11._readers import ChunkedReader
from mitmproxy import http, version
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

from addon.guard import secrets

logger = logging.getLogger("ollama_proxy")

_original: Callable[..., bytes] | None = None
_original_reader: Callable[[int | None], Any] | None = None

# Set by an `error` hook (addon.guard.timeouts) that knows better than mitmproxy what happened. mitmproxy
# runs the hook and then writes the error answer in the same asyncio task, so a context variable
# reaches exactly that answer and no other connection's.
_override: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "ollama_error_override", default=None
)


def override(status: int, message: str) -> None:
    """Make the error answer mitmproxy is about to write for this flow say `message` with `status`."""
    _override.set((status, message))


# Set by the proxy's `error` hook for a flow of its own: the whole error answer (status, message) → bytes,
# in the flow's API family's shape with the headers its answers carry (CORS for an allowed Origin).
ErrorAnswer = Callable[[int, str], bytes]
_shape: contextvars.ContextVar[ErrorAnswer | None] = contextvars.ContextVar("ollama_error_shape", default=None)


def shape(answer: ErrorAnswer) -> None:
    """Make the error answer mitmproxy is about to write for this flow the one `answer` makes."""
    _shape.set(answer)


TRAILERS = "HTTP trailers are not supported"

# mitmproxy's texts that quote the peer's bytes, and what is said instead.
_QUOTING = (
    ("bad http response line", "the upstream sent a malformed HTTP answer (bad status line)"),
    ("invalid header line", "the upstream sent a malformed HTTP answer (bad header line)"),
    ("unexpected server response", "the upstream closed the connection before its answer's headers were complete"),
    ("cannot parse http response", "the upstream sent a malformed HTTP answer"),
)
_BYTES_REPR = re.compile(r"""b(['"]).*""", re.S)


def describe(message: str) -> str:
    """mitmproxy's error text without any byte it quotes from the peer (fixed messages for the known
    ones; the quoted part cut off any other) and without any configured key."""
    lowered = message.lower()
    for needle, fixed in _QUOTING:
        if needle in lowered:
            return fixed
    if TRAILERS.lower() in lowered:
        return "the upstream sent HTTP trailers, which the proxy does not support"
    return secrets.scrub(_BYTES_REPR.sub("(bytes not shown)", message))


# An upstream's address in mitmproxy's and the OS's texts: `('10.0.0.5', 8000)`, `[::1]:8000`,
# `10.0.0.5:8000`, `host.example:8000`, URLs. Clients learn server names only (issue 21 §6).
_ADDRESS = re.compile(
    r"""\(\s*'[^']*'\s*,\s*\d+[^)]*\)|\[[0-9a-f:.%]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"""
    r"""|\b[a-z][a-z0-9+.-]*://\S+|\b[\w.-]+:\d{1,5}\b""",
    re.IGNORECASE,
)


def without_addresses(text: str) -> str:
    return _ADDRESS.sub("(address not shown)", text)


def friendly_message(status: int, message: str) -> str:
    """mitmproxy's terse error text, said so that an Ollama user understands it, without the upstream's
    address (the operator's log line keeps mitmproxy's own text)."""
    if TRAILERS.lower() in message.lower() and status < 500:
        return "the request carried HTTP trailers, which the proxy does not support"
    message = describe(message)
    lowered = message.lower()
    if "connect call failed" in lowered or "connection refused" in lowered:
        return "cannot reach the upstream: connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return "cannot reach the upstream: unknown host"
    if "certificate" in lowered or "tls" in lowered or "ssl" in lowered:
        return "cannot reach the upstream: TLS handshake failed"
    if "server closed connection" in lowered:
        return "the upstream closed the connection without answering"
    if "peer closed connection" in lowered or "incomplete" in lowered:
        return f"the upstream connection broke off before the answer was complete ({without_addresses(message)})"
    if "timed out" in lowered or "timeout" in lowered:
        return f"the upstream did not answer in time ({without_addresses(message)})"
    return without_addresses(message) or f"proxy error {status}"


def json_error_response(status_code: int, message: str = "") -> bytes:
    text = friendly_message(status_code, message)
    if (chosen := _override.get()) is not None:
        status_code, text = chosen
        _override.set(None)
    if (answer := _shape.get()) is not None:
        _shape.set(None)
        try:
            return answer(status_code, text)
        except Exception:  # the plain JSON answer below, rather than none
            logger.warning("cannot shape the error answer", exc_info=True)
    response = http.Response.make(
        status_code,
        json.dumps({"error": text}).encode(),
        http.Headers(Server=version.MITMPROXY, Connection="close", Content_Type="application/json; charset=utf-8"),
    )
    return bytes(http1.assemble_response(response))


class NoTrailersReader(ChunkedReader):
    """h11's chunked body reader, refusing trailers as a protocol error (mitmproxy would crash on them)."""

    def __call__(self, buf: Any) -> Any:
        event = super().__call__(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            raise h11.RemoteProtocolError(TRAILERS)
        return event


def body_reader(expected_size: int | None) -> Any:
    """`_http1.make_body_reader`, with trailers refused."""
    if expected_size is None:
        return NoTrailersReader()
    assert _original_reader is not None
    return _original_reader(expected_size)


def install() -> None:
    global _original, _original_reader
    if _original is None:
        _original = _http1.make_error_response
        _http1.make_error_response = json_error_response
    if _original_reader is None:
        _original_reader = _http1.make_body_reader
        _http1.make_body_reader = body_reader


def uninstall() -> None:
    global _original, _original_reader
    if _original is not None:
        _http1.make_error_response = _original
        _original = None
    if _original_reader is not None:
        _http1.make_body_reader = _original_reader  # type: ignore[assignment]
        _original_reader = None
