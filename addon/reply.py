"""What an endpoint replies to a request: an `Answer` for the client, or a `Forward` upstream; and the `Plan`
an endpoint keeps of its flow. Plain data: `addon.exchange` applies them to the flow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from addon.wire.ollama import dumps_body

if TYPE_CHECKING:
    from addon.settings import Target


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer for the client: made locally, or converted from the upstream's."""

    status: int
    body: bytes
    content_type: str
    error: str | None = None  # the message, when the answer reports a failure (for the log line)
    headers: tuple[tuple[str, str], ...] = ()  # more headers, e.g. WWW-Authenticate
    keep_headers: bool = False  # a relayed upstream answer: only its body changes (not its status or headers)


@dataclass(frozen=True, slots=True)
class Forward:
    """What to send upstream for a client's request: `POST {server}/{route}` with this JSON body
    (or with `content`, bytes of another type such as a multipart form, sent as they are)."""

    route: str  # e.g. "chat/completions"
    body: Mapping[str, Any]
    stream: bool
    target: Target
    content: bytes | None = None  # a body that is no JSON object: sent as it is, with `content_type`
    content_type: str = "application/json"


Reply = Answer | Forward


@dataclass(frozen=True, slots=True)
class Plan:
    """The base of what an endpoint remembers of its flow between request and answer (`Exchange.plan`):
    each endpoint that needs one defines its own kind (`endpoints.base.plan_of` reads it back)."""


def json_answer(status: int, obj: Any, error: str | None = None) -> Answer:
    return Answer(status, dumps_body(obj), "application/json; charset=utf-8", error)


def text_answer(status: int, text: str, content_type: str = "text/plain") -> Answer:
    return Answer(status, text.encode(), content_type)
