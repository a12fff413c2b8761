"""Client connections that hold a descriptor without making a request.

- `raise_descriptor_limit`: at start, the soft limit of open descriptors (RLIMIT_NOFILE) is raised
  to the hard one, as every Go program does at start since Go 1.19 (and so Ollama). The soft
  limit of 1,024 common on desktops would otherwise let 1,100 half-sent requests from one local
  process block every other client (each connection is a descriptor; at the limit, mitmproxy
  cannot accept any).
- `HeadTimeout` (option `client_header_timeout`, seconds, default 60 as nginx's
  client_header_timeout): a client connection must finish a request head within that time
  after it opens, and after the answer to its previous request (an idle kept-alive connection
  waits for its next head: Go's `ReadHeaderTimeout`, which it uses as the idle timeout when none
  is set). Otherwise the connection is closed without an answer, as Go's server (Ollama's) and
  nginx close it. A connection with a request in flight, a CONNECT tunnel or a WebSocket is
  never timed. One sweeper task checks the idle connections once a second, alive only while
  there are some; the per-request cost is two dictionary updates.
- A TLS handshake on a plain `reverse:http://` listener is refused (`addon.guard.plain_listener`).

`ClientConnections` is the addon of all three (in the script's `addons`, after `OllamaProxy`,
which declares `client_header_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time

from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader

from addon import mitm_internals as fence
from addon.guard import plain_listener

logger = logging.getLogger("ollama_proxy")

DEFAULT_HEAD_TIMEOUT = 60
SWEEP_SECONDS = 1.0


def raise_descriptor_limit() -> tuple[int, int]:
    """The soft RLIMIT_NOFILE raised to the hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft > hard):
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


class ClientConnections:
    """The addon: the descriptor limit at load, TLS refused on a plain listener, and client_header_timeout
    (closes client connections that do not send a complete request head within `seconds`)."""

    def __init__(self) -> None:
        self.seconds = float(DEFAULT_HEAD_TIMEOUT)
        self.idle: dict[str, tuple[connection.Client, float]] = {}  # waiting for a head, since (monotonic)
        self.busy: dict[str, int] = {}  # requests in flight per connection
        self.untimed: set[str] = set()  # tunnels and WebSockets
        self.sweeper: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        raise_descriptor_limit()  # before mitmproxy listens

    def configure(self, updated: set[str]) -> None:
        if "client_header_timeout" in updated and "client_header_timeout" in ctx.options:
            self.seconds = float(max(int(ctx.options.client_header_timeout), 0))

    def next_layer(self, nextlayer: fence.NextLayer) -> None:
        plain_listener.refuse_tls(nextlayer)  # a TLS handshake on a reverse:http:// listener: 400, closed

    def client_connected(self, client: connection.Client) -> None:
        self.wait(client)

    def client_disconnected(self, client: connection.Client) -> None:
        self.idle.pop(client.id, None)
        self.busy.pop(client.id, None)
        self.untimed.discard(client.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """The head is complete: no timeout until the answer."""
        client = flow.client_conn
        self.idle.pop(client.id, None)
        self.busy[client.id] = self.busy.get(client.id, 0) + 1

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT tunnel or a WebSocket: the connection carries no more request heads."""
        self.idle.pop(flow.client_conn.id, None)
        self.untimed.add(flow.client_conn.id)

    def response(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        if flow.websocket is not None:
            self.http_connect(flow)
            return
        left = self.busy.get(client.id, 0) - 1
        if left > 0:
            self.busy[client.id] = left
            return
        self.busy.pop(client.id, None)
        if client.connected and client.id not in self.untimed:
            self.wait(client)

    def wait(self, client: connection.Client) -> None:
        if not self.seconds:
            return
        self.idle[client.id] = (client, time.monotonic())
        if self.sweeper is None or self.sweeper.done():
            with contextlib.suppress(RuntimeError):  # (outside an event loop: unit tests)
                self.sweeper = asyncio.get_running_loop().create_task(self.sweep(), name="client_header_timeout")

    async def sweep(self) -> None:
        while self.idle:
            await asyncio.sleep(SWEEP_SECONDS)
            if not self.seconds:
                self.idle.clear()
                return
            expired = time.monotonic() - self.seconds
            for key, (client, since) in list(self.idle.items()):
                if since < expired:
                    del self.idle[key]
                    self.close(client)

    def close(self, client: connection.Client) -> None:
        writer = fence.writer_of(client)
        if writer is not None:
            writer.close()
            if hasattr(writer.transport, "abort"):
                asyncio.get_running_loop().call_later(1.0, writer.transport.abort)

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)

    def done(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        self.idle.clear()
