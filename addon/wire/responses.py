"""The Responses API's request (`POST /v1/responses`) as the proxy reads it: strict pydantic models.

Every field the translation reads has its type here, so that `translate.responses` sees no odd value:
a field of the wrong type, a missing one, or a value outside what the field takes is a 400 in
OpenAI's error shape (`describe`: message, param, code) before anything is translated. Fields the
proxy only echoes or ignores are kept as they came (`extra="allow"`). Tagged unions (`type`) carry
an `Other…` member for the kinds the translation refuses or drops with its own words.

The openai SDK's `ResponseCreateParams` describes the same request for type checkers; these models
are what is checked at run time, and only as far as the proxy reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, ValidationError, field_validator

from addon.wire.model import JSON, TAG, Number, WireModel, first_problem, tagged

NonEmpty = Annotated[str, Field(min_length=1)]

ROLES = ("user", "assistant", "system", "developer")


def _by_type(kinds: dict[str, str], untyped: str | None = None) -> Callable[[Any], str]:
    """A tagged union's discriminator: the member for `type` (`untyped` when an object has none), else `other`."""

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind is None and untyped is not None and isinstance(value, dict) and "role" in value:
            return TAG + untyped
        return TAG + (kinds[kind] if isinstance(kind, str) and kind in kinds else "other")

    return tag


class Other(WireModel):
    """A member of a tagged union of a kind the translation refuses or drops (its `type`: anything)."""

    type: JSON = None


# ---------------------------------------------------------------------------------------------
# Content parts


class TextPart(WireModel):
    type: Literal["input_text", "output_text", "text"]
    text: str


class RefusalPart(WireModel):
    type: Literal["refusal"]
    refusal: str = ""


class ImageURL(WireModel):
    url: str | None = None


class ImagePart(WireModel):
    type: Literal["input_image"]
    image_url: str | ImageURL | None = None
    file_id: str | None = None
    detail: str | None = None


ContentPart = Annotated[
    Annotated[TextPart, tagged("text")]
    | Annotated[RefusalPart, tagged("refusal")]
    | Annotated[ImagePart, tagged("image")]
    | Annotated[Other, tagged("other")],
    Discriminator(
        _by_type(
            {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal", "input_image": "image"}
        )
    ),
]
Content = str | list[ContentPart]


# ---------------------------------------------------------------------------------------------
# Input items


class MessageItem(WireModel):
    type: Literal["message"] = "message"
    role: str
    content: Content | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"{role!r}; expected user, assistant, system or developer.")
        return role


class FunctionCallItem(WireModel):
    type: Literal["function_call"]
    call_id: NonEmpty
    name: NonEmpty
    arguments: JSON = None
    namespace: str | None = None


ToolOutput = str | list[ContentPart] | dict[str, JSON] | bool | int | float | None


class FunctionCallOutputItem(WireModel):
    type: Literal["function_call_output"]
    call_id: NonEmpty
    output: ToolOutput = None


class ReasoningItem(WireModel):
    type: Literal["reasoning"]


InputItem = Annotated[
    Annotated[MessageItem, tagged("message")]
    | Annotated[FunctionCallItem, tagged("function_call")]
    | Annotated[FunctionCallOutputItem, tagged("function_call_output")]
    | Annotated[ReasoningItem, tagged("reasoning")]
    | Annotated[Other, tagged("other")],
    Discriminator(
        _by_type(
            {
                "message": "message",
                "function_call": "function_call",
                "function_call_output": "function_call_output",
                "reasoning": "reasoning",
            },
            untyped="message",
        )
    ),
]


# ---------------------------------------------------------------------------------------------
# Tools


class FunctionTool(WireModel):
    type: Literal["function"]
    name: NonEmpty
    description: str | None = None
    parameters: dict[str, object] | None = None  # a JSON schema
    strict: bool | None = None


class NamespaceTool(WireModel):
    """A group of function tools (Codex sends one for its sub-agents); namespaces may nest."""

    type: Literal["namespace"]
    name: NonEmpty
    tools: list[Tool]


Tool = Annotated[
    Annotated[FunctionTool, tagged("function")]
    | Annotated[NamespaceTool, tagged("namespace")]
    | Annotated[Other, tagged("other")],
    Discriminator(_by_type({"function": "function", "namespace": "namespace"})),
]


class FunctionChoice(WireModel):
    type: Literal["function"]
    name: str


class AllowedTool(WireModel):
    type: JSON = None
    name: JSON = None


class AllowedToolsChoice(WireModel):
    type: Literal["allowed_tools"]
    mode: str = "auto"
    tools: list[AllowedTool] = Field(default_factory=list)


ToolChoice = (
    str
    | Annotated[
        Annotated[FunctionChoice, tagged("function")]
        | Annotated[AllowedToolsChoice, tagged("allowed_tools")]
        | Annotated[Other, tagged("other")],
        Discriminator(_by_type({"function": "function", "allowed_tools": "allowed_tools"})),
    ]
)


# ---------------------------------------------------------------------------------------------
# Output format, reasoning, the request


class JSONSchemaFormat(WireModel):
    type: Literal["json_schema"]
    json_schema: dict[str, object] = Field(alias="schema")
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    Annotated[JSONSchemaFormat, tagged("json_schema")] | Annotated[Other, tagged("other")],
    Discriminator(_by_type({"json_schema": "json_schema"})),
]


class TextConfig(WireModel):
    format: TextFormat | None = None
    verbosity: str | None = None


class Reasoning(WireModel):
    effort: str | None = None  # one of Ollama's efforts (`translate.responses` says which, in Ollama's words)
    summary: str | None = None


class ResponsesRequest(WireModel):
    """POST /v1/responses, the fields the translation reads."""

    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    stream: bool | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, JSON] | None = None
    prompt: JSON = None


NamespaceTool.model_rebuild()


def describe(error: ValidationError) -> tuple[str, str, str]:
    """(message, param, code) for the first problem, as OpenAI words them."""
    problem = first_problem(error)
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.place).lstrip(".")
    if problem.kind == "missing":
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    if problem.kind == "type":
        return f"Invalid type for '{param}': expected {problem.wanted}.", param, "invalid_type"
    return f"Invalid value for '{param}': {problem.wanted}", param, "invalid_value"  # (the validators word it so)
