"""The Ollama endpoints: each reads its flow, answers locally or rewrites it into an OpenAI request.

This is the glue between mitmproxy flows and the pure functions of `addon.translate`; the hooks
in `addon.proxy` only pick the endpoint and call it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from mitmproxy import http
from mitmproxy.net.http import status_codes
from pydantic import ValidationError

from addon import translate
from addon.models import ChatRequest, GenerateRequest, OllamaModel, describe
from addon.options import Settings
from addon.stream import Shape, SSEToNDJSON

logger = logging.getLogger("ollama_proxy")

JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"
# flow.metadata keys, serialisable so that saved flows keep them
META = "ollama"  # what the client asked for and how it went
CLIENT_BODY = "ollama_request"  # the client's original request body
UPSTREAM_BODY = "upstream_response"  # the upstream's raw answer (the SSE text of a stream)
UPSTREAM_HEADERS = "upstream_headers"  # ... and its headers, as [name, value] pairs

Model = TypeVar("Model", bound=OllamaModel)


# ---------------------------------------------------------------------------------------------
# Local answers


def respond(flow: http.HTTPFlow, status: int, body: bytes | str, content_type: str = JSON) -> None:
    content = body.encode() if isinstance(body, str) else body
    flow.response = http.Response.make(status, content, {"Content-Type": content_type})
    if flow.request.method == "HEAD":  # GET's headers without the body: a body would corrupt a kept-alive connection
        flow.response.content = b""
        flow.response.headers["content-length"] = str(len(content))


def respond_json(flow: http.HTTPFlow, status: int, obj: dict[str, Any]) -> None:
    respond(flow, status, translate.dumps_body(obj))


def respond_error(flow: http.HTTPFlow, status: int, message: str) -> None:
    respond_json(flow, status, {"error": message})
    flow.metadata.setdefault(META, {})["error"] = message


def not_found(flow: http.HTTPFlow) -> None:
    respond(flow, 404, "404 page not found", "text/plain")


def method_not_allowed(flow: http.HTTPFlow) -> None:
    respond(flow, 405, "405 method not allowed", "text/plain")


def root(flow: http.HTTPFlow, settings: Settings) -> None:
    respond(flow, 200, "Ollama is running", "text/plain; charset=utf-8")


def version(flow: http.HTTPFlow, settings: Settings) -> None:
    respond_json(flow, 200, {"version": settings.ollama_version})


# ---------------------------------------------------------------------------------------------
# Requests


def parse(flow: http.HTTPFlow, model: type[Model]) -> Model | None:
    """The validated request body, or None after answering 400 as Ollama would."""
    try:
        raw = flow.request.get_content(strict=True)
    except ValueError as e:
        respond_error(flow, 400, f"cannot decode request body: {e}")
        return None
    if not raw:
        respond_error(flow, 400, "missing request body")
        return None
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        respond_error(flow, 400, f"invalid JSON in request body: {e}")
        return None
    if not isinstance(data, dict):
        respond_error(flow, 400, "invalid request: the body must be a JSON object")
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        respond_error(flow, 400, describe(e))
        return None


def parse_named(flow: http.HTTPFlow, model: type[Model], missing: tuple[int, str]) -> Model | None:
    """Like `parse`, for a request that names a model: an empty name is answered with `missing`."""
    request = parse(flow, model)
    if request is None:
        return None
    name = getattr(request, "model", "")
    if not name:
        respond_error(flow, *missing)
        return None
    flow.metadata[META]["model"] = name
    return request


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON (Ollama's decoder refuses them): never send them upstream."""
    raise ValueError(f"{name} is not valid JSON")


def chat(flow: http.HTTPFlow, settings: Settings) -> None:
    request = parse_named(flow, ChatRequest, (400, "model is required"))
    if request is None:
        return
    if not request.messages:
        load_reply(flow, request, "chat")
        return
    forward(flow, settings, request, "chat", translate.chat_request)


def generate(flow: http.HTTPFlow, settings: Settings) -> None:
    request = parse_named(flow, GenerateRequest, (404, "model '' not found"))
    if request is None:
        return
    if not request.prompt and request.suffix is None and not request.images:
        load_reply(flow, request, "generate")
        return
    forward(flow, settings, request, "generate", translate.generate_request)


def load_reply(flow: http.HTTPFlow, request: ChatRequest | GenerateRequest, shape: Shape) -> None:
    """An empty prompt loads (or with keep_alive 0 unloads) a model in Ollama: there is nothing to do upstream."""
    unload = request.keep_alive in (0, "0", "0s", "0m")
    answer: dict[str, Any] = {"model": request.model, "created_at": translate.rfc3339_now()}
    if shape == "chat":
        answer["message"] = {"role": "assistant", "content": ""}
    else:
        answer["response"] = ""
    answer.update(done=True, done_reason="unload" if unload else "load")
    if request.stream:
        respond(flow, 200, translate.dumps_line(answer), NDJSON)
    else:
        respond_json(flow, 200, answer)


Translator = Callable[..., translate.Translation]


def forward(
    flow: http.HTTPFlow, settings: Settings, request: ChatRequest | GenerateRequest, shape: Shape, translator: Translator
) -> None:
    """Rewrite the flow in place into the OpenAI request that mitmproxy then sends upstream."""
    try:
        translation = translator(request, settings.models.upstream_id(request.model), settings.passthrough_options)
    except translate.TranslationError as e:
        respond_error(flow, 400, str(e))
        return
    translate.apply_think_style(translation.body, request.think, settings.models.think_style(request.model, settings.think_style))
    if translation.warnings:
        logger.warning("%s %s: %s", flow.metadata[META]["route"], request.model, "; ".join(translation.warnings))
    flow.metadata[META].update({
        "shape": shape,
        "model": request.model,
        "stream": request.stream,
        "raw": getattr(request, "raw", False),  # a raw generate answer has no `context`
        "upstream_route": translation.route,
        "upstream_model": translation.body["model"],
    })
    if settings.body_view_limit:
        flow.metadata[CLIENT_BODY] = flow.request.raw_content[: settings.body_view_limit]
    headers = http.Headers(
        host="",
        content_type="application/json",
        accept="text/event-stream" if request.stream else "application/json",
        accept_encoding="identity",
    )
    if user_agent := flow.request.headers.get("user-agent"):
        headers["user-agent"] = user_agent
    if settings.authorization:
        headers["authorization"] = settings.authorization
    flow.request.headers = headers
    flow.request.method = "POST"
    flow.request.url = settings.upstream.url(translation.route)
    flow.request.content = translate.dumps_body(translation.body)


# ---------------------------------------------------------------------------------------------
# Responses


class StreamRelay:
    """The `flow.response.stream` callable: feeds the converter, never lets an exception through.

    mitmproxy drops a chunk silently when the callable raises, and an empty item mid-stream
    would end a chunked response: so errors become an `{"error"}` line and nothing empty is returned.
    Up to `keep` bytes of the upstream stream and of the answer are kept for the flow views.
    """

    __slots__ = ("converter", "called", "keep", "upstream", "sent")

    def __init__(self, converter: SSEToNDJSON, keep: int) -> None:
        self.converter = converter
        self.called = False
        self.keep = keep
        self.upstream = bytearray()
        self.sent = bytearray()

    def __call__(self, data: bytes) -> list[bytes]:
        self.called = True
        try:
            lines = self.converter.feed(data) if data else self.converter.finish()
        except Exception as e:  # a converter bug must not cost the client its answer
            logger.exception("stream conversion failed")
            self.converter.ended = True
            lines = [translate.dumps_line({"error": f"proxy error while converting the stream: {e}"})]
        out = b"".join(lines)
        if len(self.upstream) < self.keep:
            self.upstream += data[: self.keep - len(self.upstream)]
        if len(self.sent) < self.keep:
            self.sent += out[: self.keep - len(self.sent)]
        return [out] if out else []


def clock_of(flow: http.HTTPFlow) -> translate.Clock:
    return translate.Clock(start_ns=int(flow.request.timestamp_start * 1e9))


def keep_upstream_head(flow: http.HTTPFlow, settings: Settings) -> None:
    """Note the upstream's own status and headers before any endpoint converts them (for saved flows)."""
    meta = flow.metadata[META]
    if settings.body_view_limit and flow.response is not None and "upstream_route" in meta:
        meta["upstream_status"] = flow.response.status_code
        flow.metadata[UPSTREAM_HEADERS] = [[k, v] for k, v in flow.response.headers.items(multi=True)]


def response_headers(flow: http.HTTPFlow, settings: Settings) -> None:
    """Arrange real-time conversion for a successful streamed answer; everything else waits for `response`."""
    meta = flow.metadata.get(META)
    response = flow.response
    if meta is None or response is None or "upstream_route" not in meta:
        return
    if not meta["stream"] or response.status_code != 200:
        return
    if "text/event-stream" not in response.headers.get("content-type", ""):
        return
    response.stream = StreamRelay(SSEToNDJSON(meta["shape"], meta["model"], clock_of(flow), meta.get("raw", False)), settings.body_view_limit)
    response.headers.pop("content-length", None)
    response.headers.pop("content-encoding", None)
    response.headers["transfer-encoding"] = "chunked"
    response.headers["content-type"] = NDJSON


_KEPT_HEADERS = ("retry-after", "retry-after-ms", "date")


def response(flow: http.HTTPFlow, settings: Settings) -> None:
    """Convert a whole upstream answer: an error, a JSON body, or a stream that arrived in one piece (replay)."""
    meta = flow.metadata.get(META)
    upstream = flow.response
    if meta is None or upstream is None or "upstream_route" not in meta:
        return
    relay = upstream.stream if isinstance(upstream.stream, StreamRelay) else None
    if relay is not None and relay.called:
        finish_stream(flow, meta, relay.converter)
        if relay.keep:
            flow.metadata[UPSTREAM_BODY] = bytes(relay.upstream)
            if upstream.raw_content is None:  # mitmproxy keeps no streamed body unless store_streamed_bodies
                upstream.content = bytes(relay.sent)
        return
    status = upstream.status_code
    body = upstream.get_content(strict=False) or b""
    if settings.body_view_limit:
        flow.metadata[UPSTREAM_BODY] = body[: settings.body_view_limit]
    if status >= 400:
        status, message = translate.upstream_error(status, body, upstream.reason, meta["model"])
        meta["error"] = message
        replace_answer(flow, status, translate.dumps_body({"error": message}), JSON)
        return
    # With a relay in place the headers already say NDJSON; the body is still the upstream's SSE.
    if relay is not None or "text/event-stream" in upstream.headers.get("content-type", ""):
        converter = SSEToNDJSON(meta["shape"], meta["model"], clock_of(flow), meta.get("raw", False))
        lines = converter.feed(body) + converter.finish()
        finish_stream(flow, meta, converter)
        if meta["stream"]:
            replace_answer(flow, 200, b"".join(lines), NDJSON)
        else:  # an upstream that streams although asked not to: gather the stream into one answer
            gathered = _gather(lines)
            failed = "error" in json.loads(gathered)  # a broken stream: an error status, not a 200
            replace_answer(flow, 502 if failed else 200, gathered, JSON)
        return
    try:
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        message = f"the upstream sent an answer that is not JSON (status {status}): {body[:200].decode('utf-8', 'replace')!r}"
        meta["error"] = message
        replace_answer(flow, 502, translate.dumps_body({"error": message}), JSON)
        return
    try:
        if meta["shape"] == "chat":
            answer, warnings = translate.chat_response(parsed, meta["model"], clock_of(flow))
        else:
            answer, warnings = translate.generate_response(parsed, meta["model"], clock_of(flow), meta.get("raw", False))
    except (AttributeError, TypeError, KeyError, IndexError, ValueError):  # a JSON object of another shape
        message = f"the upstream sent an answer of an unexpected shape: {body[:200].decode('utf-8', 'replace')!r}"
        meta["error"] = message
        replace_answer(flow, 502, translate.dumps_body({"error": message}), JSON)
        return
    _log_warnings(meta, warnings)
    meta["usage"] = _counts(parsed.get("usage"))
    if meta["stream"]:
        replace_answer(flow, 200, translate.dumps_line(answer), NDJSON)
    else:
        replace_answer(flow, 200, translate.dumps_body(answer), JSON)


def finish_stream(flow: http.HTTPFlow, meta: dict[str, Any], converter: SSEToNDJSON) -> None:
    _log_warnings(meta, converter.warnings)
    meta["usage"] = _counts(converter.usage)


def _counts(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    return {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": int(usage.get("completion_tokens") or 0)}


def _gather(lines: list[bytes]) -> bytes:
    """NDJSON chunks → the single object a non-streaming Ollama answer is."""
    chunks = [json.loads(line) for line in lines if line.strip()]
    if chunks and "error" in chunks[-1]:
        return translate.dumps_body(chunks[-1])
    final = dict(chunks[-1]) if chunks else {}
    key = "message" if "message" in final else "response"
    if key == "message":
        message = {"role": "assistant", "content": "".join(c["message"].get("content", "") for c in chunks)}
        thinking = "".join(c["message"].get("thinking", "") for c in chunks)
        calls = [t for c in chunks for t in c["message"].get("tool_calls", ())]
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        final["message"] = message
    else:
        final["response"] = "".join(c.get("response", "") for c in chunks)
    if logprobs := [item for c in chunks for item in c.get("logprobs", ())]:
        final["logprobs"] = logprobs
    return translate.dumps_body(final)


def replace_answer(flow: http.HTTPFlow, status: int, content: bytes, content_type: str) -> None:
    """Rewrite the upstream response in place, keeping its timestamps for the flow views and the
    headers a client may act on (Retry-After) or that date the answer."""
    answer = flow.response
    assert answer is not None
    kept = {k: v for k in _KEPT_HEADERS if (v := answer.headers.get(k))}
    answer.status_code = status
    answer.reason = status_codes.RESPONSES.get(status, "")
    answer.headers = http.Headers(content_type=content_type, **kept)
    answer.content = content


def _log_warnings(meta: dict[str, Any], warnings: list[str]) -> None:
    if warnings:
        logger.warning("%s %s: %s", meta["route"], meta["model"], "; ".join(warnings))


def forget_secrets(flow: http.HTTPFlow) -> None:
    """Once the request has gone upstream, drop the key from the flow so views and saved flows never show it."""
    if "authorization" in flow.request.headers:
        flow.request.headers["authorization"] = "Bearer [redacted]"
