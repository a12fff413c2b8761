"""Pydantic models of the Ollama requests the addon accepts, and readable validation errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Number = int | float


class OllamaModel(BaseModel):
    # Strict like Ollama's Go decoder ("1" is no number); unknown fields are kept so they can be reported.
    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or ())


class Options(OllamaModel):
    """The `options` object. Load-time and unknown keys are accepted and reported, as Ollama does."""

    num_predict: Number | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: Number | None = None
    min_p: Number | None = None
    typical_p: Number | None = None
    seed: Number | None = None
    stop: list[str] | str | None = None
    frequency_penalty: Number | None = None
    presence_penalty: Number | None = None
    repeat_penalty: Number | None = None
    repeat_last_n: Number | None = None
    num_ctx: Number | None = None
    num_keep: Number | None = None


class ToolCallFunction(OllamaModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    index: int | None = None


class ToolCall(OllamaModel):
    id: str | None = None
    type: str | None = None
    function: ToolCallFunction


class Message(OllamaModel):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        role = role.lower()
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"invalid role {role!r}: must be system, user, assistant or tool")
        return role


Format = Literal["json", ""] | dict[str, Any] | None
Think = bool | Literal["low", "medium", "high", "max"] | None


class _Generation(OllamaModel):
    model: str
    stream: bool = True
    format: Format = None
    options: Options | None = None
    keep_alive: Number | str | None = None
    think: Think = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    truncate: bool | None = None
    shift: bool | None = None

    @field_validator("think", mode="before")
    @classmethod
    def _think_value(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool) or value in ("low", "medium", "high", "max"):
            return value
        raise ValueError(
            f'invalid think value: {value!r} (must be "high", "medium", "low", "max", true, or false)'
        )


class ChatRequest(_Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generation):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "missing": "present",
}


_UNION_MEMBERS = {"int", "float", "str", "bool", "none"}


def _is_union_member(part: object) -> bool:
    """Pydantic names the member of a union in an error's location; the client sent no such field."""
    text = str(part)
    return text in _UNION_MEMBERS or "[" in text or text.startswith("function-")


def describe(error: ValidationError) -> str:
    """One short sentence for the first problem, in the spirit of Ollama's Go errors."""
    errors = error.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"] if not _is_union_member(p))
    # Unions report one error per member; the most specific message is the custom one if any.
    for item in errors:
        if item["type"] == "value_error":
            return str(item["ctx"]["error"])
    kind = first["type"]
    if kind == "missing":
        return f"{where} is required"
    if kind in ("literal_error", "less_than_equal", "greater_than_equal"):
        return f"invalid value for {where}: {first['msg'].lower()}"
    kinds = [e["type"] for e in errors if len(e["loc"]) == len(first["loc"]) or e["loc"][:-1] == first["loc"][:-1]]
    if "int_type" in kinds and "float_type" in kinds:
        return f"invalid request: {where} must be a number"
    wanted = next((_TYPE_WORDS[k] for k in kinds if k in _TYPE_WORDS), None)
    if wanted:
        return f"invalid request: {where} must be {wanted}"
    return f"invalid request: {where}: {first['msg']}"
