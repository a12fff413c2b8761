"""A whole OpenAI chat completion → an Anthropic Message; the usage, stop-reason and tool-input rules the
stream shares."""

from __future__ import annotations

import json
from typing import Any

from addon.translate.anthropic.errors import AnthropicError, error_text, new_id
from addon.translate.values import dict_or, is_number


def _bad_answer(why: str) -> AnthropicError:
    return AnthropicError(502, f"the upstream's answer is not a chat completion: {why}", "api_error")


def _token_count(usage: Any, name: str) -> int:
    """A usage count as an int (absent: 0); anything not a finite number is an upstream error."""
    if not isinstance(usage, dict):
        return 0
    value = usage.get(name)
    if value is None:
        return 0
    if not is_number(value) or value < 0:
        raise _bad_answer(f"usage.{name} is not a number ({value!r})")
    return int(value)


def usage_of(usage: Any) -> dict[str, int]:
    """OpenAI usage → Anthropic usage. Cached prompt tokens count as `cache_read_input_tokens`,
    which Anthropic keeps out of `input_tokens`."""
    if usage is not None and not isinstance(usage, dict):
        raise _bad_answer("usage is not an object")
    prompt = _token_count(usage, "prompt_tokens")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = min(_token_count(details, "cached_tokens"), prompt) if isinstance(details, dict) else 0
    out = {"input_tokens": prompt - cached, "output_tokens": _token_count(usage, "completion_tokens")}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def stop_reason(finish_reason: Any, has_tool_calls: bool) -> str:
    """OpenAI finish_reason → Anthropic stop_reason (tool calls win over "stop")."""
    if finish_reason == "length":
        return "max_tokens"
    if finish_reason == "content_filter":
        return "refusal"
    if has_tool_calls or finish_reason in ("tool_calls", "function_call"):
        return "tool_use"
    return "end_turn"


def matched_stop(choice: dict[str, Any]) -> str | None:
    """The stop string that ended the answer, where the upstream says (vLLM's `stop_reason`)."""
    matched = choice.get("stop_reason")
    return matched if choice.get("finish_reason") == "stop" and isinstance(matched, str) and matched else None


def reasoning_of(part: dict[str, Any]) -> str:
    """Reasoning text as upstreams name it: `reasoning_content` (DeepSeek, vLLM, llama.cpp) or `reasoning`."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(value := part.get(name), str) and value:
            return value
    return ""


def parse_input(arguments: Any) -> tuple[dict[str, Any], str | None]:
    """OpenAI tool-call arguments (JSON text) → a tool_use `input` object, with a warning when unparsable.

    Anthropic's `input` must be an object: text that is not a JSON object becomes {} and is
    reported (the agent's tool then refuses the call and the model can try again), rather than
    failing the whole answer.
    """
    if isinstance(arguments, dict):
        return arguments, None
    if arguments is None or arguments == "":
        return {}, None
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value, None
    return {}, f"tool call arguments are not a JSON object and were replaced by {{}}: {str(arguments)[:200]!r}"


def messages_response(answer: Any, client_model: str) -> tuple[dict[str, Any], list[str]]:
    """A whole chat.completion → (the Anthropic Message, warnings). AnthropicError 502 for a non-answer.

    `model` is the name the client sent. An upstream answer that is not a chat completion
    (`{}`, `{"error": …}`, no choices, no message, non-numeric usage) raises, never an empty message.
    """
    if not isinstance(answer, dict):
        raise _bad_answer("not a JSON object")
    if answer.get("error"):
        text = error_text({"error": answer["error"]})
        raise AnthropicError(502, f"the upstream answered with an error: {text}", "api_error")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _bad_answer("no choices")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise _bad_answer("choices[0] has no message")
    source = choice["message"]
    usage = usage_of(answer.get("usage"))
    warnings: list[str] = []
    content: list[dict[str, Any]] = []
    if thinking := reasoning_of(source):
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = source.get("content") or source.get("refusal") or ""
    if not isinstance(text, str):
        if isinstance(text, list):  # content parts, as a few upstreams answer
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
        else:
            raise _bad_answer("message.content is not text")
    if text:
        content.append({"type": "text", "text": text})
    calls = source.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad_answer("message.tool_calls is not a list")
    for call in calls:
        if not isinstance(call, dict):
            raise _bad_answer("a tool call is not an object")
        function = dict_or(call.get("function"), {})
        arguments, warning = parse_input(function.get("arguments"))
        if warning:
            warnings.append(warning)
        content.append(
            {
                "type": "tool_use",
                "id": call["id"] if isinstance(call.get("id"), str) and call["id"] else new_id("toolu"),
                "name": function.get("name") if isinstance(function.get("name"), str) else "",
                "input": arguments,
            }
        )
    matched = matched_stop(choice)
    message: dict[str, Any] = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": "stop_sequence" if matched else stop_reason(choice.get("finish_reason"), bool(calls)),
        "stop_sequence": matched,
        "usage": usage,
    }
    return message, warnings
