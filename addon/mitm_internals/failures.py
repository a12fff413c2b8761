"""mitmproxy's failures, typed: it says what happened only in `flow.error.msg`; here it becomes a `FailureKind`.

The texts (and where mitmproxy makes them) are checked at load (`checks.TOUCHES`); no other module
of the addon reads mitmproxy's failure texts.
"""

from __future__ import annotations

import enum
import re


class FailureKind(enum.Enum):
    """What happened, from mitmproxy's (or the OS's) text; each kind's value: the lower-case texts
    that say it, tried in this order (the first match wins)."""

    CLIENT_GONE = ("client disconnected",)
    KILLED = ("killed",)
    TRAILERS = ("http trailers are not supported",)
    BODY_SIZE_LIMIT = ("body_size_limit",)
    REQUEST_TOO_LARGE = ("request body too large",)
    BAD_STATUS_LINE = ("bad http response line",)
    BAD_HEADER_LINE = ("invalid header line",)
    HEAD_CUT = ("unexpected server response",)  # closed before the answer's head was complete
    MALFORMED = ("cannot parse http response",)
    SERVER_CLOSED = ("server closed connection",)  # closed without answering
    REFUSED = ("connect call failed", "connection refused")
    UNKNOWN_HOST = ("name or service not known", "nodename nor servname", "getaddrinfo")
    TLS = ("certificate", "ssl", "tls")
    BROKE_OFF = ("peer closed", "incomplete")
    RESET = ("reset",)
    TIMEOUT = ("timed out", "timeout")
    OTHER = ()


TRAILERS = "HTTP trailers are not supported"
# mitmproxy's texts (and where they are made), checked at load by `verify`
MITMPROXY_TEXTS: tuple[tuple[str, str], ...] = (
    ("_http1", "Client disconnected."),
    ("HttpStream.check_killed", '"killed", ErrorCode.KILL'),
    ("_http1.Http1Client", "server closed connection"),
    ("_http1.Http1Client", "unexpected server response: "),
    ("_http1.Http1Client", "Cannot parse HTTP response: "),
    ("http1.read", "Bad HTTP response line: "),
    ("http1.read", "Invalid header line: "),
    ("HttpStream", "body exceeds mitmproxy's body_size_limit"),
)
_QUOTED = re.compile(r"""\bb['"]""")


def failure_kind(message: str | None) -> FailureKind:
    """What a failure text says happened. Only the text before any bytes it quotes from the peer is
    read: an upstream cannot choose the kind."""
    lowered = _QUOTED.split(message or "", maxsplit=1)[0].lower()
    for kind in FailureKind:
        if any(needle in lowered for needle in kind.value):
            return kind
    return FailureKind.OTHER
