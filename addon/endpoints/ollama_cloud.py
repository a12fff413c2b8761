"""Ollama's cloud routes: `GET /api/status` (Ollama ≥ 0.12) and `POST /api/experimental/web_search`, `web_fetch`.

Ollama answers these from its cloud settings (server/routes.go: StatusHandler, webExperimentalProxyHandler):
`/api/status` says whether Ollama's cloud is disabled (`{"cloud": {"disabled", "source"}}`, the source
one of none, env, config, both); the web routes relay to ollama.com, or answer 403 `ollama cloud is
disabled: web search is unavailable` when it is disabled. This proxy sends nothing to ollama.com: its
cloud is disabled by its configuration, and the web routes say so, in Ollama's words and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from addon.endpoints.base import OllamaEndpoint
from addon.exchange import Exchange
from addon.reply import Reply, json_answer

if TYPE_CHECKING:
    from addon.settings import Settings

DISABLED = "ollama cloud is disabled"  # Ollama's prefix of every such refusal (internal/cloud)
WHY = "this server is an Ollama-OpenAI proxy: it serves its upstream's models and sends nothing to ollama.com"


class Status(OllamaEndpoint):
    """`GET /api/status`: Ollama's cloud is disabled here, by the server's configuration."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        return json_answer(200, {"cloud": {"disabled": True, "source": "config"}})


class WebTool(OllamaEndpoint):
    """`POST /api/experimental/web_search`, `web_fetch`: 403, as Ollama with its cloud disabled."""

    def __init__(self, operation: str) -> None:
        self.operation = operation  # e.g. "web search is unavailable"

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        if not (request.raw_content or b"").strip():
            return self.error(400, "missing request body")
        return self.error(403, f"{DISABLED}: {self.operation} ({WHY})")
