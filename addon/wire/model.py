"""What the wire formats' request models share: strict pydantic models, JSON values, and the first problem
of a validation error, located as the client wrote it.

Strict like the Go and Python servers the proxy stands in for ("1" is no number); unknown fields are
kept (`extra="allow"`) so that a translator can report them. Each family turns `Problem` into its own
error sentence (`wire.ollama.describe`, `wire.anthropic.describe`, `wire.responses.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, Tag, ValidationError

JSON = JsonValue  # any JSON value, typed (objects are dict[str, JSON])
Number = int | Annotated[float, Field(allow_inf_nan=False)]  # NaN and Infinity are no JSON


class WireModel(BaseModel):
    """The base of the Anthropic and Responses request models."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or ())


_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """The first problem of a request: where (the client's keys and indexes), what kind, and what was wanted."""

    place: tuple[str | int, ...]
    kind: str  # "missing", "type", "value" (a value the field does not take), "said" (a validator's own sentence)
    wanted: str  # "a string", "a string or an array" … (type); pydantic's message (value); the sentence (said)


TAG = "tagged:"  # the prefix of every tag of a tagged union (`Tag(TAG + "text")`): no client key starts so


def tagged(name: str) -> Tag:
    """The tag of one member of a tagged union."""
    return Tag(TAG + name)


def _is_union_member(part: str | int) -> bool:
    """Pydantic names a union's member or a tagged union's tag in an error's location; the client sent no such key."""
    if isinstance(part, int):
        return False
    return (
        part in ("int", "float", "str", "bool", "none", "list", "dict")
        or "[" in part
        or part.startswith(("function-", TAG))
    )


def first_problem(error: ValidationError) -> Problem:
    """The problem of a validation error that the client should hear about first."""
    errors = error.errors(include_url=False)
    for item in errors:
        if item["type"] in ("recursion_loop", "recursion_depth_exceeded"):
            return Problem(_shown(_place(item["loc"])), "said", "the request nests JSON too deeply")
    for item in errors:  # a validator's own sentence says most
        if item["type"] == "value_error":
            return Problem(_shown(_place(item["loc"])), "said", str(item["ctx"]["error"]))
    first = max(errors, key=lambda e: len(_place(e["loc"])))  # the member of a union that got furthest
    place = _place(first["loc"])
    if first["type"] == "missing":
        return Problem(_shown(place), "missing", "present")
    if first["type"] in ("literal_error", "union_tag_invalid", "enum", "greater_than_equal", "less_than_equal"):
        return Problem(_shown(place), "value", first["msg"])
    same = [_TYPE_WORDS[e["type"]] for e in errors if _place(e["loc"]) == place and e["type"] in _TYPE_WORDS]
    if "a number" in same:  # an integer is a number
        same = [w for w in same if w != "an integer"]
    wanted = " or ".join(dict.fromkeys(same)) if same else first["msg"]
    return Problem(_shown(place), "type", wanted)


_SHOWN = 12  # the most of a place a message names (a deep one is cut there)


def _place(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    return tuple(p for p in loc if not _is_union_member(p))


def _shown(place: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A place as a message names it: a deep one cut after its first steps."""
    return place if len(place) <= _SHOWN else (*place[:_SHOWN], "…")
