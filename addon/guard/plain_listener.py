"""A plain HTTP listener speaks plain HTTP only, as Ollama's does.

mitmproxy answers a TLS ClientHello on a `reverse:http://` listener and speaks TLS there (its
next-layer addon puts a TLS layer under the HTTP one whenever the first bytes look like a TLS
record). Ollama's server speaks plain HTTP only: Go's HTTP server reads a ClientHello as a
malformed request and answers `400 Bad Request` in plain text before closing. The proxy does the
same: on a reverse listener whose scheme is `http`, a connection that starts with a TLS record
gets `HTTP/1.1 400 Bad Request` (plain text, naming the reason) and is closed; nothing of it is
read or buffered. `reverse:https://` listeners (TLS on purpose) are unchanged; there the early
answers are written inside TLS (`addon.guard.early`).

The mitmproxy internals used (the `next_layer` hook's `NextLayer.layer` set to a layer of the
proxy's own, mitmproxy's own test of a TLS record) are in the fence (`addon.mitm_internals`),
checked at load: the proxy does not start without them.
"""

from __future__ import annotations

import logging
from typing import Any

from addon import mitm_internals as fence

logger = logging.getLogger("ollama_proxy")

REASON = "the proxy speaks plain HTTP on this port: a TLS handshake is not an HTTP request"
REFUSAL = (
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    f"Content-Length: {len(REASON) + 1}\r\n\r\n{REASON}\n"
).encode()


def refuse_tls(nextlayer: Any) -> None:
    """On a plain reverse listener, a connection that starts with a TLS record: refused."""
    if fence.plain_reverse_tls(nextlayer):
        peer = fence.format_address(nextlayer.context.client.peername)
        logger.info("%s: a TLS handshake on a plain HTTP listener: refused", peer)
        fence.answer_and_close_raw(nextlayer, REFUSAL)
