"""The models the proxy offers: the catalog's, plus the upstream's `GET /models` list, cached.

The upstream list is fetched asynchronously (the event loop keeps serving other flows), at most
once per `models_ttl` seconds; concurrent requests share one fetch. When the fetch fails the last
good list is kept; with none, only the catalog is known and the failure is retried after
`FAILED_RETRY` seconds at the latest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx2

from addon.catalog.catalog import LATEST, Catalog, ModelInfo, full_name, infer

logger = logging.getLogger("ollama_proxy")
logging.getLogger("httpx2").setLevel(logging.WARNING)  # its per-request INFO lines would be noise in mitmdump's output

FETCH_TIMEOUT = 10.0  # seconds for the whole GET /models
FAILED_RETRY = 10.0  # seconds before a failed fetch is tried again (or models_ttl, if shorter)


@dataclass(frozen=True, slots=True)
class Listing:
    """All models the clients can see, and why the upstream's list is missing, if it is."""

    models: list[ModelInfo]
    error: str | None  # None: the upstream list is known (fresh or kept from the last good fetch)


class ModelDirectory:
    def __init__(
        self, models_url: str, authorization: str | None, ttl: float, catalog: Catalog, list_upstream: bool
    ) -> None:
        self.models_url = models_url
        self.authorization = authorization
        self.ttl = max(ttl, 0.0)
        self.catalog = catalog
        self.list_upstream = list_upstream
        self.loaded_at = time.time()
        self._entries: dict[str, dict[str, Any]] | None = None  # upstream id → its /models entry
        self._by_full_name: dict[str, str] = {}
        self._fresh_until = 0.0
        self._error: str | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._client: httpx2.AsyncClient | None = None

    # -- names (synchronous: only what is already known) --------------------------------------

    def upstream_id(self, name: str) -> str:
        """The upstream model id for a client's model name, on every route."""
        if (entry := self.catalog.get(name)) is not None:
            return entry.upstream
        if self._entries is not None:
            if name in self._entries:
                return name
            if (known := self._by_full_name.get(full_name(name))) is not None:
                return known
        return name[: -len(LATEST)] if name.endswith(LATEST) else name

    def info(self, name: str) -> ModelInfo:
        """What is known of a model now, without fetching: its catalog entry, else the defaults
        inferred from its upstream id (and from its entry in the cached upstream list, if any)."""
        if (entry := self.catalog.get(name)) is not None:
            return entry
        upstream = self.upstream_id(name)
        return infer(upstream, self._entries.get(upstream) if self._entries is not None else None)

    def think_style(self, name: str, default: str) -> str:
        entry = self.catalog.get(name)
        return entry.think_style if entry is not None and entry.think_style else default

    # -- lookups (asynchronous: may fetch the upstream list) ------------------------------------

    async def listing(self) -> Listing:
        models = list(self.catalog.models.values())
        if not self.list_upstream:
            return Listing(models, None)
        await self.refresh()
        if self._entries is not None:
            listed = {m.name for m in models}
            upstream = [infer(i, e) for i, e in self._entries.items()]
            upstream.sort(key=lambda m: (-(m.created or 0), m.name))
            models += [m for m in upstream if m.name not in listed]
        return Listing(models, self._error if self._entries is None else None)

    async def find(self, name: str) -> tuple[ModelInfo | None, str | None]:
        """(the model, None) if it exists; (None, None) if it does not; (defaults, error) if the upstream list is unknown."""
        if (entry := self.catalog.get(name)) is not None:
            return entry, None
        await self.refresh()
        if self._entries is None:
            return infer(self.upstream_id(name)), self._error or "the upstream model list is unavailable"
        upstream = self.upstream_id(name)
        if upstream in self._entries:
            return infer(upstream, self._entries[upstream]), None
        return None, None

    # -- the upstream list ----------------------------------------------------------------------

    async def refresh(self) -> None:
        if time.monotonic() < self._fresh_until:
            return
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(self._fetch)

    async def _load(self) -> None:
        try:
            entries = await self._get()
        except Exception as e:  # noqa: BLE001 - any failure leaves the proxy serving: catalog only, or the last good list
            self._error = f"cannot list the upstream's models: {e}"
            retry = min(FAILED_RETRY, self.ttl)
            self._fresh_until = time.monotonic() + retry
            logger.warning("%s%s", self._error, " (keeping the last list)" if self._entries is not None else "")
            return
        self._entries = entries
        self._by_full_name = {}
        for model_id in entries:
            self._by_full_name.setdefault(full_name(model_id), model_id)
        self._error = None
        self._fresh_until = time.monotonic() + self.ttl

    async def _get(self) -> dict[str, dict[str, Any]]:
        headers = {"accept": "application/json"}
        if self.authorization:
            headers["authorization"] = self.authorization
        if self._client is None:  # building its TLS context takes a while: not on the event loop
            self._client = await asyncio.to_thread(httpx2.AsyncClient, timeout=FETCH_TIMEOUT, trust_env=False)
        response = await self._client.get(self.models_url, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"GET {self.models_url} answered {response.status_code} {response.text[:200]!r}")
        body = response.json()
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise RuntimeError(f"GET {self.models_url} did not answer an OpenAI model list")
        entries: dict[str, dict[str, Any]] = {}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                entries[item["id"]] = item
        return entries
