"""Anthropic messages and content blocks → OpenAI chat messages (system turns, text, images,
documents, tool uses and tool results)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

from addon.translate.anthropic.errors import invalid
from addon.wire.anthropic import (
    AssistantBlock,
    AssistantMessage,
    Base64Source,
    ContentSource,
    DocumentBlock,
    ImageBlock,
    Message,
    OtherBlock,
    Source,
    SystemMessage,
    Text,
    TextBlock,
    TextSource,
    ThinkingBlock,
    ToolReference,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    UserBlock,
    UserMessage,
)

if TYPE_CHECKING:
    from openai.types.chat import (
        ChatCompletionContentPartParam,
        ChatCompletionMessageFunctionToolCallParam,
        ChatCompletionMessageParam,
        ChatCompletionUserMessageParam,
    )

    ChatContent = str | list[ChatCompletionContentPartParam]


def _kind(block: OtherBlock, where: str) -> str:
    """The type of a block the translation does not read, for its warning (no type: refused)."""
    if not isinstance(block.type, str):
        raise invalid(f"{where}: each content block must be an object with a type")
    return block.type


def text_of_blocks(blocks: Text, where: str) -> str:
    """The text of a string or of a list of text blocks (system prompts, system turns)."""
    if isinstance(blocks, str):
        return blocks
    texts = []
    for number, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            _kind(block, f"{where}.{number}")
            raise invalid(f"{where}.{number}: only text blocks are allowed here")
        texts.append(block.text)
    return "\n".join(texts)


def system_messages(system: Text | None) -> list[ChatCompletionMessageParam]:
    if system is None:
        return []
    text = text_of_blocks(system, "system")
    return [{"role": "system", "content": text}] if text else []


def chat_messages(
    messages: list[Message] | None, warnings: list[str], referenced: set[str]
) -> list[ChatCompletionMessageParam]:
    if messages is None:
        raise invalid("messages: Field required")
    if not messages:
        raise invalid("messages: must be a non-empty list")
    out: list[ChatCompletionMessageParam] = []
    for position, message in enumerate(messages):
        where = f"messages.{position}"
        if isinstance(message, SystemMessage):
            if text := text_of_blocks(message.content, f"{where}.content"):
                out.append({"role": "system", "content": text})
        elif isinstance(message, UserMessage):
            if isinstance(message.content, str):
                out.append({"role": "user", "content": message.content})
            else:
                out += _user_blocks(message.content, where, warnings, referenced)
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                out.append({"role": "assistant", "content": message.content})
            else:
                out += _assistant_blocks(message.content, where, warnings)
        else:
            raise invalid(f"{where}.role: must be 'user' or 'assistant' (got {message.role!r})")
    return out


def fold_system_turns(messages: list[ChatCompletionMessageParam]) -> list[ChatCompletionMessageParam]:
    """One system message first (the leading system turns joined), later system turns as user turns,
    and adjacent user turns joined into one (as Anthropic combines consecutive turns of a role):
    the chat templates that refuse a late system message often want strictly alternating turns too."""
    leading = 0
    while leading < len(messages) and messages[leading]["role"] == "system":
        leading += 1
    out: list[ChatCompletionMessageParam] = []
    if leading:
        out.append({"role": "system", "content": "\n".join(str(m.get("content")) for m in messages[:leading])})
    for message in messages[leading:]:
        if message["role"] == "system":
            message = {"role": "user", "content": cast("str", message["content"])}
        last = out[-1] if out else None
        if message["role"] == "user" and last is not None and last["role"] == "user":
            joined: ChatCompletionUserMessageParam = {
                "role": "user",
                "content": _joined(last["content"], message["content"]),
            }
            out[-1] = joined
        else:
            out.append(message)
    return out


def _joined(
    first: str | Iterable[ChatCompletionContentPartParam], second: str | Iterable[ChatCompletionContentPartParam]
) -> ChatContent:
    """Two user turns' contents as one: texts separated by a blank line; parts one after the other."""
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"

    def parts(content: str | Iterable[ChatCompletionContentPartParam]) -> list[ChatCompletionContentPartParam]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)

    return parts(first) + parts(second)


def _user_blocks(
    blocks: list[UserBlock], where: str, warnings: list[str], referenced: set[str]
) -> list[ChatCompletionMessageParam]:
    """One user turn → user and tool messages in block order (tool results answer the calls before)."""
    out: list[ChatCompletionMessageParam] = []
    parts: list[ChatCompletionContentPartParam] = []  # the user message being gathered
    tool_images: list[ChatCompletionContentPartParam] = []  # images returned by the tool results just emitted

    def flush_parts() -> None:
        if parts:
            out.append({"role": "user", "content": _user_content(parts)})
            parts.clear()

    def flush_tool_images() -> None:
        if tool_images:
            note: ChatCompletionContentPartParam = {"type": "text", "text": "(images returned by the tool calls above)"}
            out.append({"role": "user", "content": [note, *tool_images]})
            tool_images.clear()

    for number, block in enumerate(blocks):
        at = f"{where}.content.{number}"
        if isinstance(block, ToolResultBlock):
            flush_parts()
            text, images = _tool_result(block, at, warnings, referenced)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            tool_images += images
            continue
        flush_tool_images()
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block.source, at))
        elif isinstance(block, DocumentBlock):
            parts.append(_document_part(block.source, at))
        elif isinstance(block, ThinkingBlock):
            continue
        elif (kind := _kind(block, at)) in ("tool_use", "server_tool_use"):
            raise invalid(f"{at}: {kind} blocks belong in assistant messages")
        else:
            warnings.append(f"{at}: a {kind} block has no OpenAI equivalent and was dropped")
    flush_parts()
    flush_tool_images()
    return out


def _user_content(parts: list[ChatCompletionContentPartParam]) -> ChatContent:
    """Text alone goes as one string (every upstream takes it); with images or files, as parts."""
    texts = [p["text"] for p in parts if p["type"] == "text"]
    return "\n".join(texts) if len(texts) == len(parts) else list(parts)


def _assistant_blocks(
    blocks: list[AssistantBlock], where: str, warnings: list[str]
) -> list[ChatCompletionMessageParam]:
    texts: list[str] = []
    calls: list[ChatCompletionMessageFunctionToolCallParam] = []
    for number, block in enumerate(blocks):
        at = f"{where}.content.{number}"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif isinstance(block, ThinkingBlock):
            continue  # earlier turns' reasoning is not sent upstream (see the package's docstring)
        elif (kind := _kind(block, at)) == "tool_result":
            raise invalid(f"{at}: tool_result blocks belong in user messages")
        else:
            warnings.append(f"{at}: a {kind} block has no OpenAI equivalent and was dropped")
    text = "".join(texts)
    if not text and not calls:
        return []
    if calls:
        return [{"role": "assistant", "content": text or None, "tool_calls": calls}]
    return [{"role": "assistant", "content": text}]


_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _image_part(source: Source | None, at: str) -> ChatCompletionContentPartParam:
    if source is None:
        raise invalid(f"{at}.source: Field required")
    if isinstance(source, Base64Source):
        if source.media_type not in _IMAGE_TYPES:
            raise invalid(f"{at}.source.media_type: must be one of {', '.join(_IMAGE_TYPES)}")
        _check_base64(source.data, f"{at}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}
    if isinstance(source, URLSource):
        return {"type": "image_url", "image_url": {"url": source.url}}
    kind = source.type
    if kind == "file":
        raise invalid(f"{at}.source: file sources (the Files API) are not supported; send the image as base64 or a URL")
    raise invalid(f"{at}.source.type: must be 'base64' or 'url' (got {kind!r})")


def _check_base64(data: str, at: str) -> None:
    if not data:
        raise invalid(f"{at}: Field required")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{at}: not valid base64") from None


def _document_part(source: Source | None, at: str) -> ChatCompletionContentPartParam:
    """Plain-text documents → text; base64 PDFs → OpenAI's `file` part; others are refused."""
    if source is None:
        raise invalid(f"{at}.source: Field required")
    if isinstance(source, TextSource):
        return {"type": "text", "text": source.data}
    if isinstance(source, ContentSource):
        return {"type": "text", "text": text_of_blocks(source.content, f"{at}.source.content")}
    if isinstance(source, Base64Source) and source.media_type == "application/pdf":
        _check_base64(source.data, f"{at}.source.data")
        return {
            "type": "file",
            "file": {"filename": "document.pdf", "file_data": f"data:application/pdf;base64,{source.data}"},
        }
    raise invalid(f"{at}.source: only text, content and base64 PDF documents are supported (got {source.type!r})")


def _tool_result(
    block: ToolResultBlock, at: str, warnings: list[str], referenced: set[str]
) -> tuple[str, list[ChatCompletionContentPartParam]]:
    """A tool_result → (text for the tool message, image parts for the user message after it)."""
    texts: list[str] = []
    images: list[ChatCompletionContentPartParam] = []
    if isinstance(block.content, str):
        texts.append(block.content)
    elif block.content is not None:
        for number, item in enumerate(block.content):
            item_at = f"{at}.content.{number}"
            if isinstance(item, TextBlock):
                texts.append(item.text)
            elif isinstance(item, ImageBlock):
                images.append(_image_part(item.source, item_at))
            elif isinstance(item, DocumentBlock):
                part = _document_part(item.source, item_at)
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    images.append(part)
            elif isinstance(item, ToolReference):
                referenced.add(item.tool_name)
                texts.append(f"Tool {item.tool_name} is now available.")
            else:
                kind = _kind(item, item_at)
                warnings.append(f"{item_at}: a {kind} block in a tool result has no OpenAI equivalent and was dropped")
    text = "\n".join(texts)
    if block.is_error:
        text = f"Error: {text}" if text else "Error"
    return text, images
