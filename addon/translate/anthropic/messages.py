"""Anthropic messages and content blocks → OpenAI chat messages (system turns, text, images,
documents, tool uses and tool results)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from addon.translate.anthropic.errors import invalid


def _block_type(block: Any, where: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise invalid(f"{where}: each content block must be an object with a type")
    return kind


def text_of_blocks(blocks: Any, where: str) -> str:
    """The text of a string or of a list of text blocks (system prompts, system turns)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise invalid(f"{where}: must be a string or a list of text blocks")
    texts = []
    for number, block in enumerate(blocks):
        if _block_type(block, f"{where}.{number}") != "text" or not isinstance(block.get("text"), str):
            raise invalid(f"{where}.{number}: only text blocks are allowed here")
        texts.append(block["text"])
    return "\n".join(texts)


def system_messages(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = text_of_blocks(system, "system")
    return [{"role": "system", "content": text}] if text else []


def chat_messages(messages: Any, warnings: list[str], referenced: set[str]) -> list[dict[str, Any]]:
    if messages is None:
        raise invalid("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: must be a non-empty list")
    out: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        where = f"messages.{position}"
        if not isinstance(message, dict):
            raise invalid(f"{where}: must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant", "system"):
            raise invalid(f"{where}.role: must be 'user' or 'assistant' (got {role!r})")
        if content is None:
            raise invalid(f"{where}.content: Field required")
        if role == "system":
            text = text_of_blocks(content, f"{where}.content")
            if text:
                out.append({"role": "system", "content": text})
        elif isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise invalid(f"{where}.content: must be a string or a list of content blocks")
        elif role == "user":
            out += _user_blocks(content, where, warnings, referenced)
        else:
            out += _assistant_blocks(content, where, warnings)
    return out


def fold_system_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One system message first (the leading system turns joined), later system turns as user turns,
    and adjacent user turns joined into one (as Anthropic combines consecutive turns of a role):
    the chat templates that refuse a late system message often want strictly alternating turns too."""
    leading = 0
    while leading < len(messages) and messages[leading]["role"] == "system":
        leading += 1
    out: list[dict[str, Any]] = []
    if leading:
        out.append({"role": "system", "content": "\n".join(m["content"] for m in messages[:leading])})
    for message in messages[leading:]:
        if message["role"] == "system":
            message = {"role": "user", "content": message["content"]}
        if message["role"] == "user" and out and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": _joined(out[-1]["content"], message["content"])}
        else:
            out.append(message)
    return out


def _joined(first: str | list[dict[str, Any]], second: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Two user turns' contents as one: texts separated by a blank line; parts one after the other."""
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"

    def parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    return parts(first) + parts(second)


def _user_blocks(blocks: list[Any], where: str, warnings: list[str], referenced: set[str]) -> list[dict[str, Any]]:
    """One user turn → user and tool messages in block order (tool results answer the calls before)."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []  # the user message being gathered
    tool_images: list[dict[str, Any]] = []  # images returned by the tool results just emitted

    def flush_parts() -> None:
        if parts:
            out.append({"role": "user", "content": _user_content(parts)})
            parts.clear()

    def flush_tool_images() -> None:
        if tool_images:
            out.append(
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "(images returned by the tool calls above)"}, *tool_images],
                }
            )
            tool_images.clear()

    for number, block in enumerate(blocks):
        at = f"{where}.content.{number}"
        kind = _block_type(block, at)
        if kind == "tool_result":
            flush_parts()
            text, images = _tool_result(block, at, warnings, referenced)
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            tool_images += images
            continue
        flush_tool_images()
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise invalid(f"{at}.text: must be a string")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block.get("source"), at))
        elif kind == "document":
            parts.append(_document_part(block.get("source"), at))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        elif kind in ("tool_use", "server_tool_use"):
            raise invalid(f"{at}: {kind} blocks belong in assistant messages")
        else:
            warnings.append(f"{at}: a {kind} block has no OpenAI equivalent and was dropped")
    flush_parts()
    flush_tool_images()
    return out


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text alone goes as one string (every upstream takes it); with images or files, as parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return list(parts)


def _assistant_blocks(blocks: list[Any], where: str, warnings: list[str]) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for number, block in enumerate(blocks):
        at = f"{where}.content.{number}"
        kind = _block_type(block, at)
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise invalid(f"{at}.text: must be a string")
            texts.append(block["text"])
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"{at}.id: Field required")
            if not isinstance(name, str) or not name:
                raise invalid(f"{at}.name: Field required")
            if not isinstance(arguments, dict):
                raise invalid(f"{at}.input: must be an object")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' reasoning is not sent upstream (see the module docstring)
        elif kind == "tool_result":
            raise invalid(f"{at}: tool_result blocks belong in user messages")
        else:
            warnings.append(f"{at}: a {kind} block has no OpenAI equivalent and was dropped")
    text = "".join(texts)
    if not text and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _image_part(source: Any, at: str) -> dict[str, Any]:
    if not isinstance(source, dict):
        raise invalid(f"{at}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in _IMAGE_TYPES:
            raise invalid(f"{at}.source.media_type: must be one of {', '.join(_IMAGE_TYPES)}")
        _check_base64(data, f"{at}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise invalid(f"{at}.source.url: Field required")
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if kind == "file":
        raise invalid(f"{at}.source: file sources (the Files API) are not supported; send the image as base64 or a URL")
    raise invalid(f"{at}.source.type: must be 'base64' or 'url' (got {kind!r})")


def _check_base64(data: Any, at: str) -> None:
    if not isinstance(data, str) or not data:
        raise invalid(f"{at}: Field required")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{at}: not valid base64") from None


def _document_part(source: Any, at: str) -> dict[str, Any]:
    """Plain-text documents → text; base64 PDFs → OpenAI's `file` part; others are refused."""
    if not isinstance(source, dict):
        raise invalid(f"{at}.source: Field required")
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "content":
        return {"type": "text", "text": text_of_blocks(source.get("content"), f"{at}.source.content")}
    if kind == "base64" and source.get("media_type") == "application/pdf":
        _check_base64(source.get("data"), f"{at}.source.data")
        return {
            "type": "file",
            "file": {"filename": "document.pdf", "file_data": f"data:application/pdf;base64,{source['data']}"},
        }
    raise invalid(f"{at}.source: only text, content and base64 PDF documents are supported (got {kind!r})")


def _tool_result(
    block: dict[str, Any], at: str, warnings: list[str], referenced: set[str]
) -> tuple[str, list[dict[str, Any]]]:
    """A tool_result → (text for the tool message, image parts for the user message after it)."""
    if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
        raise invalid(f"{at}.tool_use_id: Field required")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for number, item in enumerate(content):
            item_at = f"{at}.content.{number}"
            kind = _block_type(item, item_at)
            if kind == "text":
                if not isinstance(item.get("text"), str):
                    raise invalid(f"{item_at}.text: must be a string")
                texts.append(item["text"])
            elif kind == "image":
                images.append(_image_part(item.get("source"), item_at))
            elif kind == "document":
                part = _document_part(item.get("source"), item_at)
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    images.append(part)
            elif kind == "tool_reference" and isinstance(item.get("tool_name"), str):
                referenced.add(item["tool_name"])
                texts.append(f"Tool {item['tool_name']} is now available.")
            else:
                warnings.append(f"{item_at}: a {kind} block in a tool result has no OpenAI equivalent and was dropped")
    elif content is not None:
        raise invalid(f"{at}.content: must be a string or a list of content blocks")
    text = "\n".join(texts)
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool) and is_error is not None:
        raise invalid(f"{at}.is_error: must be a boolean")
    if is_error:
        text = f"Error: {text}" if text else "Error"
    return text, images
