"""Responses `input` items → chat-completions messages (messages, function calls and their outputs,
images)."""

from __future__ import annotations

import json
from typing import Any

from addon.translate.responses.errors import STATELESS, bad_request
from addon.translate.responses.tools import NAMESPACE_SEPARATOR

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def input_messages(value: Any, warnings: list[str]) -> list[dict[str, Any]]:
    if value is None:
        raise bad_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise bad_request(
            "Invalid type for 'input': expected a string or an array of input items.", "input", "invalid_type"
        )
    messages: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []  # images of the tool results just read, for a user message after them
    dropped_reasoning = 0
    for position, item in enumerate(value):
        where = f"input[{position}]"
        if not isinstance(item, dict):
            raise bad_request(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind != "function_call_output" and tool_images:
            messages.append({"role": "user", "content": tool_images})
            tool_images = []
        if kind == "message":
            _add_message(messages, item, where)
        elif kind == "function_call":
            _add_function_call(messages, item, where)
        elif kind == "function_call_output":
            text, images = _tool_output(item.get("output"), f"{where}.output")
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(
                    f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id", "missing_required_parameter"
                )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            tool_images += images
        elif kind == "reasoning":
            dropped_reasoning += 1
        elif kind == "item_reference":
            raise bad_request(
                f"'{where}' is an item_reference, which is not supported: {STATELESS}.", where, "unsupported_value"
            )
        elif kind is None:
            raise bad_request(
                f"Missing required parameter: '{where}.type'.", f"{where}.type", "missing_required_parameter"
            )
        else:
            raise bad_request(
                f"Unsupported input item type '{kind}' in '{where}': only messages, function_call, "
                "function_call_output and reasoning items can be translated to chat completions.",
                f"{where}.type",
                "unsupported_value",
            )
    if tool_images:
        messages.append({"role": "user", "content": tool_images})
    messages = join_adjacent_system(messages)
    if dropped_reasoning:
        warnings.append(
            f"{dropped_reasoning} reasoning input item(s) were dropped: chat completions has no portable field for them"
        )
    return messages


def join_adjacent_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent system messages as one: Codex sends two developer messages (its prompt, its skills)
    and many chat templates (Qwen, Mistral, …) take a single system message at the start only."""
    out: list[dict[str, Any]] = []
    for message in messages:
        last = out[-1] if out else None
        if last is not None and last["role"] == message["role"] == "system":
            if isinstance(last["content"], str) and isinstance(message["content"], str):
                last["content"] = "\n\n".join(t for t in (last["content"], message["content"]) if t)
            else:
                last["content"] = _as_parts(last["content"]) + _as_parts(message["content"])
            continue
        out.append(dict(message))
    return out


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return content if isinstance(content, list) else [{"type": "text", "text": content}] if content else []


def _add_message(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise bad_request(
            f"Invalid value for '{where}.role': {item.get('role')!r}; expected user, assistant, system or developer.",
            f"{where}.role",
            "invalid_value",
        )
    texts, images = _content_parts(item.get("content"), f"{where}.content")
    if role == "assistant":
        if images:
            raise bad_request(
                f"'{where}': an assistant message cannot carry images.", f"{where}.content", "invalid_value"
            )
        text = "".join(texts)
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # one chat message per assistant turn
            if text:
                last["content"] = f"{last['content']}\n{text}" if last.get("content") else text
            return
        messages.append({"role": "assistant", "content": text})
        return
    if images and role != "user":
        raise bad_request(f"'{where}': only user messages can carry images.", f"{where}.content", "invalid_value")
    if images or len(texts) > 1:
        messages.append({"role": role, "content": [{"type": "text", "text": t} for t in texts] + images})
    else:
        messages.append({"role": role, "content": texts[0] if texts else ""})


def _content_parts(content: Any, where: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Message content → (texts, chat image parts). Text parts keep their order among themselves."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise bad_request(
            f"Invalid type for '{where}': expected a string or an array of content parts.", where, "invalid_type"
        )
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for position, part in enumerate(content):
        at = f"{where}[{position}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"Invalid type for '{at}.text': expected a string.", f"{at}.text", "invalid_type")
            texts.append(text)
        elif kind == "refusal":
            refusal = part.get("refusal")
            texts.append(refusal if isinstance(refusal, str) else "")
        elif kind == "input_image":
            images.append(_image_part(part, at))
        elif kind == "input_file":
            raise bad_request(
                f"'{at}': file inputs are not supported (Ollama: \"file inputs are not currently supported\").",
                at,
                "unsupported_value",
            )
        elif not isinstance(part, dict):
            raise bad_request(f"Invalid type for '{at}': expected an object.", at, "invalid_type")
        else:
            raise bad_request(
                f"Unsupported content part type {kind!r} in '{at}': expected input_text, input_image, output_text or refusal.",
                f"{at}.type",
                "unsupported_value",
            )
    return texts, images


def _image_part(part: dict[str, Any], at: str) -> dict[str, Any]:
    url = part.get("image_url")
    if isinstance(url, dict):  # the chat-completions shape, sent by some clients
        url = url.get("url")
    if not isinstance(url, str) or not url:
        if part.get("file_id"):
            raise bad_request(
                f"'{at}': input_image with a file_id is not supported: nothing is uploaded here; "
                "send image_url with a URL or a data URL (data:image/png;base64,...).",
                f"{at}.file_id",
                "unsupported_value",
            )
        raise bad_request(
            f"Missing required parameter: '{at}.image_url'.", f"{at}.image_url", "missing_required_parameter"
        )
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _add_function_call(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(
            f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id", "missing_required_parameter"
        )
    if not isinstance(name, str) or not name:
        raise bad_request(f"Missing required parameter: '{where}.name'.", f"{where}.name", "missing_required_parameter")
    arguments = item.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = NAMESPACE_SEPARATOR.join([*namespace.split("."), name])
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":  # consecutive calls: one assistant message
        last.setdefault("tool_calls", []).append(call)
        if not last.get("content"):
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(output: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    if output is None:
        return "", []
    if isinstance(output, str):
        return output, []
    if isinstance(output, list):
        texts, images = _content_parts(output, where)
        return "".join(texts), images
    return json.dumps(output, ensure_ascii=False), []
