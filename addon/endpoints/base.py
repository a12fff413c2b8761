"""The Endpoint protocol: what one route of an API family does, in that family's shapes.

An endpoint is one object in the route table (`addon.endpoints.ROUTES`). `addon.proxy` calls it
at four moments of a flow, and nothing else about a route is decided anywhere else:

- `handle(exchange, request, settings)`: validate the client's request and reply with an
  `Answer` (answered locally) or a `Forward` (what to send upstream). May be async (the routes
  that look up the model list). It notes what the log line shows on the exchange (`model`).
- `stream(exchange)`: for a streamed upstream answer (status 200, `text/event-stream`), a new
  `StreamConverter` for this flow, or None to wait for the whole answer.
- `convert(exchange, response, body)`: the client's `Answer` to a whole upstream answer (errors
  included, and an SSE body that arrived in one piece, as with server replay); None to pass the
  upstream's answer on unchanged.
- `error(status, message)`: an error `Answer` in the family's shape. Used for the endpoint's own
  refusals and by the guards (the client key check) before anything goes upstream.

A `StreamConverter` turns upstream SSE into the client's stream format, piece by piece. It
never raises out of `feed`/`finish` (the proxy's `Relay` still catches a bug, and asks `fail`
for the final piece), never returns an empty piece mid-stream, and ends a stream the upstream
cut short with a final error line or event of its family.

Families share their error shape and defaults through a base class (`OllamaEndpoint`,
`OpenAIEndpoint`); an endpoint overrides only what it does. What every endpoint that names a model
does first is `named_body` (or `parse_named` with a typed model): the body read, the model
required, noted and routed. A translated request goes upstream through `forward`, the one place
that applies what the model can take: the thinking wish in the target's think style, and the
answer's length limit (`limit_answer`, also applied to the relayed `/v1` requests).

What an endpoint must remember of a flow between its request and its answer is its `Plan`, a
typed record on `exchange.plan`, read back with `plan_of`.
"""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from mitmproxy import http
from pydantic import ValidationError

from addon.catalog.models import token_limit_field
from addon.exchange import Exchange
from addon.reply import Answer, Forward, Plan, Reply, json_answer
from addon.translate.upstream import Translation, think_fields
from addon.wire.ollama import OllamaModel, describe
from addon.wire.openai import error_type, invalid_json, loads

SSE = "text/event-stream; charset=utf-8"

if TYPE_CHECKING:
    from addon.catalog.models import ModelInfo
    from addon.settings import Settings, Target
    from addon.wire.model import JSON
    from addon.wire.openai import Usage


class StreamConverter(Protocol):
    """Upstream SSE → the client's stream format, for one flow."""

    aborted: bool  # the upstream's stream broke a limit (sse_event_limit): the proxy stops reading it
    warnings: list[str]

    @property
    def ended(self) -> bool:
        """Whether a final piece (done or error) has been produced (or, relayed, the end marker seen)."""

    @property
    def error(self) -> str | None:
        """The message of the final error piece, once produced (None: none, or the stream ended well)."""

    @property
    def content_type(self) -> str | None:
        """The client's content type; None: the upstream's stream is relayed as it is."""

    @property
    def final_error_on_break(self) -> bool:
        """Whether a broken-off stream gets `fail()`'s piece (mitmproxy then closes the connection:
        `timeouts.write_last` sends the FIN with that piece)."""

    @property
    def usage(self) -> Usage | None:
        """The token counts the stream reported, once it has ended."""

    def feed(self, data: bytes) -> bytes:
        """What this piece of the upstream body completes (b"" for nothing yet)."""

    def finish(self) -> bytes:
        """The tail once the upstream body has ended: a final piece, or an error if it was cut short."""

    def fail(self, message: str) -> bytes | None:
        """The final error piece after a failure (b"" if a final piece was already produced)."""


class Endpoint(Protocol):
    """One route of an API family: its request handling, its answers, its streams and its errors."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply | Awaitable[Reply]:
        """Validate the client's request: answer it (`Answer`) or say what goes upstream (`Forward`)."""

    def stream(self, exchange: Exchange) -> StreamConverter | None:
        """A converter for this flow's streamed upstream answer, or None to wait for the whole answer."""

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer | None:
        """The client's answer to a whole upstream answer; None passes the upstream's answer on unchanged."""

    def error(self, status: int, message: str) -> Answer:
        """An error answer in the family's shape."""


# ---------------------------------------------------------------------------------------------
# Families


class OllamaEndpoint:
    """The Ollama API (`/`, `/api/*`): errors are `{"error": "..."}`; nothing to convert unless overridden."""

    def handle(self, exchange: Exchange, request: http.Request, settings: Settings) -> Reply | Awaitable[Reply]:
        raise NotImplementedError

    def stream(self, exchange: Exchange) -> StreamConverter | None:
        return None

    def convert(self, exchange: Exchange, response: http.Response, body: bytes) -> Answer | None:
        return None

    def error(self, status: int, message: str) -> Answer:
        return json_answer(status, {"error": message}, message)


class OpenAIEndpoint(OllamaEndpoint):
    """The OpenAI API (`/v1/*`): errors are `{"error": {"message", "type", "param", "code"}}`, typed as Ollama types them."""

    def error(self, status: int, message: str) -> Answer:
        body = {"error": {"message": message, "type": error_type(status), "param": None, "code": None}}
        return json_answer(status, body, message)


# ---------------------------------------------------------------------------------------------
# Reading request bodies


def json_object(request: http.Request, endpoint: Endpoint) -> dict[str, JSON] | Answer:
    """The request body as a JSON object, or a 400 in the endpoint's shape saying why it is not one."""
    raw = request.raw_content  # (decoded, bounded, by the proxy: `addon.guard.request_size.decode`)
    if not raw:
        return endpoint.error(400, "missing request body")
    try:
        data = loads(raw)  # strict: NaN, Infinity and numbers that overflow (1e400) are refused, as Go's decoder does
    except (ValueError, RecursionError) as e:
        return endpoint.error(400, f"invalid JSON in request body: {e}")
    if not isinstance(data, dict):
        return endpoint.error(400, "invalid request: the body must be a JSON object")
    return data


def parse[Model: OllamaModel](request: http.Request, model: type[Model], endpoint: Endpoint) -> Model | Answer:
    """The validated request body, or a 400 as Ollama would answer it."""
    data = json_object(request, endpoint)
    if isinstance(data, Answer):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as e:
        return endpoint.error(400, describe(e))


def parse_named[Model: OllamaModel](
    exchange: Exchange, request: http.Request, model: type[Model], endpoint: Endpoint, missing: tuple[int, str]
) -> Model | Answer:
    """Like `parse`, for a request that names a model: an empty name is answered with `missing`."""
    parsed = parse(request, model, endpoint)
    if isinstance(parsed, Answer):
        return parsed
    name = getattr(parsed, "model", "")
    if not name:
        return endpoint.error(*missing)
    exchange.model = name
    return parsed


@dataclass(frozen=True, slots=True)
class Named:
    """A request that names a model: its body, and where the model goes."""

    body: dict[str, JSON]
    model: str
    target: Target
    info: ModelInfo


def named_body(
    exchange: Exchange, request: http.Request, settings: Settings, endpoint: Endpoint, missing: Answer
) -> Named | Answer:
    """The prologue of a route whose body is a JSON object naming a model: the body read, its `model`
    required (else `missing`), noted on the exchange, and routed (`Unroutable` is the proxy's to answer)."""
    body = json_object(request, endpoint)
    if isinstance(body, Answer):
        return body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return missing
    exchange.model = model
    return Named(body, model, settings.target(model), settings.models.info(model))


# ---------------------------------------------------------------------------------------------
# What the model can take: the thinking wish and the answer's length, on every route


def forward(exchange: Exchange, translation: Translation, target: Target, info: ModelInfo) -> Forward:
    """A translated request as it goes upstream: the thinking wish in the target's think style (a soft
    one only for a model with the `thinking` capability), the length limit as `limit_answer` has it;
    the translation's warnings logged once."""
    warnings = translation.warnings
    think = translation.think
    if think is not None and translation.think_soft and think is not False and "thinking" not in info.capabilities:
        warnings.append(
            f"the request asks for thinking ({think}), which was not sent: {info.name} has no thinking capability "
            "(give it one in the model catalog to send it)"
        )
        think = None
    effort, extra = think_fields(think, target.think_style)
    if effort is not None:
        translation.body["reasoning_effort"] = effort
    translation.extra.update(extra)
    limit_answer(
        cast("MutableMapping[str, object]", translation.body),
        info,
        target.model,
        translation.route == "chat/completions",
        warnings,
    )
    exchange.warn(warnings)
    return Forward(translation.route, translation.wire_body(), translation.stream, target)


_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


def limit_answer(
    body: MutableMapping[str, object], info: ModelInfo, upstream_model: str, chat: bool, warnings: list[str]
) -> None:
    """The one rule for where an answer ends, whatever the route: a limit above the model's known
    output limit (catalog, or OpenAI's published limits) is lowered to it, with a warning; on chat
    completions it goes in the field the model takes (`max_completion_tokens` for OpenAI's reasoning
    models, which refuse `max_tokens`). Values that are not counts are left for the upstream to judge.
    The model's own stop sequences (the catalog's `stop`, as a Modelfile's `PARAMETER stop`) are sent
    when the request names none; a request's own `stop` (even `[]`) replaces them, as in Ollama."""
    if info.stop and body.get("stop") is None:
        body["stop"] = list(info.stop)
    most = info.max_output_tokens
    for name in _LIMIT_FIELDS:
        value = body.get(name)
        if most is not None and isinstance(value, int) and not isinstance(value, bool) and value > most:
            warnings.append(f"{name} {value} was lowered to the model's output limit of {most}")
            body[name] = most
    if chat and "max_tokens" in body and "max_completion_tokens" not in body:
        if token_limit_field(upstream_model) == "max_completion_tokens":
            body["max_completion_tokens"] = body.pop("max_tokens")


# ---------------------------------------------------------------------------------------------
# Per-flow plans


def plan_of[P: Plan](exchange: Exchange, kind: type[P]) -> P:
    """The endpoint's plan for this flow. Another kind (or none) is a bug: the proxy answers it 500."""
    plan = exchange.plan
    if not isinstance(plan, kind):
        raise TypeError(f"{exchange.route}: expected a {kind.__name__}, found {type(plan).__name__}")
    return plan


def upstream_object(endpoint: Endpoint, body: bytes) -> dict[str, JSON] | Answer:
    """A whole upstream answer's JSON object (strict: NaN, Infinity and overflowing numbers are no JSON,
    and no client could read them), or a 502 in the endpoint's shape saying why it is none."""
    try:
        parsed: JSON = loads(body)
    except (ValueError, RecursionError) as e:
        return endpoint.error(502, invalid_json(body, e if isinstance(e, ValueError) else ValueError(str(e))))
    if not isinstance(parsed, dict):
        text = body[:200].decode("utf-8", "replace")
        return endpoint.error(502, f"the upstream sent an answer that is not a JSON object: {text!r}")
    return parsed


def whole_stream(endpoint: Endpoint, exchange: Exchange, response: http.Response, body: bytes) -> Answer | None:
    """The agents' answer to an upstream stream read whole (a server replay, or a stream that came in one
    piece): its events converted at once. None: the answer is no stream."""
    if exchange.relay is None and "text/event-stream" not in response.headers.get("content-type", ""):
        return None
    converter = endpoint.stream(exchange)
    if converter is None:
        return endpoint.error(502, "the upstream streamed an answer that was asked for whole")
    events = converter.feed(body) + converter.finish()
    exchange.usage = converter.usage
    return Answer(200, events, SSE)
