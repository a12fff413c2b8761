"""The route table: which endpoint serves which path and methods.

One module per API family (`ollama*`: the Ollama API, `ollama_cloud` its cloud routes; `openai`: its
OpenAI-compatible routes, `openai_responses`: the Responses API, `anthropic`: the Anthropic Messages API),
each endpoint an object following `addon.endpoints.base.Endpoint`. Adding an endpoint is one
class and one row here (docs/architecture.md walks through it).
"""

from __future__ import annotations

from typing import NamedTuple

from addon.endpoints import (
    anthropic,
    ollama,
    ollama_cloud,
    ollama_discovery,
    ollama_embed,
    openai,
    openai_responses,
)
from addon.endpoints.base import Endpoint, OllamaEndpoint
from addon.reply import Answer


class Route(NamedTuple):
    """One row: the methods a path takes, and the endpoint that serves them."""

    methods: frozenset[str]
    endpoint: Endpoint


def _route(methods: str, endpoint: Endpoint) -> Route:
    return Route(frozenset(methods.split()), endpoint)


ROUTES: dict[str, Route] = {
    "/": _route("GET HEAD", ollama.Root()),
    "/api/version": _route("GET HEAD", ollama.Version()),
    "/api/status": _route("GET", ollama_cloud.Status()),
    "/api/chat": _route("POST", ollama.Chat()),
    "/api/generate": _route("POST", ollama.Generate()),
    "/api/embed": _route("POST", ollama_embed.Embed()),
    "/api/embeddings": _route("POST", ollama_embed.Embeddings()),
    "/api/tags": _route("GET HEAD", ollama_discovery.Tags()),
    "/api/show": _route("POST", ollama_discovery.Show()),
    "/api/ps": _route("GET HEAD", ollama_discovery.Ps()),
    "/api/pull": _route("POST", ollama_discovery.Pull()),
    "/api/push": _route("POST", ollama_discovery.Unmanaged("pushing models")),
    "/api/create": _route("POST", ollama_discovery.Unmanaged("creating models")),
    "/api/copy": _route("POST", ollama_discovery.Unmanaged("copying models")),
    "/api/delete": _route("DELETE", ollama_discovery.Unmanaged("deleting models")),
    "/api/experimental/web_search": _route("POST", ollama_cloud.WebTool("web search is unavailable")),
    "/api/experimental/web_fetch": _route("POST", ollama_cloud.WebTool("web fetch is unavailable")),
    "/v1/chat/completions": _route("POST", openai.Forwarded("chat/completions")),
    "/v1/completions": _route("POST", openai.Forwarded("completions")),
    "/v1/embeddings": _route("POST", openai.Forwarded("embeddings")),
    "/v1/audio/transcriptions": _route("POST", openai.Transcriptions()),
    "/v1/responses": _route("POST", openai_responses.Responses()),
    "/v1/messages": _route("POST", anthropic.Messages()),
    "/v1/messages/count_tokens": _route("POST", anthropic.CountTokens()),
    "/v1/models": _route("GET HEAD", openai.Models()),
}
# Paths with a variable last part, by prefix.
PREFIX_ROUTES: dict[str, Route] = {
    "/api/blobs/": _route("HEAD POST", ollama_discovery.Unmanaged("uploading model blobs")),
    "/v1/models/": _route("GET HEAD", openai.Model()),
}
# The family that answers paths no route serves (404, 405) and requests refused before routing.
FALLBACK: Endpoint = OllamaEndpoint()


def find(path: str) -> Route | None:
    """The route of a path (without its query), or None."""
    if (route := ROUTES.get(path)) is not None:
        return route
    for prefix, route in PREFIX_ROUTES.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            return route
    return None


NOT_FOUND = Answer(404, b"404 page not found", "text/plain")  # Ollama's (gin's) answer to a path it has no route for


def unknown_path(route: str) -> Answer | None:
    """Ollama's 404 for a path no route serves (None: a route serves it). The proxy answers it before the
    client key check: such a probe (Claude Code's keyless `HEAD /api/hello` at every start) learns nothing
    the route table does not say, reaches nothing, and gets what Ollama answers."""
    return NOT_FOUND if find(route) is None else None
