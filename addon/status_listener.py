"""The listener of `metrics_listen`: `GET /metrics` (Prometheus' exposition) and `GET /ready` (readiness).

A listener of its own, never the Ollama port: no client key, no flow in mitmweb, nothing of the
addon's request path. It runs on mitmproxy's event loop, so the counters are read where they are
written, and a proxy whose loop is stuck fails its readiness check as it should. It reads one
request head per connection (at most `MAX_HEAD` bytes within `READ_TIMEOUT` seconds; its
headers parsed by the standard library's `http.client.parse_headers`), answers, and closes the
connection; a body is never read (GET and HEAD have none).

- `GET /metrics`: the registry of `addon.metrics`, in the format the scraper asks for
  (prometheus_client's `choose_encoder`: the text format, or OpenMetrics).
- `GET /ready`: 200 `{"ready": true, "servers": {...}}` when the proxy can serve (configured,
  running, and at least one upstream server takes requests), else 503 with the same body. A load
  balancer checks it (docs/deploy.md); `HEAD` answers the same status without a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import logging
import re
import socket
from collections.abc import Callable
from typing import Any

from mitmproxy.exceptions import OptionsError
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger("ollama_proxy")

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
Readiness = Callable[[], tuple[bool, dict[str, Any]]]
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (/[\x21-\x7e]*) HTTP/1\.[01]")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class BadRequest(Exception):
    """Not an HTTP/1 request head this listener answers."""


def parse_head(head: bytes) -> tuple[str, str, str]:
    """A request head (up to its blank line) → (method, path without the query, its Accept header)."""
    line, _, rest = head.partition(b"\r\n")
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise BadRequest
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:
        raise BadRequest from None
    return match[1].decode(), match[2].split(b"?", 1)[0].decode(), headers.get("accept", "")


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
        self.started = False
        self.address = ""

    def bind(self, host: str, port: int) -> None:
        self.sock = bind(host, port)
        self.address = f"{host}:{port}"

    async def start(self) -> None:
        """Serve the bound socket (once: `running` and a reconfiguration's task may both ask)."""
        if self.sock is None or self.started:
            return
        self.started = True
        self.server = await asyncio.start_server(self.serve, sock=self.sock, limit=MAX_HEAD)
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
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                method, path, accept = parse_head(head)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, BadRequest):
                status, content_type, body, method = 400, "text/plain; charset=utf-8", b"bad request\n", "GET"
            else:
                status, content_type, body = self.answer(method, path, accept)
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {content_type}\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
                ).encode()
                + (body if method != "HEAD" else b"")
            )
            async with asyncio.timeout(READ_TIMEOUT):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            logger.warning("metrics listener: cannot answer", exc_info=True)
        finally:
            writer.close()

    def answer(self, method: str, path: str, accept: str) -> tuple[int, str, bytes]:
        if path not in ("/metrics", "/ready"):
            return 404, "text/plain; charset=utf-8", b"not found: GET /metrics or /ready\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == "/ready":
            ready, detail = self.readiness()
            body = json.dumps({"ready": ready, **detail}).encode() + b"\n"
            return (200 if ready else 503), "application/json", body
        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(self.registry)
