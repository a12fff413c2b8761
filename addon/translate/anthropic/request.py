"""An Anthropic Messages request → the OpenAI chat request (`messages_request`), and the checks of
`count_tokens`; the conversation itself is translated in `messages`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from addon.translate.anthropic.errors import invalid
from addon.translate.anthropic.messages import chat_messages, fold_system_turns, system_messages
from addon.translate.anthropic.tokens import estimate_input_tokens
from addon.translate.upstream import Think, Translation
from addon.wire.anthropic import MessagesRequest, describe

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionToolChoiceOptionParam, ChatCompletionToolParam
    from openai.types.chat.completion_create_params import ResponseFormat
    from openai.types.shared_params import FunctionDefinition

    from addon.wire.anthropic import OutputConfig, OutputFormat, Thinking, Tool, ToolChoice
    from addon.wire.model import JSON
    from addon.wire.openai import ChatCompletionRequest


_KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "output_config",
        "output_format",
        "context_management",
    }
)
_EFFORTS: Final[dict[str, Think]] = {"low": "low", "medium": "medium", "high": "high", "max": "max", "xhigh": "high"}


def messages_request(
    body: dict[str, JSON],
    upstream_model: str,
    *,
    passthrough: bool = False,
    system_turns: str = "system",
) -> Translation:
    """An Anthropic Messages request → the OpenAI chat request. Raises AnthropicError (400).

    `think` and `max_tokens` are applied to what the model can take by the caller
    (`endpoints.base.forward`). `passthrough`: send `top_k` as an extra body field (vLLM,
    llama.cpp take it), as the passthrough_options setting says.
    `system_turns`: "system" keeps `system` turns inside `messages` as system messages where
    they are (OpenAI takes them anywhere); "user" sends those after the first user or assistant
    turn as user messages and adds earlier ones to the system prompt, for upstreams whose chat
    template refuses a system message after the start (Qwen3's, among others).
    """
    if system_turns not in ("system", "user"):
        raise ValueError(f"system_turns must be 'system' or 'user', not {system_turns!r}")
    request = _checked(body)
    if request.max_tokens is None:
        raise invalid("max_tokens: Field required")
    if request.max_tokens < 1:
        raise invalid("max_tokens: must be an integer of at least 1")
    warnings: list[str] = []
    referenced: set[str] = set()
    messages = system_messages(request.system) + chat_messages(request.messages, warnings, referenced)
    out: ChatCompletionRequest = {
        "model": upstream_model,
        "messages": fold_system_turns(messages) if system_turns == "user" else messages,
        "max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    extra: dict[str, JSON] = {}
    if request.top_k is not None:
        if passthrough:
            extra["top_k"] = request.top_k
        else:
            warnings.append(
                "top_k has no OpenAI equivalent and was not sent upstream (see the passthrough_options setting)"
            )
    if request.stop_sequences:
        out["stop"] = request.stop_sequences

    tools = _tools(request.tools or [], referenced, warnings)
    if tools:
        out["tools"] = tools
    if request.tool_choice is not None:
        _tool_choice(request.tool_choice, tools, out, warnings)

    think, soft = _think(request.thinking, request.output_config)
    if (fmt := _response_format(request.output_config, request.output_format)) is not None:
        out["response_format"] = fmt
    if request.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    if request.context_management is not None and not _only_clears_thinking(request.context_management):
        warnings.append("context_management was ignored: the proxy does not edit the conversation")
    unknown = sorted(k for k in body if k not in _KNOWN_FIELDS)
    if unknown:
        warnings.append(f"fields with no OpenAI equivalent were ignored: {', '.join(unknown)}")
    return Translation("chat/completions", out, extra, warnings, think, soft, request.stream)


def _checked(body: object) -> MessagesRequest:
    """The request read through its model: a field of the wrong type is a 400 in Anthropic's words."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("model: Field required")
    try:
        return MessagesRequest.model_validate(body)
    except ValidationError as e:
        raise invalid(describe(e)) from None


def _tools(tools: list[Tool], referenced: set[str], warnings: list[str]) -> list[ChatCompletionToolParam]:
    out: list[ChatCompletionToolParam] = []
    dropped: list[str] = []
    for number, tool in enumerate(tools):
        at = f"tools.{number}"
        if tool.type not in (None, "custom"):
            dropped.append(f"{tool.name or '?'} ({tool.type})")
            continue
        if not tool.name:
            raise invalid(f"{at}.name: Field required")
        if tool.input_schema is None:
            raise invalid(f"{at}.input_schema: Field required (a JSON schema object)")
        if tool.defer_loading is True and tool.name not in referenced:
            continue  # not loaded by a tool search yet: the model does not see it
        function: FunctionDefinition = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = tool.input_schema
        if tool.strict is not None:
            function["strict"] = tool.strict
        out.append({"type": "function", "function": function})
    if dropped:
        warnings.append(f"built-in tools cannot run upstream and were not sent: {', '.join(dropped)}")
    return out


_CHOICES: Final[dict[str, ChatCompletionToolChoiceOptionParam]] = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(
    choice: ToolChoice, tools: list[ChatCompletionToolParam], out: ChatCompletionRequest, warnings: list[str]
) -> None:
    if choice.type == "tool" and not choice.name:
        raise invalid("tool_choice.name: Field required")
    if not tools:  # OpenAI refuses tool_choice without tools
        if choice.type != "none":
            warnings.append("tool_choice was ignored: no tools are sent upstream")
        return
    if choice.type == "tool" and choice.name:
        if choice.name not in {t["function"]["name"] for t in tools if t["type"] == "function"}:
            raise invalid(f"tool_choice.name: no tool named {choice.name!r} in tools")
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        out["tool_choice"] = _CHOICES[choice.type]
    if choice.disable_parallel_tool_use is True and choice.type != "none":
        out["parallel_tool_calls"] = False


def _think(thinking: Thinking | None, output_config: OutputConfig | None) -> tuple[Think, bool]:
    """(think, soft): `thinking` enabled/disabled decides; adaptive or absent leaves it to `effort`."""
    effort: Think = None
    if output_config is not None and output_config.effort is not None:
        if output_config.effort.lower() not in _EFFORTS:
            raise invalid("output_config.effort: must be one of low, medium, high, max")
        effort = _EFFORTS[output_config.effort.lower()]
    if thinking is None:
        return effort, effort is not None
    if thinking.type == "disabled":
        return False, False
    if thinking.type == "enabled":
        if thinking.budget_tokens is not None and thinking.budget_tokens < 1:
            raise invalid("thinking.budget_tokens: must be a positive integer")
        return effort or True, False
    return effort, effort is not None  # adaptive: the model decides; effort only as a hint


def _response_format(output_config: OutputConfig | None, output_format: OutputFormat | None) -> ResponseFormat | None:
    """Structured outputs (`output_config.format`, the beta `output_format`) → OpenAI json_schema."""
    fmt = output_config.format if output_config is not None and output_config.format is not None else output_format
    if fmt is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.json_schema, "strict": True}}


def _only_clears_thinking(management: JSON) -> bool:
    """Claude Code asks to clear old thinking on every request: done anyway, as thinking is not sent."""
    edits = management.get("edits") if isinstance(management, dict) else None
    return isinstance(edits, list) and all(
        isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking") for e in edits
    )


def count_tokens(body: dict[str, JSON]) -> dict[str, int]:
    """`POST /v1/messages/count_tokens` → `{"input_tokens": n}`, the estimate of `tokens`.

    The request is checked as a Messages request would be (without `max_tokens`): AnthropicError 400.
    """
    request = _checked(body)
    referenced: set[str] = set()
    system_messages(request.system)
    chat_messages(request.messages, [], referenced)
    _tools(request.tools or [], referenced, [])
    return {"input_tokens": estimate_input_tokens(body)}
