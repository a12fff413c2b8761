"""Embeddings: POST /api/embed and the legacy POST /api/embeddings → POST {base}/embeddings."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addon import translate
from addon.models import Number, OllamaModel, Options
from addon.openai_routes import send_upstream
from addon.routes import JSON, META, UPSTREAM_BODY, clock_of, parse_named, replace_answer, respond_error, respond_json

if TYPE_CHECKING:
    from addon.options import Settings


class EmbedRequest(OllamaModel):
    model: str = ""
    input: Any = None  # a string or a list of strings; checked below with Ollama's message
    truncate: bool | None = None
    dimensions: int | None = None
    options: Options | None = None
    keep_alive: Number | str | None = None


class EmbeddingsRequest(OllamaModel):
    model: str = ""
    prompt: str = ""
    options: Options | None = None
    keep_alive: Number | str | None = None


def not_found(name: str) -> str:
    """Ollama's own wording on the embedding routes (double quotes, unlike chat's)."""
    return f'model "{name}" not found, try pulling it first'


def embed(flow: http.HTTPFlow, settings: Settings) -> None:
    request = parse_named(flow, EmbedRequest, (404, not_found("")))
    if request is None:
        return
    inputs = request.input
    if inputs is None or inputs == "":
        inputs = []
    elif isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        respond_error(flow, 400, "invalid input type")
        return
    if request.dimensions is not None and request.dimensions <= 0:
        respond_error(flow, 400, "dimensions must be a positive integer")
        return
    if not inputs:
        respond_json(flow, 200, {"model": request.model, "embeddings": []})
        return
    body: dict[str, Any] = {"model": settings.models.upstream_id(request.model), "input": inputs, "encoding_format": "float"}
    if request.dimensions:
        body["dimensions"] = request.dimensions
    _send(flow, settings, request.model, body, "embed", request.dimensions)


def embeddings(flow: http.HTTPFlow, settings: Settings) -> None:
    request = parse_named(flow, EmbeddingsRequest, (404, not_found("")))
    if request is None:
        return
    if not request.prompt:
        respond_json(flow, 200, {"embedding": []})
        return
    body = {"model": settings.models.upstream_id(request.model), "input": [request.prompt], "encoding_format": "float"}
    _send(flow, settings, request.model, body, "embeddings", None)


def _send(flow: http.HTTPFlow, settings: Settings, model: str, body: dict[str, Any], shape: str, dimensions: int | None) -> None:
    flow.metadata[META].update(
        kind="embed", shape=shape, model=model, stream=False, dimensions=dimensions,
        upstream_route="embeddings", upstream_model=body["model"],
    )
    send_upstream(flow, settings, "embeddings", body, stream=False)


# ---------------------------------------------------------------------------------------------
# Answers


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


def convert(parsed: dict[str, Any], meta: dict[str, Any], clock: translate.Clock) -> dict[str, Any]:
    data = parsed.get("data")
    if not isinstance(data, list):
        raise ValueError("no data list")
    items = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    vectors = [vector(d.get("embedding")) for d in items]
    if meta["shape"] == "embeddings":
        return {"embedding": vectors[0] if vectors else []}
    usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else {}
    return {
        "model": meta["model"],
        "embeddings": [normalized(v, meta.get("dimensions")) for v in vectors],
        "total_duration": max(time.time_ns() - clock.start_ns, 0),
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
    }


def response_headers(flow: http.HTTPFlow, settings: Settings) -> None:
    """Embeddings never stream: everything happens in `response`."""


def response(flow: http.HTTPFlow, settings: Settings) -> None:
    meta = flow.metadata[META]
    upstream = flow.response
    if upstream is None or "upstream_route" not in meta:
        return
    body = upstream.get_content(strict=False) or b""
    if settings.body_view_limit:
        flow.metadata[UPSTREAM_BODY] = body[: settings.body_view_limit]
    status = upstream.status_code
    if status >= 400:
        status, message = translate.upstream_error(status, body, upstream.reason, meta["model"])
        if status == 404 and message == f"model '{meta['model']}' not found":
            message = not_found(meta["model"])
        _answer(flow, meta, status, {"error": message})
        return
    try:
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
        answer = convert(parsed, meta, clock_of(flow))
    except (ValueError, TypeError, AttributeError, struct.error) as e:
        _answer(flow, meta, 502, {"error": f"the upstream sent an embeddings answer the proxy cannot read: {e}"})
        return
    usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else {}
    meta["usage"] = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": 0}
    _answer(flow, meta, 200, answer)


def _answer(flow: http.HTTPFlow, meta: dict[str, Any], status: int, obj: dict[str, Any]) -> None:
    if "error" in obj:
        meta["error"] = obj["error"]
    replace_answer(flow, status, translate.dumps_body(obj), JSON)
