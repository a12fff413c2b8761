"""mitmproxy content views for LLM streams, one module per view, as mitmproxy writes its own.

- `ollama_ndjson`: Ollama NDJSON streams (/api/chat, /api/generate), with the raw upstream SSE
  the flow keeps;
- `openai_sse`: OpenAI chat-completion SSE streams;
- `anthropic_sse`: Anthropic Messages streams (/v1/messages, Claude Code);
- `responses_sse`: OpenAI Responses streams (/v1/responses, Codex CLI);
- `summary`: the stream summary they all fill and the text they render.

They show in mitmweb, the `mitmproxy` console and `mitmdump --set flow_detail=3`, picked
automatically by content type, or by name. `register()` adds them (the proxy addon does it in
`load`, also for saved flows: `mitmweb -n -r saved.flow -s addon/proxy.py`); as with
mitmproxy's own script-added views there is no removal: a reloaded script replaces them by name.

`flow_list_columns(options)` puts the flow comment in mitmweb's flow list (the `web_columns`
option, which only mitmweb has): a translated flow's URL is the upstream's, so every route reads
`…/v1/chat/completions` there, and the comment is what names the client's route, its model, the
server and the upstream model (`POST /v1/messages claude-sonnet-5-5 → vllm /v1/chat/completions …`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mitmproxy import contentviews
from mitmproxy.options import Options

from addon.views.anthropic_sse import AnthropicSSEView, anthropic_sse_view, summarize_anthropic
from addon.views.ollama_ndjson import OllamaNDJSONView, ollama_ndjson_view, summarize_ndjson
from addon.views.openai_sse import UPSTREAM_SSE_METADATA_KEY, OpenAISSEView, openai_sse_view, summarize_sse
from addon.views.responses_sse import ResponsesSSEView, responses_sse_view, summarize_responses
from addon.views.summary import Choice, StreamSummary, ToolCall, render_summary

__all__ = [
    "UPSTREAM_SSE_METADATA_KEY",
    "VIEWS",
    "AnthropicSSEView",
    "Choice",
    "OllamaNDJSONView",
    "OpenAISSEView",
    "ResponsesSSEView",
    "StreamSummary",
    "ToolCall",
    "anthropic_sse_view",
    "flow_list_columns",
    "ollama_ndjson_view",
    "openai_sse_view",
    "register",
    "render_summary",
    "responses_sse_view",
    "summarize_anthropic",
    "summarize_ndjson",
    "summarize_responses",
    "summarize_sse",
]

VIEWS: tuple[contentviews.Contentview, ...] = (
    ollama_ndjson_view,
    openai_sse_view,
    anthropic_sse_view,
    responses_sse_view,
)


def register(registry: Any = None) -> None:
    """Add the views to mitmproxy's content-view registry (replacing any of the same name). Idempotent."""
    reg = contentviews.registry if registry is None else registry
    for view in VIEWS:
        if reg.get(view.name) is not view:
            reg.register(view)


# mitmweb 12.3.1's default flow list, and the addon's: the comment right after the method, before
# the upstream URL (mitmweb gives the comment column 150 px; drag its edge, or double-click it to
# fit the text, and the browser keeps that width).
MITMWEB_COLUMNS: tuple[str, ...] = ("tls", "icon", "path", "method", "status", "size", "time")
COLUMNS: tuple[str, ...] = ("tls", "icon", "method", "comment", "path", "status", "size", "time")


def flow_list_columns(options: Options) -> None:
    """In mitmweb, show the flow comment in the flow list, unless the user chose the columns (`web_columns`)."""
    if "web_columns" not in options:
        return  # mitmdump, the console: no flow list of mitmweb's
    columns: Sequence[str] = options.web_columns
    if tuple(columns) == MITMWEB_COLUMNS:
        options.web_columns = list(COLUMNS)
