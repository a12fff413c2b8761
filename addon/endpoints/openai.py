"""The OpenAI-compatible routes Ollama also serves: /v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/audio/transcriptions, /v1/models.

Requests go upstream as they are, except that the model name is resolved like on every other
route (catalog alias, `name:latest` → upstream id); answers come back unchanged except that their
`model` is the name the client sent, streams included (event by event). A transcription's
multipart form goes as it is, its `model` field resolved in place. /v1/models is answered
locally from the model directory, with the names /api/tags lists. Errors are OpenAI's shape.
Ollama's capability rules (`catalog.capabilities`) refuse what the model cannot do with 400, as
Ollama's middleware does: chat with a model without `completion`, tools or a reasoning effort it
cannot take, a completions suffix without `insert`.
(/v1/responses has a module of its own: `openai_responses`.)
"""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from mitmproxy import http

from addon.catalog.capabilities import EFFORTS_ON, refusal
from addon.catalog.models import ModelInfo
from addon.endpoints.base import OpenAIEndpoint, limit_answer, named_body
from addon.exchange import Exchange
from addon.guard.keys import visible
from addon.reply import Answer, Forward, Reply, json_answer
from addon.translate.response import upstream_error
from addon.wire import multipart
from addon.wire.openai import Usage, answerless, error_type, invalid_json, loads, usage_of
from addon.wire.sse import MAX_EVENT, SSEFramer, SSETooLarge, split_lines

if TYPE_CHECKING:
    from addon.settings import Settings

PREFIX = "/v1/"


def error_event(message: str) -> bytes:
    """A final SSE event in OpenAI's error shape, typed as Ollama types a failure mid-stream (a 500: `api_error`)."""
    error = {"error": {"message": message, "type": error_type(500), "param": None, "code": None}}
    return b"data: " + json.dumps(error, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


# What a /v1 client gets when the upstream's stream ends without `[DONE]`: the openai SDK raises
# APIError on an event with an `error` member, instead of taking the cut answer for a whole one.
INCOMPLETE = "the upstream stream ended before the answer was complete"
INCOMPLETE_EVENT = error_event(INCOMPLETE)


_DONE = re.compile(rb"(?:\A|[\r\n])data: ?\[DONE\][\r\n]")


class SSERelay:
    """The stream converter of the /v1 routes: relays SSE as it comes, renaming each event's
    `model` when the client used another name than the upstream, and ends a stream the upstream
    broke off (no `[DONE]`) with an error event.

    It decodes no events: the one framer (`wire.sse.SSEFramer`) hands it the complete lines of each
    piece, byte for byte whatever their line ends (LF, CRLF or CR), holding back an unfinished
    last line, so that a final error event never lands in the middle of one. A line or an event
    longer than `max_event` (sse_event_limit) ends the stream with an error event and `aborted`
    (the proxy stops reading the upstream). A data line with `NaN` or `Infinity` (not JSON: no
    client could parse it) ends it too. Never returns an empty piece mid-stream (that would end a
    chunked response) and never raises (mitmproxy would drop the piece): a line it cannot parse
    passes unchanged.
    """

    content_type: str | None = None  # the upstream's SSE, relayed
    final_error_on_break = True

    __slots__ = ("aborted", "done", "ended", "error", "framer", "model", "warnings")

    def __init__(self, model: str | None, max_event: int = MAX_EVENT) -> None:
        self.model = model  # None: pass the events through as they are
        self.framer = SSEFramer(max_event)
        self.done = False  # the end marker (`data: [DONE]`) was seen
        self.ended = False  # the end marker was seen, or a final error event was produced
        self.error: str | None = None  # the message of that error event
        self.aborted = False
        self.warnings: list[str] = []

    @property
    def usage(self) -> Usage | None:
        return None

    def feed(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""
        try:
            lines = self.framer.feed(data)
        except SSETooLarge as e:
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream: {e}")
        return self._lines(lines) if lines else b""

    def finish(self) -> bytes:
        if self.error is not None:
            return b""
        rest = self.framer.finish()
        out = self._lines(rest) if rest else b""
        if not self.done and self.error is None:
            self.ended = True
            self.error = INCOMPLETE
            out += (b"\n\n" if rest else b"") + self.error_event(INCOMPLETE)
        return out

    def fail(self, message: str) -> bytes:
        """The bytes that end a stream the upstream broke off: a final error event saying why."""
        if self.done or self.error is not None:
            return b""
        self.ended = True
        self.error = message
        return b"\n\n" + self.error_event(message)

    def error_event(self, message: str) -> bytes:
        return error_event(message)

    def _lines(self, lines: bytes) -> bytes:
        if (b"NaN" in lines or b"Infinity" in lines) and (bad := self._not_json(lines)):
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream event (not JSON: {bad})")
        if not self.done:
            self._watch(lines)
        if self.model is None:
            return lines
        return b"".join([self._line(line) for line in split_lines(lines)])

    def _watch(self, lines: bytes) -> None:
        """Note the end marker (`data: [DONE]`)."""
        if b"[DONE]" in lines and _DONE.search(lines + b"\n"):
            self.done = self.ended = True

    @staticmethod
    def _not_json(lines: bytes) -> str | None:
        """What makes one of these data lines invalid JSON (NaN, Infinity), or None."""
        for line in split_lines(lines):
            if line.startswith(b"data:") and (b"NaN" in line or b"Infinity" in line):
                try:
                    loads(line[5:].strip())
                except ValueError as e:
                    return str(e)
        return None

    def _line(self, line: bytes) -> bytes:
        if self.model is None or not line.startswith(b"data:") or b'"model"' not in line:
            return line
        body = line.rstrip(b"\r\n")
        try:
            event = json.loads(body[5:])
            if not isinstance(event, dict):
                return line
            if "model" in event:
                event["model"] = self.model
            elif isinstance(event.get("response"), dict) and "model" in event["response"]:  # the Responses API's
                event["response"]["model"] = self.model
            else:
                return line
            renamed = b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
            return renamed + line[len(body) :]
        except (ValueError, RecursionError):  # not JSON (or not encodable): the line passes as it is
            return line


class Forwarded(OpenAIEndpoint):
    """`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: forwarded with the model resolved."""

    def __init__(self, route: str) -> None:
        self.route = route  # the upstream route, e.g. "chat/completions"

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        named = named_body(exchange, request, settings, self, self.error(400, "model is required"))
        if isinstance(named, Answer):
            return named
        body = named.body
        if (why := self.refusal(body, named.model, named.info)) is not None:
            return self.error(400, why)
        body["model"] = named.target.model
        if self.route != "embeddings":  # the answer's length, as on every route
            warnings: list[str] = []
            limit_answer(
                cast("MutableMapping[str, object]", body),
                named.info,
                named.target.model,
                self.route == "chat/completions",
                warnings,
            )
            exchange.warn(warnings)
        return Forward(self.route, body, body.get("stream") is True, named.target)

    def refusal(self, body: dict[str, Any], model: str, info: ModelInfo) -> str | None:
        """Ollama's capability rules for what the request asks (chat: tools, a reasoning effort; completions:
        a suffix); embeddings have none."""
        if self.route == "embeddings":
            return None
        if self.route == "completions":
            return refusal(info, model, "generate", insert=bool(body.get("suffix")))
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else body.get("reasoning_effort")
        tools = body.get("tools")
        return refusal(info, model, "chat", think=effort in EFFORTS_ON, tools=isinstance(tools, list) and bool(tools))

    def stream(self, exchange: Exchange) -> SSERelay:
        """Relay a streamed answer in real time, renaming its model if the upstream's name differs."""
        return SSERelay(None if exchange.model == exchange.upstream_model else exchange.model, exchange.sse_event_limit)

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer | None:
        """A whole answer: the client's model name in a JSON body; errors pass unchanged (they are OpenAI's
        already). What no client could read is a 502: invalid JSON (NaN, Infinity, numbers that overflow),
        a 200 that is no answer (`{}`, `{"error": ...}`)."""
        if exchange.relay is not None:
            return None
        if response.status_code >= 400:
            exchange.error = upstream_error(response.status_code, body, response.reason, None)[1]
            return None
        if "json" not in response.headers.get("content-type", ""):
            return None
        try:
            parsed = loads(body)
        except ValueError as e:
            return self.error(502, invalid_json(body, e))
        if not isinstance(parsed, dict):
            return None
        if (failed := answerless(parsed, "data" if self.route == "embeddings" else "choices")) is not None:
            return self.error(502, failed)
        exchange.usage = usage_of(parsed.get("usage"))
        if "model" not in parsed or exchange.model == exchange.upstream_model:
            return None
        parsed["model"] = exchange.model
        body = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()
        return Answer(response.status_code, body, response.headers.get("content-type", ""), keep_headers=True)


class Transcriptions(OpenAIEndpoint):
    """`POST /v1/audio/transcriptions`: the multipart form forwarded as it is, its `model` field resolved.

    A streamed transcription (`stream=true`, for the models that have it) reaches the client
    whole, once the upstream has finished: it is short, and ends without `[DONE]`.
    """

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        content_type = request.headers.get("content-type", "")
        boundary = multipart.boundary_of(content_type)
        body = request.raw_content or b""  # (decoded, bounded, by the proxy: `request_size.decode`)
        if boundary is None or not body:
            return self.error(400, "the request must be a multipart/form-data body with the audio file and a model")
        model = multipart.field(body, boundary, "model")
        if not model:
            return self.error(400, "model is required")
        exchange.model = model
        target = settings.target(model)
        if target.model != model:
            body = multipart.replace_field(body, boundary, "model", target.model)
        stream = (multipart.field(body, boundary, "stream") or "").strip().lower() == "true"
        return Forward("audio/transcriptions", {}, stream, target, content=body, content_type=content_type)

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer | None:
        """Passed on unchanged (there is no model name in a transcription); its usage and errors noted."""
        if response.status_code >= 400:
            exchange.error = upstream_error(response.status_code, body, response.reason, None)[1]
        elif "json" in response.headers.get("content-type", ""):
            try:
                parsed = json.loads(body)
            except ValueError:
                return None
            if isinstance(parsed, dict):
                exchange.usage = usage_of(parsed.get("usage"))
        return None


def model_object(model: ModelInfo, loaded_at: float) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.created or loaded_at), "owned_by": "library"}


class Models(OpenAIEndpoint):
    """`GET /v1/models`: the names /api/tags lists, in OpenAI's shape."""

    async def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        listing = await settings.models.listing()
        data = [model_object(m, settings.models.loaded_at) for m in visible(exchange.key, listing.models)]
        return json_answer(200, {"object": "list", "data": data})


class Model(OpenAIEndpoint):
    """`GET /v1/models/{name}`."""

    async def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
        name = unquote(exchange.route[len(PREFIX + "models/") :])
        exchange.model = name
        found, _ = await settings.models.find(name)
        if found is None:
            return self.error(404, f"model '{name}' not found")
        return json_answer(200, {**model_object(found, settings.models.loaded_at), "id": name})
