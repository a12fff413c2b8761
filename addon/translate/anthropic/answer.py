"""A whole OpenAI chat completion → an Anthropic Message; the usage, stop-reason and tool-input rules the
stream shares."""

from __future__ import annotations

from typing import Any

from addon.translate.anthropic.errors import AnthropicError, new_id
from addon.translate.chunks import StreamFault, whole
from addon.translate.values import is_number


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


def client_stop(matched: str | None, asked: tuple[str, ...]) -> str | None:
    """The stop sequence to report: the one the upstream says matched, when the client asked for it. One the
    proxy added (the model's own, from the catalog) ended the turn as the model's end of turn does."""
    return matched if matched is not None and matched in asked else None


def messages_response(
    answer: Any, client_model: str, stop_sequences: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
    """A whole chat.completion → (the Anthropic Message, warnings), read by the accumulator's rules
    (`translate.chunks.whole`). AnthropicError 502 for a non-answer.

    `model` is the name the client sent. An upstream answer that is not a chat completion
    (`{}`, `{"error": …}`, no choices, no message, invalid usage) raises, never an empty message.
    """
    try:
        read = whole(answer)
    except StreamFault as e:
        raise _bad_answer(str(e)) from None
    usage = usage_of(read.finish.usage)
    content: list[dict[str, Any]] = []
    if read.thinking:
        content.append({"type": "thinking", "thinking": read.thinking, "signature": ""})
    if text := read.text + read.refusal:
        content.append({"type": "text", "text": text})
    for call in read.calls:
        content.append(
            {"type": "tool_use", "id": call.call_id or new_id("toolu"), "name": call.name, "input": call.arguments}
        )
    matched = client_stop(read.finish.matched_stop, stop_sequences)
    message: dict[str, Any] = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": "stop_sequence" if matched else stop_reason(read.finish.reason, False),
        "stop_sequence": matched,
        "usage": usage,
    }
    return message, [call.warning for call in read.calls if call.warning]
