"""A plain HTTP listener speaks plain HTTP only, as Ollama's does.

mitmproxy answers a TLS ClientHello on a `reverse:http://` listener and speaks TLS there (its
next-layer addon puts a TLS layer under the HTTP one whenever the first bytes look like a TLS
record). Ollama's server speaks plain HTTP only: Go's HTTP server reads a ClientHello as a
malformed request and answers `400 Bad Request` in plain text before closing. The proxy does the
same: on a reverse listener whose scheme is `http`, a connection that starts with a TLS record
gets `HTTP/1.1 400 Bad Request` (plain text, naming the reason) and is closed; nothing of it is
read or buffered. `reverse:https://` listeners (TLS on purpose) are unchanged; there the early
answers are written inside TLS (`addon.guard.early`).

The mitmproxy internals used (to move into the fence of issue 21 §10): a layer of the proxy's own
(`mitmproxy.proxy.layer.Layer` with `commands.SendData` and `commands.CloseConnection`) set as
`NextLayer.layer` from the `next_layer` hook, which runs after mitmproxy's own next-layer addon.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.utils import human

logger = logging.getLogger("ollama_proxy")

REASON = "the proxy speaks plain HTTP on this port: a TLS handshake is not an HTTP request"
REFUSAL = (
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    f"Content-Length: {len(REASON) + 1}\r\n\r\n{REASON}\n"
).encode()


class RefusedTLS(layer.Layer):
    """Answers the plain-text 400 and closes the client connection; reads nothing more."""

    def _handle_event(self, event: events.Event) -> Generator[commands.Command, Any, None]:
        if isinstance(event, events.Start):
            yield commands.SendData(self.context.client, REFUSAL)
            yield commands.CloseConnection(self.context.client)


def refuse_tls(nextlayer: layer.NextLayer) -> None:
    """On a plain reverse listener, a connection that starts with a TLS record: refused."""
    context = nextlayer.context
    mode = context.client.proxy_mode
    if not isinstance(mode, ReverseMode) or mode.scheme != "http" or len(context.layers) != 1:
        return  # (len 1: the first decision of the connection, right under the reverse-proxy layer)
    if context.client.transport_protocol == "tcp" and starts_like_tls_record(nextlayer.data_client()):
        logger.info(
            "%s: a TLS handshake on a plain HTTP listener: refused", human.format_address(context.client.peername)
        )
        nextlayer.layer = RefusedTLS(context)
