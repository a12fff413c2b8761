"""The OpenAI Responses API, as Ollama serves it for Codex CLI: `POST /v1/responses`, stateless.

Translated to `{base}/chat/completions` by `translate.responses` (requests, whole answers, and
streams event by event: `response.created` … `response.completed`); or, with
`responses_passthrough`, forwarded to the upstream's own `{base}/responses` with only the model
name resolved, for upstreams that serve this API (OpenAI), its answers relayed with the client's
model name. Errors are OpenAI's shape, statuses kept.

As on `/v1/messages`, a reasoning effort goes upstream only for a model with the `thinking`
capability (Codex sends one with every request), and `max_output_tokens` is lowered to the
model's known limit and sent in the field the model takes. Ollama's capability rules
(`catalog.capabilities`) apply as on /api/chat: a model without `completion`, or with tools without
`tools`, is refused with 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addon.catalog.capabilities import refusal
from addon.endpoints.base import OpenAIEndpoint, forward, named_body, plan_of, upstream_object, whole_stream
from addon.endpoints.openai import SSERelay
from addon.exchange import Exchange
from addon.reply import Answer, Forward, Plan, Reply, json_answer
from addon.translate import responses
from addon.translate.stream import ChunkStream
from addon.wire.openai import Usage, error_type, usage_of

if TYPE_CHECKING:
    from addon.settings import Settings
    from addon.wire.model import JSON

_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


class ResponsesRelay(SSERelay):
    """The stream of a forwarded `/v1/responses`: relayed line by line as `SSERelay` does, the
    client's model name put into each event's `response`, done at `response.completed`,
    `.incomplete` or `.failed` (this API sends no `[DONE]`); the usage of the last of them is
    the exchange's. A stream cut before its end gets an `error` event in this API's shape."""

    __slots__ = ("raw_usage",)

    def __init__(self, model: str, max_event: int) -> None:
        super().__init__(model, max_event)  # always a name: the lifecycle events are read for their usage
        self.raw_usage: Any = None

    @property
    def usage(self) -> Usage | None:
        return usage_of(self.raw_usage)

    def _watch(self, lines: bytes) -> None:
        if any(marker in lines for marker in _TERMINAL):
            self.done = self.ended = True

    def _line(self, line: bytes) -> bytes:
        if line.startswith(b"data:") and any(marker in line for marker in _TERMINAL):
            try:
                event = json.loads(line[5:])
                response = event.get("response") if isinstance(event, dict) else None
                if isinstance(response, dict):
                    self.raw_usage = response.get("usage")
            except (ValueError, RecursionError):
                pass  # not JSON: relayed as it is
        return super()._line(line)

    def error_event(self, message: str) -> bytes:
        error = {"type": error_type(500), "code": "server_error", "message": message, "param": None}
        data = {"type": "error", "code": "server_error", "message": message, "param": None, "error": error}
        return b"event: error\ndata: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class ResponsesPlan(Plan):
    """A translated `/v1/responses` request: its body, whose fields the Response echoes."""

    request: dict[str, JSON]


@dataclass(frozen=True, slots=True)
class PassthroughPlan(Plan):
    """A `/v1/responses` request forwarded as it is (`responses_passthrough`)."""


class Responses(OpenAIEndpoint):
    """`POST /v1/responses` → `POST {base}/chat/completions` (or `{base}/responses` with `responses_passthrough`)."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        missing = responses.ResponsesError(
            400, "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
        named = named_body(exchange, request, settings, self, json_answer(400, missing.body(), missing.message))
        if isinstance(named, Answer):
            return named
        tools = named.body.get("tools")  # the reasoning wish Codex sends with every request is relaxed, not refused
        if (why := refusal(named.info, named.model, "chat", tools=isinstance(tools, list) and bool(tools))) is not None:
            return self.error(400, why)
        if named.target.server.responses_passthrough:
            exchange.plan = PassthroughPlan()
            body = {**named.body, "model": named.target.model}
            return Forward("responses", body, named.body.get("stream") is True, named.target)
        try:
            translation = responses.responses_request(named.body, named.target.model)
        except responses.ResponsesError as e:
            return json_answer(e.status, e.body(), e.message)
        exchange.plan = ResponsesPlan(named.body)
        return forward(exchange, translation, named.target, named.info)

    def stream(self, exchange: Exchange) -> ChunkStream | SSERelay | None:
        if not exchange.stream:
            return None  # an upstream that streams although asked not to: refused in `convert`
        if isinstance(exchange.plan, PassthroughPlan):
            return ResponsesRelay(exchange.model or "", exchange.sse_event_limit)
        plan = plan_of(exchange, ResponsesPlan)
        return ChunkStream(responses.ResponsesStream(exchange.model or "", plan.request), exchange.sse_event_limit)

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer | None:
        """An upstream error, a whole answer, or a stream that arrived in one piece (server replay)."""
        model = exchange.model or ""
        if response.status_code >= 400:
            status, error = responses.upstream_error(response.status_code, body, response.reason, model)
            return json_answer(status, error, error["error"]["message"])
        if (streamed := whole_stream(self, exchange, response, body)) is not None:
            return streamed
        parsed = upstream_object(self, body)
        if isinstance(parsed, Answer):
            # forwarded as it is: an answer that is not a JSON object passes unchanged
            return None if isinstance(exchange.plan, PassthroughPlan) else parsed
        if isinstance(exchange.plan, PassthroughPlan):  # forwarded as it is: only the model name changes
            exchange.usage = usage_of(parsed.get("usage"))
            parsed["model"] = model
            return json_answer(200, parsed)
        try:
            answer = responses.responses_answer(parsed, model, plan_of(exchange, ResponsesPlan).request)
        except responses.ResponsesError as e:
            return json_answer(e.status, e.body(), e.message)
        exchange.usage = usage_of(parsed.get("usage"))
        return json_answer(200, answer)
