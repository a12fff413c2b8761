"""The Anthropic Messages API's request (`POST /v1/messages`, `count_tokens`) as the proxy reads it:
strict pydantic models.

Every field the translation reads has its type here, so that `translate.anthropic` sees no odd value:
a field of the wrong type or a missing one is a 400 in Anthropic's shape (`describe`: "where: what",
as Anthropic words it) before anything is translated. Fields the proxy ignores (`cache_control`,
`metadata`, `citations` …) are kept as they came (`extra="allow"`). Content blocks and sources are
tagged unions on `type`, with an `Other…` member for the kinds the translation drops or refuses
with its own words; messages are tagged by `role`, so that each role has its own blocks.

The anthropic SDK's `MessageCreateParams` describes the same request for type checkers; these
models are what is checked at run time, and only as far as the proxy reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypedDict

from pydantic import Discriminator, Field, ValidationError

from addon.wire.model import JSON, TAG, Number, WireModel, first_problem, tagged

NonEmpty = Annotated[str, Field(min_length=1)]


def _by(key: str, kinds: dict[str, str]) -> Callable[[Any], str]:
    """A tagged union's discriminator: the member for the value's `key`, else `other`."""

    def tag(value: Any) -> str:
        kind = value.get(key) if isinstance(value, dict) else None
        return TAG + (kinds[kind] if isinstance(kind, str) and kind in kinds else "other")

    return tag


class OtherBlock(WireModel):
    """A block (or source) of a kind the translation drops or refuses: its `type` is anything."""

    type: JSON = None


class TextBlock(WireModel):
    type: Literal["text"]
    text: str


SystemBlock = Annotated[
    Annotated[TextBlock, tagged("text")] | Annotated[OtherBlock, tagged("other")],
    Discriminator(_by("type", {"text": "text"})),
]
Text = str | list[SystemBlock]  # a system prompt, a system turn, a document's content: text only


# ---------------------------------------------------------------------------------------------
# Images and documents


class Base64Source(WireModel):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(WireModel):
    type: Literal["url"]
    url: NonEmpty


class TextSource(WireModel):
    type: Literal["text"]
    data: str


class ContentSource(WireModel):
    type: Literal["content"]
    content: Text


Source = Annotated[
    Annotated[Base64Source, tagged("base64")]
    | Annotated[URLSource, tagged("url")]
    | Annotated[TextSource, tagged("text")]
    | Annotated[ContentSource, tagged("content")]
    | Annotated[OtherBlock, tagged("other")],
    Discriminator(_by("type", {"base64": "base64", "url": "url", "text": "text", "content": "content"})),
]


class ImageBlock(WireModel):
    type: Literal["image"]
    source: Source | None = None


class DocumentBlock(WireModel):
    type: Literal["document"]
    source: Source | None = None


# ---------------------------------------------------------------------------------------------
# Tool uses and results


class ToolUseBlock(WireModel):
    type: Literal["tool_use"]
    id: NonEmpty
    name: NonEmpty
    input: dict[str, JSON] = Field(default_factory=dict)


class ThinkingBlock(WireModel):
    """Earlier turns' reasoning: dropped (OpenAI upstreams take none), so nothing of it is read."""

    type: Literal["thinking", "redacted_thinking"]


class ToolReference(WireModel):
    """A tool search's result: loads a `defer_loading` tool."""

    type: Literal["tool_reference"]
    tool_name: str


ToolResultItem = Annotated[
    Annotated[TextBlock, tagged("text")]
    | Annotated[ImageBlock, tagged("image")]
    | Annotated[DocumentBlock, tagged("document")]
    | Annotated[ToolReference, tagged("tool_reference")]
    | Annotated[OtherBlock, tagged("other")],
    Discriminator(
        _by("type", {"text": "text", "image": "image", "document": "document", "tool_reference": "tool_reference"})
    ),
]


class ToolResultBlock(WireModel):
    type: Literal["tool_result"]
    tool_use_id: NonEmpty
    content: str | list[ToolResultItem] | None = None
    is_error: bool | None = None


# ---------------------------------------------------------------------------------------------
# Messages

_THINKING = {"thinking": "thinking", "redacted_thinking": "thinking"}
_USER_BLOCKS = {
    "text": "text",
    "image": "image",
    "document": "document",
    "tool_result": "tool_result",
    **_THINKING,
}  # a tool use in a user turn is refused with the translation's words
UserBlock = Annotated[
    Annotated[TextBlock, tagged("text")]
    | Annotated[ImageBlock, tagged("image")]
    | Annotated[DocumentBlock, tagged("document")]
    | Annotated[ToolResultBlock, tagged("tool_result")]
    | Annotated[ThinkingBlock, tagged("thinking")]
    | Annotated[OtherBlock, tagged("other")],
    Discriminator(_by("type", _USER_BLOCKS)),
]
AssistantBlock = Annotated[
    Annotated[TextBlock, tagged("text")]
    | Annotated[ToolUseBlock, tagged("tool_use")]
    | Annotated[ThinkingBlock, tagged("thinking")]
    | Annotated[OtherBlock, tagged("other")],
    Discriminator(_by("type", {"text": "text", "tool_use": "tool_use", **_THINKING})),
]


class UserMessage(WireModel):
    role: Literal["user"]
    content: str | list[UserBlock]


class AssistantMessage(WireModel):
    role: Literal["assistant"]
    content: str | list[AssistantBlock]


class SystemMessage(WireModel):
    """A `system` turn inside `messages` (Claude Code sends them)."""

    role: Literal["system"]
    content: Text


class OtherMessage(WireModel):
    """A message whose role the API does not have: refused with the translation's words."""

    role: JSON = None


Message = Annotated[
    Annotated[UserMessage, tagged("user")]
    | Annotated[AssistantMessage, tagged("assistant")]
    | Annotated[SystemMessage, tagged("system")]
    | Annotated[OtherMessage, tagged("other")],
    Discriminator(_by("role", {"user": "user", "assistant": "assistant", "system": "system"})),
]


# ---------------------------------------------------------------------------------------------
# Tools, thinking, output, the request


class Tool(WireModel):
    """A tool: a custom one (no `type`, or `custom`) has a name and an input schema; others are built in."""

    type: str | None = None
    name: str | None = None
    description: str | None = None
    input_schema: dict[str, object] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None


class ToolChoice(WireModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(WireModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class OutputFormat(WireModel):
    type: Literal["json_schema"]
    json_schema: dict[str, object] = Field(alias="schema")


class OutputConfig(WireModel):
    effort: str | None = None
    format: OutputFormat | None = None


class MessagesRequest(WireModel):
    """POST /v1/messages (and count_tokens, which needs no `max_tokens`), the fields the translation reads."""

    model: str
    max_tokens: int | None = None
    messages: list[Message] | None = None
    system: Text | None = None
    stream: bool = False
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None
    context_management: JSON = None


class ErrorObject(TypedDict):
    type: str
    message: str


class ErrorBody(TypedDict):
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`: an Anthropic error."""

    type: Literal["error"]
    error: ErrorObject
    request_id: str


def describe(error: ValidationError) -> str:
    """The first problem as Anthropic words it: `messages.0.content.1.text: Field required`."""
    problem = first_problem(error)
    where = ".".join(str(p) for p in problem.place) or "body"
    if problem.kind == "missing":
        return f"{where}: Field required"
    if problem.kind == "type":
        return f"{where}: must be {problem.wanted}"
    return f"{where}: {problem.wanted}"
