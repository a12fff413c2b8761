"""Responses `input` items → chat-completions messages (messages, function calls and their outputs,
images)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from addon.translate.responses.errors import STATELESS, bad_request
from addon.translate.responses.tools import NAMESPACE_SEPARATOR
from addon.wire.responses import (
    Content,
    FunctionCallItem,
    FunctionCallOutputItem,
    ImagePart,
    ImageURL,
    InputItem,
    MessageItem,
    Other,
    ReasoningItem,
    RefusalPart,
    TextPart,
    ToolOutput,
)

if TYPE_CHECKING:
    from openai.types.chat import (
        ChatCompletionContentPartImageParam,
        ChatCompletionContentPartParam,
        ChatCompletionContentPartTextParam,
        ChatCompletionMessageFunctionToolCallParam,
        ChatCompletionMessageParam,
    )
    from openai.types.chat.chat_completion_content_part_image_param import ImageURL as ChatImageURL

_ROLES: dict[str, Literal["user", "assistant", "system"]] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}

_DETAILS: dict[str, Literal["low", "high", "auto"]] = {"low": "low", "high": "high", "auto": "auto"}


def input_messages(value: str | list[InputItem]) -> tuple[list[ChatCompletionMessageParam], int]:
    """The chat messages of `input`, and how many reasoning items were dropped."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}], 0
    messages: list[ChatCompletionMessageParam] = []
    tool_images: list[
        ChatCompletionContentPartParam
    ] = []  # images of the tool results just read, for a user message after them
    dropped_reasoning = 0
    for position, item in enumerate(value):
        where = f"input[{position}]"
        if not isinstance(item, FunctionCallOutputItem) and tool_images:
            messages.append({"role": "user", "content": tool_images})
            tool_images = []
        if isinstance(item, MessageItem):
            _add_message(messages, item, where)
        elif isinstance(item, FunctionCallItem):
            _add_function_call(messages, item)
        elif isinstance(item, FunctionCallOutputItem):
            text, images = _tool_output(item.output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
            tool_images += images
        elif isinstance(item, ReasoningItem):
            dropped_reasoning += 1
        else:
            _refuse_item(item, where)
    if tool_images:
        messages.append({"role": "user", "content": tool_images})
    return messages, dropped_reasoning


def _refuse_item(item: Other, where: str) -> None:
    if item.type == "item_reference":
        raise bad_request(
            f"'{where}' is an item_reference, which is not supported: {STATELESS}.", where, "unsupported_value"
        )
    if item.type is None:
        raise bad_request(f"Missing required parameter: '{where}.type'.", f"{where}.type", "missing_required_parameter")
    raise bad_request(
        f"Unsupported input item type {item.type!r} in '{where}': only messages, function_call, "
        "function_call_output and reasoning items can be translated to chat completions.",
        f"{where}.type",
        "unsupported_value",
    )


def join_adjacent_system(messages: list[ChatCompletionMessageParam]) -> list[ChatCompletionMessageParam]:
    """Adjacent system messages as one: Codex sends two developer messages (its prompt, its skills)
    and many chat templates (Qwen, Mistral, …) take a single system message at the start only."""
    out: list[ChatCompletionMessageParam] = []
    for message in messages:
        last = out[-1] if out else None
        if last is not None and last["role"] == "system" and message["role"] == "system":
            first, second = last["content"], message["content"]
            if isinstance(first, str) and isinstance(second, str):
                last["content"] = "\n\n".join(t for t in (first, second) if t)
            else:
                last["content"] = [*_as_parts(first), *_as_parts(second)]
            continue
        out.append(message)
    return out


def _as_parts(content: object) -> list[ChatCompletionContentPartTextParam]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if isinstance(content, str) and content else []


def _add_message(messages: list[ChatCompletionMessageParam], item: MessageItem, where: str) -> None:
    role = _ROLES[item.role]
    texts, images = _content_parts(item.content, f"{where}.content")
    if role == "assistant":
        if images:
            raise bad_request(
                f"'{where}': an assistant message cannot carry images.", f"{where}.content", "invalid_value"
            )
        text = "".join(texts)
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # one chat message per assistant turn
            if text:
                earlier = last.get("content")
                last["content"] = f"{earlier}\n{text}" if isinstance(earlier, str) and earlier else text
            return
        messages.append({"role": "assistant", "content": text})
        return
    if images and role != "user":
        raise bad_request(f"'{where}': only user messages can carry images.", f"{where}.content", "invalid_value")
    parts: list[ChatCompletionContentPartTextParam] = [{"type": "text", "text": t} for t in texts]
    if role == "user":
        content: list[ChatCompletionContentPartParam] = [*parts, *images]
        messages.append({"role": "user", "content": content if len(content) > 1 else texts[0] if texts else ""})
    else:
        messages.append({"role": "system", "content": parts if len(parts) > 1 else texts[0] if texts else ""})


def _content_parts(content: Content | None, where: str) -> tuple[list[str], list[ChatCompletionContentPartImageParam]]:
    """Message content → (texts, chat image parts). Text parts keep their order among themselves."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    texts: list[str] = []
    images: list[ChatCompletionContentPartImageParam] = []
    for position, part in enumerate(content):
        at = f"{where}[{position}]"
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        elif isinstance(part, ImagePart):
            images.append(_image_part(part, at))
        elif part.type == "input_file":
            raise bad_request(
                f"'{at}': file inputs are not supported (Ollama: \"file inputs are not currently supported\").",
                at,
                "unsupported_value",
            )
        else:
            raise bad_request(
                f"Unsupported content part type {part.type!r} in '{at}': expected input_text, input_image, output_text or refusal.",
                f"{at}.type",
                "unsupported_value",
            )
    return texts, images


def _image_part(part: ImagePart, at: str) -> ChatCompletionContentPartImageParam:
    url = (
        part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
    )  # the chat shape, from some clients
    if not url:
        if part.file_id:
            raise bad_request(
                f"'{at}': input_image with a file_id is not supported: nothing is uploaded here; "
                "send image_url with a URL or a data URL (data:image/png;base64,...).",
                f"{at}.file_id",
                "unsupported_value",
            )
        raise bad_request(
            f"Missing required parameter: '{at}.image_url'.", f"{at}.image_url", "missing_required_parameter"
        )
    image: ChatImageURL = {"url": url}
    if part.detail is not None and part.detail in _DETAILS:
        image["detail"] = _DETAILS[part.detail]
    return {"type": "image_url", "image_url": image}


def _add_function_call(messages: list[ChatCompletionMessageParam], item: FunctionCallItem) -> None:
    arguments = item.arguments
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    name = item.name
    if item.namespace:
        name = NAMESPACE_SEPARATOR.join([*item.namespace.split("."), name])
    call: ChatCompletionMessageFunctionToolCallParam = {
        "id": item.call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":  # consecutive calls: one assistant message
        last["tool_calls"] = [*last.get("tool_calls", ()), call]
        if not last.get("content"):
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(output: ToolOutput, where: str) -> tuple[str, list[ChatCompletionContentPartImageParam]]:
    if output is None:
        return "", []
    if isinstance(output, str):
        return output, []
    if isinstance(output, list):
        texts, images = _content_parts(output, where)
        return "".join(texts), images
    return json.dumps(output, ensure_ascii=False), []
