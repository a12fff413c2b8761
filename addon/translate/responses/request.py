"""A Responses request → the chat-completions request (`responses_request`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from addon.translate.responses.errors import STATELESS, bad_request
from addon.translate.responses.messages import input_messages, join_adjacent_system
from addon.translate.responses.tools import function_tools, tool_choice
from addon.translate.upstream import Think, Translation
from addon.wire.responses import Other, ResponsesRequest, describe

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.chat.completion_create_params import ResponseFormat
    from openai.types.shared_params.response_format_json_schema import JSONSchema

    from addon.wire.model import JSON
    from addon.wire.openai import ChatCompletionRequest
    from addon.wire.responses import TextFormat


# Ollama's effort → think mapping (openai.go thinkFromReasoningEffort), with its error text.
_EFFORT_THINK: dict[str, Think] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}
# Accepted and answered as Ollama answers them, with nothing to send upstream.
_ACCEPTED = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "user",
    "metadata",
    "truncation",
    "include",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "prompt",
    "stream_options",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "client_metadata",
}
# Accepted, but what they ask for is not done: reported in the warnings.
_NOT_DONE = {"top_logprobs", "max_tool_calls", "context_management"}


def responses_request(body: dict[str, JSON], upstream_model: str) -> Translation:
    """A Responses request body → the chat-completions request. Raises `ResponsesError` (400) for what
    cannot be translated.

    A reasoning effort becomes a soft `think` (Codex asks for one in every request): the caller sends
    it in its upstream's think style, to a model that can think.
    """
    try:
        request = ResponsesRequest.model_validate(body)
    except ValidationError as e:
        raise bad_request(*describe(e)) from None
    _refuse_state(request)
    if request.input is None:
        raise bad_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    warnings: list[str] = []
    messages: list[ChatCompletionMessageParam] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    conversation, dropped_reasoning = input_messages(request.input)
    messages = join_adjacent_system(messages + conversation)
    if dropped_reasoning:
        warnings.append(
            f"{dropped_reasoning} reasoning input item(s) were dropped: chat completions has no portable field for them"
        )

    chat: ChatCompletionRequest = {"model": upstream_model, "messages": messages}
    tools = function_tools(request.tools or [], warnings)
    if tools:
        chat["tools"] = tools
        if request.tool_choice is not None:
            chat["tool_choice"], chat["tools"] = tool_choice(request.tool_choice, tools)
        if request.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = request.parallel_tool_calls
    elif request.tool_choice is not None and request.tool_choice != "auto" and request.tool_choice != "none":
        raise bad_request("tool_choice needs tools: the request declares none.", "tool_choice", "invalid_value")

    if request.text is not None:
        if request.text.verbosity is not None:
            warnings.append("text.verbosity was ignored: chat completions has no portable equivalent")
        if (fmt := _response_format(request.text.format)) is not None:
            chat["response_format"] = fmt
    think = _think(request.reasoning.effort if request.reasoning else None)
    if request.max_output_tokens is not None:
        chat["max_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        chat["temperature"] = request.temperature
    if request.top_p is not None:
        chat["top_p"] = request.top_p
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    not_done = sorted(k for k in body if k in _NOT_DONE and body[k] is not None)
    if not_done:
        warnings.append(f"fields with no chat-completions equivalent were ignored: {', '.join(not_done)}")
    unknown = sorted(k for k in body if k not in _ACCEPTED and k not in _NOT_DONE)
    if unknown:
        warnings.append(f"unknown fields were ignored: {', '.join(unknown)}")
    return Translation("chat/completions", chat, {}, warnings, think, True, bool(request.stream))


def _refuse_state(request: ResponsesRequest) -> None:
    for name, value in (("previous_response_id", request.previous_response_id), ("conversation", request.conversation)):
        if value is not None and value != "":
            raise bad_request(f"'{name}' is not supported: {STATELESS}.", name, "unsupported_parameter")
    if request.store is True:
        raise bad_request(
            f"'store: true' is not supported: {STATELESS}; send 'store: false' or leave it out.",
            "store",
            "unsupported_value",
        )
    if request.background is True:
        raise bad_request(f"'background: true' is not supported: {STATELESS}.", "background", "unsupported_value")
    if request.prompt is not None:
        raise bad_request(
            f"'prompt' (a stored prompt) is not supported: {STATELESS}.", "prompt", "unsupported_parameter"
        )


def _response_format(fmt: TextFormat | None) -> ResponseFormat | None:
    if fmt is None or (isinstance(fmt, Other) and fmt.type == "text"):
        return None
    if isinstance(fmt, Other):
        if fmt.type == "json_object":
            return {"type": "json_object"}
        raise bad_request(
            f"Invalid value for 'text.format.type': {fmt.type!r}; expected text, json_object or json_schema.",
            "text.format.type",
            "invalid_value",
        )
    wrapped: JSONSchema = {"name": fmt.name or "response", "schema": fmt.json_schema}
    if fmt.description is not None:
        wrapped["description"] = fmt.description
    if fmt.strict is not None:
        wrapped["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": wrapped}


def _think(effort: str | None) -> Think:
    if not effort:
        return None
    if effort not in _EFFORT_THINK:
        raise bad_request(
            f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")',
            "reasoning.effort",
            "invalid_value",
        )
    return _EFFORT_THINK[effort]
