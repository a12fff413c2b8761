"""What a user sees of each translated flow: its comment and marker in mitmweb, and one log line."""

from __future__ import annotations

import logging
import time
from typing import Any

from mitmproxy import http

logger = logging.getLogger("ollama_proxy")

FAILED_MARKER = ":red_circle:"


def summary(flow: http.HTTPFlow, meta: dict[str, Any]) -> str:
    """`POST /api/chat llama3.2 → /v1/chat/completions gpt-4o-mini · 200 · 25+14 tokens · 812 ms`."""
    request = flow.request
    asked = f"{meta['method']} {meta['route']} {meta.get('model', '')}".rstrip()
    if "upstream_route" in meta:
        asked += f" → {request.path.split('?', 1)[0]} {meta['upstream_model']}"
    parts = [asked]
    if flow.response is not None:
        parts.append(str(flow.response.status_code))
    usage = meta.get("usage")
    if usage:
        parts.append(f"{usage.get('prompt_tokens', 0)}+{usage.get('completion_tokens', 0)} tokens")
    end = (flow.response.timestamp_end if flow.response is not None else None) or time.time()
    parts.append(f"{(end - request.timestamp_start) * 1000:.0f} ms")
    if meta.get("error"):
        parts.append(f"error: {meta['error']}")
    return " · ".join(parts)


def finish(flow: http.HTTPFlow, meta: dict[str, Any]) -> None:
    """Annotate a finished (or failed) translated flow and log its one line."""
    line = summary(flow, meta)
    flow.comment = line
    failed = bool(meta.get("error")) or flow.error is not None or (flow.response is not None and flow.response.status_code >= 400)
    if failed:
        flow.marked = FAILED_MARKER
        logger.warning(line)
    else:
        logger.info(line)
