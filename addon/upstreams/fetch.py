"""Fetching a server's model list: `GET {base}/models` over HTTP (`HttpFetcher`), trusting what
mitmproxy's own upstream TLS options trust (`Trust`); `ListUnavailable` for a server that answers
without a usable list."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from addon.upstreams.servers import Server

logger = logging.getLogger("ollama_proxy")

FETCH_TIMEOUT = 10.0  # seconds for one server's whole GET /models

Entries = Mapping[str, Mapping[str, Any]]  # upstream id → its /models entry


class ListUnavailable(Exception):
    """The server answered, but not with a model list (4xx, not JSON, another shape): it is up."""


@dataclass(frozen=True, slots=True)
class Trust:
    """Which upstream certificates the model-list fetcher trusts: mitmproxy's own options
    (`ssl_insecure`, `ssl_verify_upstream_trusted_ca`, `ssl_verify_upstream_trusted_confdir`), so
    that a list fetch and a request to the same server agree on its certificate (a server whose
    list fetch fails its TLS handshake is marked down)."""

    insecure: bool = False
    ca_file: str = ""
    ca_dir: str = ""

    @classmethod
    def from_options(cls, options: Any) -> Trust:
        def value(name: str) -> Any:
            return getattr(options, name, None) if name in options else None

        return cls(
            bool(value("ssl_insecure")),
            str(value("ssl_verify_upstream_trusted_ca") or ""),
            str(value("ssl_verify_upstream_trusted_confdir") or ""),
        )

    def verify(self) -> ssl.SSLContext | bool:
        """httpx2's `verify`: False, a context with the given CAs, or True (its default bundle, certifi's, as mitmproxy's)."""
        if self.insecure:
            return False
        if self.ca_file or self.ca_dir:
            context = ssl.create_default_context(cafile=self.ca_file or None, capath=self.ca_dir or None)
            # As mitmproxy verifies: without Python 3.13's strict X.509 checks (which refuse, e.g., a
            # private CA's certificate without an Authority Key Identifier that mitmproxy accepts).
            context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
            return context
        return True


class HttpFetcher:
    """`GET {base}/models` with the server's own key, by httpx2 (one client for all servers)."""

    def __init__(self, timeout: float = FETCH_TIMEOUT, trust: Trust | None = None) -> None:
        self.timeout = timeout
        self.trust = trust or Trust()
        self._client: Any = None
        self._making: asyncio.Task[Any] | None = None

    async def prepare(self) -> None:
        """Make the client once (its TLS context takes a while: in a thread, outside any server's timeout)."""
        if self._client is not None:
            return
        import httpx2

        logging.getLogger("httpx2").setLevel(logging.WARNING)  # its per-request INFO lines would be noise
        if self._making is None:
            self._making = asyncio.get_running_loop().create_task(asyncio.to_thread(self._make, httpx2))
        self._client = await asyncio.shield(self._making)

    def _make(self, httpx2: Any) -> Any:
        return httpx2.AsyncClient(timeout=self.timeout, trust_env=False, verify=self.trust.verify())

    async def __call__(self, server: Server) -> dict[str, dict[str, Any]]:
        import httpx2

        await self.prepare()
        url = server.url("models")
        headers = {"accept": "application/json"}
        if server.authorization:  # this server's key, never another's
            headers["authorization"] = server.authorization
        try:
            response = await self._client.get(url, headers=headers)
        except httpx2.ConnectError as e:
            raise ConnectionError(f"cannot connect to {server.base_url} ({e})") from None
        except httpx2.TimeoutException:
            raise TimeoutError(f"no answer from {server.base_url} to GET /models") from None
        if response.status_code >= 500:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        if response.status_code >= 400:
            raise ListUnavailable(f"GET {url} answered {response.status_code} {response.text[:200]!r}")
        try:
            body = response.json()
        except ValueError:
            raise ListUnavailable(f"GET {url} did not answer JSON") from None
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ListUnavailable(f"GET {url} did not answer an OpenAI model list")
        return {
            item["id"]: item
            for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
        }

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = self._making = None
