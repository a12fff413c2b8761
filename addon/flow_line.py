"""A finished flow's one line: its comment, its failed marker and its log line (`summary`, `finish`).

A flow that went well is logged on `exchange.flow_log` (at info level only at `flow_detail` ≥ 1);
a failed one as a warning, and marked in mitmweb's list.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from addon.exchange import FAILED_MARKER, MAX_ERROR, Exchange, flow_log
from addon.guard.output import clip, escape

logger = logging.getLogger("ollama_proxy")


def summary(flow: http.HTTPFlow, exchange: Exchange) -> str:
    """`POST /api/chat llama3.2 → /v1/chat/completions gpt-4o-mini · 200 · 25+14 tokens · 812 ms`;
    with several servers, the server's name after the arrow (`→ vllm /v1/chat/completions ...`);
    with a named client key (`[keys.NAME]`), `key NAME` before the time."""
    request = flow.request
    asked = f"{clip(exchange.method)} {clip(exchange.route)} {clip(exchange.model or '')}".rstrip()
    if exchange.upstream_route is not None:
        server = f"{exchange.server} " if exchange.server_named else ""
        asked += f" → {server}{request.path.split('?', 1)[0]} {clip(exchange.upstream_model or '')}"
    parts = [asked]
    if exchange.failure is not None and flow.error is not None and exchange.relay is None:
        parts.append(str(exchange.failure[0]))  # the proxy's error page, not the upstream's status
    elif flow.response is not None:
        parts.append(str(flow.response.status_code))
    if usage := exchange.usage:
        parts.append(f"{usage.prompt_tokens}+{usage.completion_tokens} tokens")
    if exchange.key is not None and exchange.key.spec.key_env:  # a named key (ollama_api_key's alone is not named here)
        parts.append(f"key {exchange.key.name}")
    end = (flow.response.timestamp_end if flow.response is not None else None) or time.time()
    parts.append(f"{(end - request.timestamp_start) * 1000:.0f} ms")
    if exchange.error:
        parts.append(f"error: {clip(exchange.error, MAX_ERROR)}")
    return escape(" · ".join(parts))  # client text (the model, an error naming it) cannot forge lines


def finish(flow: http.HTTPFlow, exchange: Exchange, answered: bool = False) -> None:
    """Annotate a finished (or failed) flow, log its one line, and keep its record.

    `answered`: the client had its whole answer, whatever mitmproxy's `flow.error` says after it.
    """
    exchange.publish(flow)
    line = exchange.hidden(summary(flow, exchange))
    flow.comment = line
    response = flow.response
    broken = flow.error is not None and not answered
    # A HEAD probe of a path no route serves (Claude Code's HEAD /api/hello at every start) gets Ollama's
    # 404 and is no failure: its line is logged as a good flow's is.
    probe = flow.request.method == "HEAD" and response is not None and response.status_code == 404
    if exchange.error or broken or (response is not None and response.status_code >= 400 and not probe):
        flow.marked = FAILED_MARKER
        logger.warning(line)
    else:
        flow_log.info(line)  # (nothing at flow_detail=0: `flow_log`)
