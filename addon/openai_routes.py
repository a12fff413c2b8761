"""The OpenAI-compatible routes Ollama also serves: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Requests go upstream as they are, except that the model name is resolved like on every other
route (catalog alias, `name:latest` → upstream id); answers come back unchanged except that their
`model` is the name the client sent, streams included (event by event). /v1/models is answered
locally from the model directory, with the names /api/tags lists.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from mitmproxy import http

from addon import translate
from addon.catalog import ModelInfo
from addon.routes import CLIENT_BODY, META, UPSTREAM_BODY, respond_json

if TYPE_CHECKING:
    from addon.options import Settings

logger = logging.getLogger("ollama_proxy")

PREFIX = "/v1/"


def openai_error(flow: http.HTTPFlow, status: int, message: str, kind: str = "invalid_request_error") -> None:
    """An error in OpenAI's shape, for clients of the /v1 routes."""
    respond_json(flow, status, {"error": {"message": message, "type": kind, "param": None, "code": None}})
    flow.metadata[META]["error"] = message


def send_upstream(flow: http.HTTPFlow, settings: Settings, route: str, body: dict[str, Any], stream: bool) -> None:
    """Rewrite the flow in place into `POST {base}/{route}` with this JSON body and the upstream's key."""
    headers = http.Headers(
        host="",
        content_type="application/json",
        accept="text/event-stream" if stream else "application/json",
        accept_encoding="identity",
    )
    if user_agent := flow.request.headers.get("user-agent"):
        headers["user-agent"] = user_agent
    if settings.authorization:
        headers["authorization"] = settings.authorization
    if settings.body_view_limit and flow.request.raw_content:
        flow.metadata[CLIENT_BODY] = flow.request.raw_content[: settings.body_view_limit]
    flow.request.headers = headers
    flow.request.method = "POST"
    flow.request.url = settings.upstream.url(route)
    flow.request.content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Requests


def forward(flow: http.HTTPFlow, settings: Settings) -> None:
    raw = flow.request.get_content(strict=False) or b""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        openai_error(flow, 400, f"invalid JSON in request body: {e}")
        return
    if not isinstance(body, dict):
        openai_error(flow, 400, "the request body must be a JSON object")
        return
    model = body.get("model")
    if not isinstance(model, str) or not model:
        openai_error(flow, 400, "model is required")
        return
    route = flow.metadata[META]["route"][len(PREFIX) :]
    upstream_model = settings.models.upstream_id(model)
    body["model"] = upstream_model
    stream = body.get("stream") is True
    flow.metadata[META].update(
        kind="openai", model=model, stream=stream, upstream_route=route, upstream_model=upstream_model
    )
    send_upstream(flow, settings, route, body, stream)


def model_object(model: ModelInfo, loaded_at: float) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.created or loaded_at), "owned_by": "library"}


async def models(flow: http.HTTPFlow, settings: Settings) -> None:
    listing = await settings.models.listing()
    respond_json(flow, 200, {"object": "list", "data": [model_object(m, settings.models.loaded_at) for m in listing.models]})


async def model(flow: http.HTTPFlow, settings: Settings) -> None:
    name = unquote(flow.metadata[META]["route"][len(PREFIX + "models/") :])
    flow.metadata[META]["model"] = name
    found, _ = await settings.models.find(name)
    if found is None:
        openai_error(flow, 404, f"model '{name}' not found", "not_found_error")
        return
    respond_json(flow, 200, {**model_object(found, settings.models.loaded_at), "id": name})


# ---------------------------------------------------------------------------------------------
# Answers


# What a /v1 client gets when the upstream's stream ends without `[DONE]`: the openai SDK raises
# APIError on an event with an `error` member, instead of taking the cut answer for a whole one.
INCOMPLETE_EVENT = (
    b'data: {"error":{"message":"the upstream stream ended before the answer was complete",'
    b'"type":"upstream_error","param":null,"code":null}}\n\n'
)


class SSERelay:
    """A `flow.response.stream` callable for /v1 streams: relays SSE as it comes, renaming each
    event's `model` when the client used another name than the upstream, and ends a stream the
    upstream broke off (no `[DONE]`) with an error event.

    Never returns an empty item mid-stream (that would end a chunked response) and never raises
    (mitmproxy would drop the piece): a line it cannot parse passes unchanged.
    """

    __slots__ = ("model", "pending", "tail", "done")

    def __init__(self, model: str | None) -> None:
        self.model = model  # None: pass the events through as they are
        self.pending = bytearray()  # the start of a line not yet complete: held back, so that
        self.tail = b""  # a final error event never lands in the middle of a line
        self.done = False

    def __call__(self, data: bytes) -> list[bytes]:
        if not data:
            rest = bytes(self.pending)
            self.pending.clear()
            out = self._line(rest) if rest else b""
            if rest.strip() == b"data: [DONE]" or rest.strip() == b"data:[DONE]":
                self.done = True
            if not self.done:
                out += (b"\n\n" if rest else b"") + INCOMPLETE_EVENT
            return [out] if out else []
        if not self.done:
            window = self.tail + data
            self.done = b"[DONE]\n" in window or b"[DONE]\r" in window
            self.tail = window[-8:]
        end = data.rfind(b"\n")
        if end < 0:
            self.pending += data
            return []
        lines = bytes(self.pending) + data[: end + 1] if self.pending else data[: end + 1]
        self.pending[:] = data[end + 1 :]
        if self.model is None:
            return [lines]
        return [b"\n".join(self._line(line) for line in lines[:-1].split(b"\n")) + b"\n"]

    def close_with_error(self, message: str) -> bytes:
        """The bytes that end a stream the upstream broke off: a final error event saying why."""
        self.done = True
        self.pending.clear()  # a partial line of the cut-off stream: never complete, never sent
        event = {"error": {"message": message, "type": "upstream_error", "param": None, "code": None}}
        return b"\n\ndata: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    def _line(self, line: bytes) -> bytes:
        if self.model is None or not line.startswith(b"data:") or b'"model"' not in line:
            return line
        try:
            text = line[5:].strip()
            event = json.loads(text)
            if not isinstance(event, dict) or "model" not in event:
                return line
            event["model"] = self.model
            return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + (b"\r" if line.endswith(b"\r") else b"")
        except Exception:
            return line


def response_headers(flow: http.HTTPFlow, settings: Settings) -> None:
    """Relay a streamed answer in real time, renaming its model if the upstream's name differs."""
    meta = flow.metadata[META]
    response = flow.response
    if response is None or "upstream_route" not in meta or response.status_code != 200:
        return
    if "text/event-stream" not in response.headers.get("content-type", ""):
        return
    response.stream = SSERelay(None if meta["model"] == meta["upstream_model"] else meta["model"])
    response.headers.pop("content-length", None)  # renamed events and a closing error event change the length
    response.headers["transfer-encoding"] = "chunked"


def response(flow: http.HTTPFlow, settings: Settings) -> None:
    """A whole answer: the client's model name in a JSON body; errors pass unchanged (they are OpenAI's already)."""
    meta = flow.metadata[META]
    upstream = flow.response
    if upstream is None or "upstream_route" not in meta or upstream.stream:
        return
    body = upstream.get_content(strict=False) or b""
    if settings.body_view_limit:
        flow.metadata[UPSTREAM_BODY] = body[: settings.body_view_limit]
    if upstream.status_code >= 400:
        meta["error"] = translate.upstream_error(upstream.status_code, body, upstream.reason, None)[1]
        return
    if "json" not in upstream.headers.get("content-type", ""):
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        return
    if not isinstance(parsed, dict):
        return
    if isinstance(usage := parsed.get("usage"), dict):
        meta["usage"] = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": int(usage.get("completion_tokens") or 0)}
    if "model" in parsed and meta["model"] != meta["upstream_model"]:
        parsed["model"] = meta["model"]
        upstream.content = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()
