"""The Ollama API's generation endpoints: `/api/chat`, `/api/generate`, and the two status routes.

Chat and generate are translated to `{base}/chat/completions` (generate's raw prompts and
fill-in-the-middle to `{base}/completions`), and their answers back to Ollama's: streams line
by line as they arrive (`translate.stream`), whole answers at once (`translate.response`),
upstream errors as `{"error": "..."}` with the upstream's status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mitmproxy import http

from addon.catalog.capabilities import THINKING_ON, refusal
from addon.endpoints.base import OllamaEndpoint, forward, parse_named, plan_of
from addon.exchange import Exchange
from addon.reply import Answer, Plan, Reply, json_answer, text_answer
from addon.translate.chunks import StreamFault
from addon.translate.ndjson import ollama_stream
from addon.translate.request import TranslationError, chat_request, generate_request
from addon.translate.response import Shape, gather, rfc3339_now, upstream_error, whole_answer
from addon.translate.stream import ChunkStream
from addon.wire.ollama import JSON, NDJSON, ChatRequest, GenerateRequest, dumps_body, dumps_line
from addon.wire.openai import ChatCompletion, invalid_json, loads, usage_of

if TYPE_CHECKING:
    from addon.settings import Settings, Target
    from addon.translate.upstream import Translation


class Root(OllamaEndpoint):
    """`GET /`: what Ollama answers to say it is up."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        return text_answer(200, "Ollama is running", "text/plain; charset=utf-8")


class Version(OllamaEndpoint):
    """`GET /api/version`."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        return json_answer(200, {"version": settings.ollama_version})


def unloads(request: ChatRequest | GenerateRequest) -> bool:
    """keep_alive 0: the request (with an empty prompt) unloads the model."""
    return request.keep_alive in (0, "0", "0s", "0m")


def load_reply(request: ChatRequest | GenerateRequest, shape: Shape) -> Answer:
    """An empty prompt loads (or with keep_alive 0 unloads) a model in Ollama: there is nothing to do upstream."""
    unload = unloads(request)
    answer: dict[str, Any] = {"model": request.model, "created_at": rfc3339_now()}
    if shape == "chat":
        answer["message"] = {"role": "assistant", "content": ""}
    else:
        answer["response"] = ""
    answer.update(done=True, done_reason="unload" if unload else "load")
    if request.stream:
        return Answer(200, dumps_line(answer), NDJSON)
    return json_answer(200, answer)


@dataclass(frozen=True, slots=True)
class GenerationPlan(Plan):
    """What the answer to a chat or generate request needs: whether the prompt was raw (no `context` then)."""

    raw: bool = False


class _Generation(OllamaEndpoint):
    """What chat and generate share: the upstream request, the stream converter, whole answers."""

    shape: Shape

    def stream(self, exchange: Exchange) -> ChunkStream | None:
        if not exchange.stream:
            return None  # an upstream that streams although asked not to: gathered in `convert`
        return self.converter(exchange)

    def converter(self, exchange: Exchange) -> ChunkStream:
        model, raw = exchange.model or "", plan_of(exchange, GenerationPlan).raw
        return ollama_stream(self.shape, model, exchange.clock(), raw, exchange.sse_event_limit)

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer:
        """An error, a JSON body, or a stream that arrived in one piece (server replay)."""
        model = exchange.model or ""
        status = response.status_code
        if status >= 400:
            status, message = upstream_error(status, body, response.reason, model)
            return self.error(status, message)
        # With a relay in place the headers already say NDJSON; the body is still the upstream's SSE.
        if exchange.relay is not None or "text/event-stream" in response.headers.get("content-type", ""):
            converter = self.converter(exchange)
            lines = converter.feed(body) + converter.finish()
            exchange.warn(converter.warnings)
            exchange.usage = converter.usage
            if exchange.stream:
                return Answer(200, lines, NDJSON)
            gathered = gather(lines.split(b"\n"))
            failed = "error" in json.loads(gathered)  # a broken stream: an error status, not a 200
            return Answer(502 if failed else 200, gathered, JSON)
        try:
            parsed = loads(body)
        except ValueError as e:
            return self.error(502, invalid_json(body, e))
        if not isinstance(parsed, dict):
            text = body[:200].decode("utf-8", "replace")
            return self.error(502, f"the upstream sent an answer that is not a JSON object (status {status}): {text!r}")
        try:
            raw = plan_of(exchange, GenerationPlan).raw
            answer, warnings = whole_answer(self.shape, cast("ChatCompletion", parsed), model, exchange.clock(), raw)
        except StreamFault as e:
            return self.error(502, str(e))
        except (AttributeError, TypeError, KeyError, IndexError, ValueError, ArithmeticError):  # another shape
            text = body[:200].decode("utf-8", "replace")
            return self.error(502, f"the upstream sent an answer of an unexpected shape: {text!r}")
        usage = usage_of(parsed.get("usage"))
        exchange.warn(warnings)
        exchange.usage = usage
        if exchange.stream:
            return Answer(200, dumps_line(answer), NDJSON)
        return Answer(200, dumps_body(answer), JSON)


def _forward(
    endpoint: _Generation,
    exchange: Exchange,
    settings: Settings,
    translate: Callable[[Target], Translation],
    plan: GenerationPlan,
    refused: str | None,
) -> Reply:
    """What chat and generate send upstream, once their request is read: the translation to the model's target.
    `refused`: Ollama's capability refusal of the request, answered once the model is known to be routable."""
    model = exchange.model or ""
    target = settings.target(model)
    if refused is not None:
        return endpoint.error(400, refused)
    try:
        translation = translate(target)
    except TranslationError as e:
        return endpoint.error(400, str(e))
    exchange.plan = plan
    return forward(exchange, translation, target, settings.models.info(model))


class Chat(_Generation):
    """`POST /api/chat` → `POST {base}/chat/completions`."""

    shape: Shape = "chat"

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        parsed = parse_named(exchange, request, ChatRequest, self, (400, "model is required"))
        if isinstance(parsed, Answer):
            return parsed
        if not parsed.messages and unloads(parsed):
            return load_reply(parsed, "chat")  # Ollama unloads before it looks at what the model can do
        info = settings.models.info(parsed.model)
        why = refusal(info, parsed.model, "chat", think=parsed.think in THINKING_ON, tools=bool(parsed.tools))
        if not parsed.messages:
            return self.error(400, why) if why else load_reply(parsed, "chat")
        return _forward(
            self,
            exchange,
            settings,
            lambda target: chat_request(parsed, target.model, target.server.passthrough_options),
            GenerationPlan(),
            why,
        )


class Generate(_Generation):
    """`POST /api/generate` → `{base}/chat/completions`, or `{base}/completions` for raw prompts and suffixes."""

    shape: Shape = "generate"

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        parsed = parse_named(exchange, request, GenerateRequest, self, (404, "model '' not found"))
        if isinstance(parsed, Answer):
            return parsed
        empty = not parsed.prompt and parsed.suffix is None and not parsed.images
        if empty and unloads(parsed):
            return load_reply(parsed, "generate")  # Ollama unloads before it looks at what the model can do
        info = settings.models.info(parsed.model)
        why = refusal(info, parsed.model, "generate", think=parsed.think in THINKING_ON, insert=bool(parsed.suffix))
        if empty:
            return self.error(400, why) if why else load_reply(parsed, "generate")
        return _forward(
            self,
            exchange,
            settings,
            lambda target: generate_request(parsed, target.model, target.server.passthrough_options),
            GenerationPlan(raw=parsed.raw),
            why,
        )
