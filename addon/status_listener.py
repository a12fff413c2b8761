"""The listener of `metrics_listen`: `GET /metrics` (Prometheus' exposition) and `GET /ready` (readiness).

A listener of its own, never the Ollama port: no client key, no flow in mitmweb, nothing of the
addon's request path. It runs on mitmproxy's event loop, so the counters are read where they are
written, and a proxy whose loop is stuck fails its readiness check as it should. HTTP is parsed
by h11 (mitmproxy's own dependency); one request per connection, its head at most
`MAX_HEAD` bytes and `READ_TIMEOUT` seconds, then the connection is closed.

- `GET /metrics`: the registry of `addon.metrics`, in the format the scraper asks for
  (prometheus_client's `choose_encoder`: the text format, or OpenMetrics).
- `GET /ready`: 200 `{"ready": true, "servers": {...}}` when the proxy can serve (configured,
  running, and at least one upstream server takes requests), else 503 with the same body. A load
  balancer checks it (docs/deploy.md); `HEAD` answers the same status without a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import h11
from mitmproxy.exceptions import OptionsError
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger("ollama_proxy")

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def parse_listen(spec: str) -> tuple[str, int] | None:
    """`host:port` (`[::1]:port` for IPv6) → (host, port); "" → None (off)."""
    spec = spec.strip()
    if not spec:
        return None
    host, sep, port = spec.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionsError(f"metrics_listen must be host:port, such as 127.0.0.1:9464, got {spec!r}")
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound now so that a taken port stops the proxy with a clear message."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise OptionsError(f"metrics_listen: cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise OptionsError(f"metrics_listen: cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class StatusListener:
    """Serves /metrics and /ready on a bound socket until closed."""

    def __init__(self, registry: CollectorRegistry, readiness: Readiness) -> None:
        self.registry = registry
        self.readiness = readiness
        self.sock: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.address = ""

    def bind(self, host: str, port: int) -> None:
        self.sock = bind(host, port)
        self.address = f"{host}:{port}"

    async def start(self) -> None:
        if self.sock is None or self.server is not None:
            return
        self.server = await asyncio.start_server(self.serve, sock=self.sock)
        logger.info("metrics on http://%s/metrics, readiness on /ready", self.address)

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        elif self.sock is not None:
            self.sock.close()
        self.sock = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                event = connection.next_event()
                while event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(4096))
                    event = connection.next_event()
            if isinstance(event, h11.Request):
                status, content_type, body = self.answer(event)
                headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close")]
                out = connection.send(h11.Response(status_code=status, headers=headers)) or b""
                if event.method != b"HEAD":
                    out += connection.send(h11.Data(data=body)) or b""
                out += connection.send(h11.EndOfMessage()) or b""
                writer.write(out)
                async with asyncio.timeout(READ_TIMEOUT):
                    await writer.drain()
        except h11.RemoteProtocolError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            logger.warning("metrics listener: cannot answer", exc_info=True)
        finally:
            writer.close()

    def answer(self, request: h11.Request) -> tuple[int, str, bytes]:
        path = request.target.split(b"?", 1)[0]
        if path not in (b"/metrics", b"/ready"):
            return 404, "text/plain; charset=utf-8", b"not found: GET /metrics or /ready\n"
        if request.method not in (b"GET", b"HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == b"/ready":
            ready, detail = self.readiness()
            body = json.dumps({"ready": ready, **detail}).encode() + b"\n"
            return (200 if ready else 503), "application/json", body
        accept = next((v.decode("latin-1") for k, v in request.headers if k == b"accept"), "")
        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(self.registry)
