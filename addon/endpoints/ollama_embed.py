"""The Ollama API's embeddings: `POST /api/embed` and the legacy `POST /api/embeddings` → `POST {base}/embeddings`."""

from __future__ import annotations

import base64
import math
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mitmproxy import http

from addon.endpoints.base import OllamaEndpoint, parse_named, plan_of
from addon.exchange import Exchange
from addon.reply import Answer, Forward, Plan, Reply, json_answer
from addon.translate.response import Clock, upstream_error
from addon.wire.ollama import EmbeddingsRequest, EmbedRequest
from addon.wire.openai import (
    EmbeddingList,
    EmbeddingRequest,
    InvalidUsage,
    Usage,
    answerless,
    checked_usage,
    invalid_json,
    loads,
    token_count,
)

if TYPE_CHECKING:
    from addon.settings import Settings


def not_found(name: str) -> str:
    """Ollama's own wording on the embedding routes (double quotes, unlike chat's)."""
    return f'model "{name}" not found, try pulling it first'


def vector(value: Any) -> list[float]:
    """An embedding as floats: a JSON array, or base64 little-endian float32 (encoding_format base64)."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if not isinstance(value, list):
        raise ValueError("an embedding is neither a list nor base64")
    return value


def normalized(values: list[float], dimensions: int | None) -> list[float]:
    """Ollama's /api/embed vectors: cut to `dimensions` (if the upstream sent more) and L2-normalised."""
    if dimensions and len(values) > dimensions:
        values = values[:dimensions]
    norm = math.sqrt(math.fsum(v * v for v in values))
    return [v / norm for v in values] if norm else values


def vectors_of(parsed: EmbeddingList) -> list[list[float]]:
    """The upstream's embeddings in input order."""
    data = parsed.get("data")
    if not isinstance(data, list):
        raise ValueError("no data list")
    items = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    return [vector(d.get("embedding")) for d in items]


@dataclass(frozen=True, slots=True)
class EmbedPlan(Plan):
    """What the answer to an embedding request needs: the dimensions asked for (the vectors are cut to them)."""

    dimensions: int | None


class _Embeddings(OllamaEndpoint):
    """What both embedding routes share: the upstream request and reading its answer."""

    def forward(self, exchange: Exchange, inputs: list[str], dimensions: int | None, settings: Settings) -> Forward:
        target = settings.target(exchange.model or "")
        body: EmbeddingRequest = {"model": target.model, "input": inputs, "encoding_format": "float"}
        if dimensions:
            body["dimensions"] = dimensions
        exchange.plan = EmbedPlan(dimensions)
        return Forward("embeddings", body, False, target)

    def answer(self, exchange: Exchange, parsed: EmbeddingList) -> dict[str, Any]:
        raise NotImplementedError

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer:
        model = exchange.model or ""
        status = response.status_code
        if status >= 400:
            status, message = upstream_error(status, body, response.reason, model)
            if status == 404 and message == f"model '{model}' not found":
                message = not_found(model)
            return self.error(status, message)
        try:
            parsed = loads(body)
        except ValueError as e:
            return self.error(502, invalid_json(body, e))
        if not isinstance(parsed, dict):
            return self.error(502, "the upstream sent an embeddings answer that is not a JSON object")
        if (failed := answerless(parsed, "data")) is not None:
            return self.error(502, failed)
        try:
            usage = checked_usage(parsed.get("usage"))
            answer = self.answer(exchange, cast("EmbeddingList", parsed))
        except InvalidUsage as e:
            return self.error(502, str(e))
        except (ValueError, TypeError, AttributeError, struct.error, ArithmeticError) as e:
            return self.error(502, f"the upstream sent an embeddings answer the proxy cannot read: {e}")
        exchange.usage = Usage(usage.prompt_tokens if usage else 0, 0)
        return json_answer(200, answer)


class Embed(_Embeddings):
    """`POST /api/embed`: `input` a string or a list; vectors in input order, L2-normalised."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        parsed = parse_named(exchange, request, EmbedRequest, self, (404, not_found("")))
        if isinstance(parsed, Answer):
            return parsed
        inputs = parsed.input
        if inputs is None or inputs == "":
            inputs = []
        elif isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return self.error(400, "invalid input type")
        if parsed.dimensions is not None and parsed.dimensions <= 0:
            return self.error(400, "dimensions must be a positive integer")
        if not inputs:
            return json_answer(200, {"model": parsed.model, "embeddings": []})
        return self.forward(exchange, inputs, parsed.dimensions, settings)

    def answer(self, exchange: Exchange, parsed: EmbeddingList) -> dict[str, Any]:
        return embed_answer(parsed, exchange.model or "", plan_of(exchange, EmbedPlan).dimensions, exchange.clock())


def embed_answer(parsed: EmbeddingList, model: str, dimensions: int | None, clock: Clock) -> dict[str, Any]:
    """An OpenAI embedding list → Ollama's /api/embed answer."""
    vectors = vectors_of(parsed)
    usage = parsed.get("usage")
    return {
        "model": model,
        "embeddings": [normalized(v, dimensions) for v in vectors],
        "total_duration": max(time.time_ns() - clock.start_ns, 0),
        "load_duration": 0,
        "prompt_eval_count": token_count(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0,  # (checked)
    }


class Embeddings(_Embeddings):
    """`POST /api/embeddings` (legacy): one `prompt`; the vector as the upstream sent it."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        parsed = parse_named(exchange, request, EmbeddingsRequest, self, (404, not_found("")))
        if isinstance(parsed, Answer):
            return parsed
        if not parsed.prompt:
            return json_answer(200, {"embedding": []})
        return self.forward(exchange, [parsed.prompt], None, settings)

    def answer(self, exchange: Exchange, parsed: EmbeddingList) -> dict[str, Any]:
        vectors = vectors_of(parsed)
        return {"embedding": vectors[0] if vectors else []}
