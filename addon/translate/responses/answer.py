"""A whole chat completion → the Response object, and the Response pieces the stream shares."""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any

from addon.translate.chunks import StreamFault, ToolDone, whole
from addon.translate.responses.errors import bad_gateway
from addon.translate.responses.tools import namespaced_names
from addon.translate.values import dict_or, is_int, is_number


def new_id(prefix: str) -> str:
    """An id shaped like OpenAI's: `resp_…`, `msg_…`, `rs_…`, `fc_…`, `call_…`."""
    return f"{prefix}_{secrets.token_hex(24)}"


def response_object(
    request_body: dict[str, Any],
    client_model: str,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object, with the request fields the SDK's `Response` type echoes back."""
    request = request_body if isinstance(request_body, dict) else {}
    reasoning = dict_or(request.get("reasoning"), None)
    text = dict_or(request.get("text"), {})
    fmt = dict_or(text.get("format"), {"type": "text"})
    echoed_text: dict[str, Any] = {"format": fmt}
    if text.get("verbosity") in ("low", "medium", "high"):
        echoed_text["verbosity"] = text["verbosity"]
    tools = (
        [t for t in request.get("tools") or () if isinstance(t, dict)] if isinstance(request.get("tools"), list) else []
    )
    instructions = request.get("instructions")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": request.get("max_output_tokens") if is_int(request.get("max_output_tokens")) else None,
        "max_tool_calls": None,
        "model": client_model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls")
        if isinstance(request.get("parallel_tool_calls"), bool)
        else True,
        "previous_response_id": None,
        "prompt_cache_key": request.get("prompt_cache_key")
        if isinstance(request.get("prompt_cache_key"), str)
        else None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")} if reasoning else None,
        "safety_identifier": None,
        "service_tier": "default",
        "store": False,
        "background": False,
        "temperature": request.get("temperature") if is_number(request.get("temperature")) else 1.0,
        "text": echoed_text,
        "tool_choice": request.get("tool_choice") if request.get("tool_choice") is not None else "auto",
        "tools": tools,
        "top_logprobs": 0,
        "top_p": request.get("top_p") if is_number(request.get("top_p")) else 1.0,
        "truncation": request.get("truncation") if request.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": usage,
        "user": request.get("user") if isinstance(request.get("user"), str) else None,
        "metadata": dict_or(request.get("metadata"), {}),
    }


def responses_usage(usage: Any, strict: bool) -> dict[str, Any]:
    """Chat `usage` → Responses usage. `strict`: a usage that is there but not numbers is an error."""
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        if strict:
            raise bad_gateway(f"the upstream's usage is not an object: {json.dumps(usage)[:200]}")
        usage = {}

    def count(source: Any, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            if strict:
                raise bad_gateway(f"the upstream's usage.{key} is not a token count: {json.dumps(value)[:200]}")
            return 0
        return int(value)

    prompt, completion = count(usage, "prompt_tokens"), count(usage, "completion_tokens")
    total = count(usage, "total_tokens") or prompt + completion
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": count(usage.get("prompt_tokens_details"), "cached_tokens"),
            "cache_write_tokens": count(usage.get("prompt_tokens_details"), "cache_write_tokens"),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": count(usage.get("completion_tokens_details"), "reasoning_tokens")
        },
        "total_tokens": total,
    }


def status_of(finish_reason: Any) -> tuple[str, str | None]:
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def call_arguments(call: ToolDone) -> str:
    """A call's `arguments`: its text as the upstream sent it (NaN and Infinity as null), or "{}" when that is no
    JSON object (cut short, empty, invalid), as every family gives it (a warning says so)."""
    return call.arguments_text if call.arguments_text and call.warning is None else "{}"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def function_call_item(
    item_id: str,
    call_id: str,
    name: str,
    arguments: str,
    status: str,
    namespaces: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    if namespaces and name in namespaces:  # a member of a namespace tool: its own name and its namespace
        item["namespace"], item["name"] = namespaces[name]
    return item


def _mark_last_incomplete(output: list[dict[str, Any]], status: str) -> None:
    """The item being generated when the answer was cut short is `incomplete`; the others completed."""
    if status == "incomplete":
        for item in reversed(output):
            if item["type"] in ("message", "function_call"):
                item["status"] = "incomplete"
                break


def responses_answer(
    openai_chat_answer: dict[str, Any],
    client_model: str,
    request_body: dict[str, Any],
    *,
    response_id: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """A whole chat.completion → the Response object, read by the accumulator's rules
    (`translate.chunks.whole`). Raises `ResponsesError` (502) for anything else."""
    try:
        read = whole(openai_chat_answer)
    except StreamFault as e:
        raise bad_gateway(str(e)) from None
    usage = responses_usage(read.finish.usage, strict=True)
    status, reason = status_of(read.finish.reason)
    output: list[dict[str, Any]] = []
    if read.thinking:
        output.append(_reasoning_item(new_id("rs"), read.thinking))
    content: list[dict[str, Any]] = []
    if read.text:
        content.append(text_part(read.text))
    if read.refusal:
        content.append(refusal_part(read.refusal))
    if content or not read.calls:
        output.append(message_item(new_id("msg"), content or [text_part("")], "completed"))
    namespaces = namespaced_names(request_body)
    for call in read.calls:
        item = function_call_item(
            new_id("fc"), call.call_id or new_id("call"), call.name, call_arguments(call), "completed", namespaces
        )
        output.append(item)
    _mark_last_incomplete(output, status)
    return response_object(
        request_body,
        client_model,
        response_id=response_id or new_id("resp"),
        created_at=created_at if created_at is not None else int(time.time()),
        status=status,
        output=output,
        usage=usage,
        incomplete_reason=reason,
    )
