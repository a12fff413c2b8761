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
never comes. `install` also has the fence refuse trailers as a protocol error: the client gets a
502 at once (400 for a client's request).

Both swaps are made by `addon.mitm_internals` (the fence), which checks them at load; mitmproxy's
failure texts are read there too (`failure_kind`), never here.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Callable

from mitmproxy import http, version

from addon import mitm_internals as fence
from addon.guard import secrets
from addon.mitm_internals import TRAILERS, FailureKind

logger = logging.getLogger("ollama_proxy")

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


# What is said instead of mitmproxy's texts that quote the peer's bytes.
_FIXED = {
    FailureKind.BAD_STATUS_LINE: "the upstream sent a malformed HTTP answer (bad status line)",
    FailureKind.BAD_HEADER_LINE: "the upstream sent a malformed HTTP answer (bad header line)",
    FailureKind.HEAD_CUT: "the upstream closed the connection before its answer's headers were complete",
    FailureKind.MALFORMED: "the upstream sent a malformed HTTP answer",
    FailureKind.TRAILERS: "the upstream sent HTTP trailers, which the proxy does not support",
}
_BYTES_REPR = re.compile(r"""b(['"]).*""", re.S)


def describe(message: str) -> str:
    """mitmproxy's error text without any byte it quotes from the peer (fixed messages for the known
    ones; the quoted part cut off any other) and without any configured key."""
    fixed = _FIXED.get(fence.failure_kind(message))
    return fixed if fixed is not None else secrets.scrub(_BYTES_REPR.sub("(bytes not shown)", message))


_FRIENDLY = {  # (clients learn no address: `{}` is mitmproxy's text without any)
    FailureKind.REFUSED: "cannot reach the upstream: connection refused",
    FailureKind.UNKNOWN_HOST: "cannot reach the upstream: unknown host",
    FailureKind.TLS: "cannot reach the upstream: TLS handshake failed",
    FailureKind.SERVER_CLOSED: "the upstream closed the connection without answering",
    FailureKind.BROKE_OFF: "the upstream connection broke off before the answer was complete ({})",
    FailureKind.TIMEOUT: "the upstream did not answer in time ({})",
}


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
    kind = fence.failure_kind(message)
    if kind is FailureKind.TRAILERS and status < 500:
        return "the request carried HTTP trailers, which the proxy does not support"
    message = without_addresses(describe(message))
    if (template := _FRIENDLY.get(kind)) is not None:
        return template.format(message)
    return message or f"proxy error {status}"


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
    return bytes(fence.assemble_response(response))


__all__ = ["TRAILERS", "describe", "friendly_message", "install", "json_error_response", "override", "shape"]


def install() -> None:
    fence.install_error_page(json_error_response)
    fence.install_trailer_refusal()
