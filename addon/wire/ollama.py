"""The Ollama API's wire shapes: strict request models, typed answers, and the JSON encoding.

Requests are pydantic models, strict like Ollama's Go decoder ("1" is no number), keeping
unknown fields so that they can be reported; `describe` turns a validation error into one
sentence in the spirit of Ollama's own. Answers are `TypedDict`s: plain dicts at run time, typed
for the reader and for mypy. `dumps_body` / `dumps_line` encode them compactly, as Ollama does.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import Field, ValidationError, field_validator, model_validator

from addon.wire.model import WireModel, first_problem

Number = int | float

JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"


class OllamaModel(WireModel):
    """The base of every request model: strict like Ollama's Go decoder ("1" is no number), unknown
    fields kept so that they can be reported (`wire.model.WireModel`)."""


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]

# Ollama's integer options (Go ints): a number with a fraction, or beyond int64, is refused as its decoder does.
INTEGER_OPTIONS = (
    "num_predict",
    "top_k",
    "seed",
    "repeat_last_n",
    "num_ctx",
    "num_keep",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
)


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

    @model_validator(mode="before")
    @classmethod
    def _integers(cls, data: Any) -> Any:
        """Integer options as integers in int64's range (a float without a fraction, 128.0, is taken as 128)."""
        if not isinstance(data, dict):
            return data
        for name in INTEGER_OPTIONS:
            value = data.get(name)
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue  # (strict validation reports a value of another type)
            if isinstance(value, float):
                if not value.is_integer() or not INT64_MIN <= value <= INT64_MAX:
                    raise ValueError(f"invalid value for options.{name}: {value!r} is not an integer (int64)")
                data = {**data, name: int(value)}
            elif not INT64_MIN <= value <= INT64_MAX:
                raise ValueError(f"invalid value for options.{name}: {value} is beyond int64")
        return data


class ToolCallFunction(OllamaModel):
    """A tool call's function, as a client sends it back in an assistant message."""

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    index: int | None = None


class ToolCall(OllamaModel):
    """A tool call in an assistant message of the history."""

    id: str | None = None
    type: str | None = None
    function: ToolCallFunction


class Message(OllamaModel):
    """One message of a chat request."""

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
    """What chat and generate requests share."""

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
        raise ValueError(f'invalid think value: {value!r} (must be "high", "medium", "low", "max", true, or false)')


class ChatRequest(_Generation):
    """POST /api/chat."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generation):
    """POST /api/generate."""

    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[Int64] | None = None
    raw: bool = False
    images: list[str] | None = None


def describe(error: ValidationError) -> str:
    """One short sentence for the first problem, in the spirit of Ollama's Go errors."""
    problem = first_problem(error)
    where = ".".join(str(p) for p in problem.place)
    if problem.kind == "said":
        return problem.wanted
    if problem.kind == "missing":
        return f"{where} is required"
    if problem.kind == "value":
        return f"invalid value for {where}: {problem.wanted.lower()}"
    return f"invalid request: {where} must be {problem.wanted}"


class EmbedRequest(OllamaModel):
    """POST /api/embed."""

    model: str = ""
    input: Any = None  # a string or a list of strings; checked by the endpoint with Ollama's message
    truncate: bool | None = None
    dimensions: Int64 | None = None
    options: Options | None = None
    keep_alive: Number | str | None = None


class EmbeddingsRequest(OllamaModel):
    """POST /api/embeddings (the legacy route)."""

    model: str = ""
    prompt: str = ""
    options: Options | None = None
    keep_alive: Number | str | None = None


class ModelRequest(OllamaModel):
    """POST /api/show and /api/pull: `model`, or the older `name` that Continue still sends."""

    model: str = ""
    name: str = ""
    stream: bool = True
    verbose: bool | None = None
    insecure: bool | None = None

    @model_validator(mode="after")
    def _older_name(self) -> ModelRequest:
        if not self.model:
            self.model = self.name
        return self


# ---------------------------------------------------------------------------------------------
# Answers


class FunctionCall(TypedDict):
    index: int
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(TypedDict):
    id: NotRequired[str]
    function: FunctionCall


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str
    thinking: NotRequired[str]
    tool_calls: NotRequired[list[OllamaToolCall]]


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int] | None


class Logprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class Metrics(TypedDict):
    """The durations (ns) and token counts of a final chunk."""

    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class Chunk(TypedDict, total=False):
    """One line of a chat or generate stream, or a whole (`done: true`) chat or generate answer."""

    model: str
    created_at: str
    message: AssistantMessage  # chat
    response: str  # generate
    thinking: str  # generate
    tool_calls: list[OllamaToolCall]  # generate
    done: bool
    done_reason: str
    context: list[int]  # generate
    logprobs: list[Logprob]
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class EmbedAnswer(TypedDict):
    model: str
    embeddings: list[list[float]]
    total_duration: NotRequired[int]
    load_duration: NotRequired[int]
    prompt_eval_count: NotRequired[int]


class ErrorAnswer(TypedDict):
    error: str


# ---------------------------------------------------------------------------------------------
# Encoding

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # compact, like Ollama's


def dumps_body(obj: Any) -> bytes:
    """A JSON body."""
    return utf8(_encode(obj))


def dumps_line(obj: Any) -> bytes:
    """One NDJSON line."""
    return utf8(_encode(obj)) + b"\n"


def utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (JSON allows "\\ud800") becomes U+FFFD, as Go's decoder makes it."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
