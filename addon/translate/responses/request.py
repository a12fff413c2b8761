"""A Responses request → the chat-completions request (`responses_request`)."""

from __future__ import annotations

import json
from typing import Any

from addon.translate.responses.errors import STATELESS, bad_request
from addon.translate.responses.messages import input_messages, join_adjacent_system
from addon.translate.responses.tools import function_tools, tool_choice
from addon.translate.values import is_int, is_number

# Ollama's `think` values (False, "low", "medium", "high", "max") or None for "not asked":
# the caller sends it the way its upstream takes it (reasoning_effort, chat_template_kwargs, …).
type Think = bool | str | None


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


def responses_request(
    body: dict[str, Any], upstream_model: str, *, max_tokens_field: str = "max_tokens"
) -> tuple[dict[str, Any], Think, list[str]]:
    """A Responses request body → (chat-completions body, think, warnings).

    `think` is None when the request does not ask for a reasoning effort; the caller sends it in
    its upstream's think style. Raises `ResponsesError` (400) for what cannot be translated.
    """
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    _refuse_state(body)
    warnings: list[str] = []
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("Invalid type for 'instructions': expected a string.", "instructions", "invalid_type")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages = join_adjacent_system(messages + input_messages(body.get("input"), warnings))

    chat: dict[str, Any] = {"model": upstream_model, "messages": messages}
    tools = function_tools(body.get("tools"), warnings)
    if tools:
        chat["tools"] = tools
        choice = body.get("tool_choice")
        if choice is not None:
            chat["tool_choice"], chat["tools"] = tool_choice(choice, tools)
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif body.get("tool_choice") not in (None, "auto", "none"):
        raise bad_request("tool_choice needs tools: the request declares none.", "tool_choice", "invalid_value")

    if (fmt := _response_format(body.get("text"), warnings)) is not None:
        chat["response_format"] = fmt
    think = _think(body.get("reasoning"))
    if (limit := body.get("max_output_tokens")) is not None:
        if not is_int(limit) or limit < 1:
            raise bad_request(
                "Invalid 'max_output_tokens': expected an integer of at least 1.", "max_output_tokens", "invalid_value"
            )
        chat[max_tokens_field] = limit
    for name in ("temperature", "top_p"):
        if (value := body.get(name)) is not None:
            if not is_number(value):
                raise bad_request(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
            chat[name] = value
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    not_done = sorted(k for k in body if k in _NOT_DONE and body[k] is not None)
    if not_done:
        warnings.append(f"fields with no chat-completions equivalent were ignored: {', '.join(not_done)}")
    unknown = sorted(k for k in body if k not in _ACCEPTED and k not in _NOT_DONE)
    if unknown:
        warnings.append(f"unknown fields were ignored: {', '.join(unknown)}")
    return chat, think, warnings


def _refuse_state(body: dict[str, Any]) -> None:
    for name in ("previous_response_id", "conversation"):
        if body.get(name) not in (None, ""):
            raise bad_request(f"'{name}' is not supported: {STATELESS}.", name, "unsupported_parameter")
    if body.get("store") is True:
        raise bad_request(
            f"'store: true' is not supported: {STATELESS}; send 'store: false' or leave it out.",
            "store",
            "unsupported_value",
        )
    if body.get("background") is True:
        raise bad_request(f"'background: true' is not supported: {STATELESS}.", "background", "unsupported_value")
    if body.get("prompt") is not None:
        raise bad_request(
            f"'prompt' (a stored prompt) is not supported: {STATELESS}.", "prompt", "unsupported_parameter"
        )


def _response_format(text: Any, warnings: list[str]) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad_request("Invalid type for 'text': expected an object.", "text", "invalid_type")
    if text.get("verbosity") is not None:
        warnings.append("text.verbosity was ignored: chat completions has no portable equivalent")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise bad_request(
                "Missing required parameter: 'text.format.schema'.", "text.format.schema", "missing_required_parameter"
            )
        wrapped: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        if isinstance(fmt.get("description"), str):
            wrapped["description"] = fmt["description"]
        if isinstance(fmt.get("strict"), bool):
            wrapped["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": wrapped}
    raise bad_request(
        f"Invalid value for 'text.format.type': {kind!r}; expected text, json_object or json_schema.",
        "text.format.type",
        "invalid_value",
    )


def _think(reasoning: Any) -> Think:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise bad_request("Invalid type for 'reasoning': expected an object.", "reasoning", "invalid_type")
    effort = reasoning.get("effort")
    if effort is None or effort == "":
        return None
    if effort not in _EFFORT_THINK:
        raise bad_request(
            f'invalid reasoning value: {json.dumps(effort)} (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")',
            "reasoning.effort",
            "invalid_value",
        )
    return _EFFORT_THINK[effort]
