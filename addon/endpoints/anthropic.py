"""The Anthropic Messages API, as Ollama serves it for Claude Code: `/v1/messages` and `/v1/messages/count_tokens`.

`POST /v1/messages` (any query, e.g. Claude Code's `?beta=true`) is translated to
`{base}/chat/completions` by `translate.anthropic`; its answer comes back as an Anthropic
Message, a stream event by event (`message_start` … `message_stop`, an `event: error` when the
upstream fails after the stream started). `count_tokens` is answered locally with an estimate.
Errors are Anthropic's `{"type": "error", "error": {"type", "message"}}` with the status kept.
The `anthropic-version` and `anthropic-beta` headers are accepted and not sent on (the upstream
request's headers are written afresh); the client's `x-api-key` is read by `guard.access`.

What the model can do decides two fields Claude Code sends with every request:
- `thinking: adaptive` with `output_config.effort` (a "soft" wish): sent in the model's think
  style only to a model with the `thinking` capability (catalog, or inferred from its id), else
  dropped with a warning, as OpenAI refuses `reasoning_effort` for a model that cannot reason;
  an explicit `thinking: enabled` is always sent;
- `max_tokens` (32000 and more): lowered to the model's `max_output_tokens` where that is known
  (catalog, or OpenAI's published limits), and sent as `max_completion_tokens` to OpenAI's
  reasoning models, which refuse `max_tokens`.

Ollama's capability rules (`catalog.capabilities`) apply as on /api/chat, in Anthropic's error shape:
a model without `completion` (an embedding model) or, with tools, without `tools` is refused with 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mitmproxy import http

from addon.catalog.capabilities import refusal
from addon.endpoints.base import (
    OllamaEndpoint,
    forward,
    json_object,
    named_body,
    plan_of,
    upstream_object,
    whole_stream,
)
from addon.exchange import Exchange
from addon.reply import Answer, Plan, Reply, json_answer
from addon.translate import anthropic
from addon.translate.stream import ChunkStream
from addon.wire.openai import usage_of

if TYPE_CHECKING:
    from addon.settings import Settings


class AnthropicEndpoint(OllamaEndpoint):
    """The Anthropic API (`/v1/messages*`): errors are `{"type": "error", "error": {"type", "message"}}`."""

    def error(self, status: int, message: str) -> Answer:
        return json_answer(status, anthropic.error_body(status, message), message)


@dataclass(frozen=True, slots=True)
class MessagesPlan(Plan):
    """What the answer to a `/v1/messages` request needs: the input-token estimate for `message_start`, and
    the client's stop sequences (only these are reported as the `stop_sequence` that ended an answer)."""

    input_tokens: int
    stop_sequences: tuple[str, ...] = ()


class Messages(AnthropicEndpoint):
    """`POST /v1/messages` → `POST {base}/chat/completions`."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        named = named_body(exchange, request, settings, self, self.error(400, "model: Field required"))
        if isinstance(named, Answer):
            return named
        tools = named.body.get("tools")  # Ollama relaxes the thinking wish on this route: no thinking rule
        if (why := refusal(named.info, named.model, "chat", tools=isinstance(tools, list) and bool(tools))) is not None:
            return self.error(400, why)
        try:
            translation = anthropic.messages_request(
                named.body,
                named.target.model,
                passthrough=named.target.server.passthrough_options,
                system_turns=settings.system_turns,
            )
        except anthropic.AnthropicError as e:
            return json_answer(e.status, e.body(), e.message)
        asked = named.body.get("stop_sequences")
        stops = tuple(s for s in asked if isinstance(s, str)) if isinstance(asked, list) else ()
        exchange.plan = MessagesPlan(anthropic.estimate_input_tokens(named.body), stops)
        return forward(exchange, translation, named.target, named.info)

    def stream(self, exchange: Exchange) -> ChunkStream | None:
        if not exchange.stream:
            return None  # an upstream that streams although asked not to: refused in `convert`
        plan = plan_of(exchange, MessagesPlan)
        renderer = anthropic.MessagesStream(exchange.model or "", plan.input_tokens, stop_sequences=plan.stop_sequences)
        return ChunkStream(renderer, exchange.sse_event_limit)

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer:
        """An upstream error, a whole answer, or a stream that arrived in one piece (server replay)."""
        model = exchange.model or ""
        if response.status_code >= 400:
            status, error = anthropic.upstream_error(response.status_code, body, model)
            return json_answer(status, error, error["error"]["message"])
        if (streamed := whole_stream(self, exchange, response, body)) is not None:
            return streamed
        parsed = upstream_object(self, body)
        if isinstance(parsed, Answer):
            return parsed
        try:
            stops = plan_of(exchange, MessagesPlan).stop_sequences
            message, warnings = anthropic.messages_response(parsed, model, stops)
        except anthropic.AnthropicError as e:
            return json_answer(e.status, e.body(), e.message)
        exchange.warn(warnings)
        exchange.usage = usage_of(parsed.get("usage"))
        return json_answer(200, message)


class CountTokens(AnthropicEndpoint):
    """`POST /v1/messages/count_tokens`: an estimate, answered locally (`translate.anthropic.estimate_input_tokens`)."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        body = json_object(request, self)
        if isinstance(body, Answer):
            return body
        if isinstance(model := body.get("model"), str) and model:
            exchange.model = model
        try:
            return json_answer(200, anthropic.count_tokens(body))
        except anthropic.AnthropicError as e:
            return json_answer(e.status, e.body(), e.message)
