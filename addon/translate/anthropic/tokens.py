"""The input-token estimate of an Anthropic request, without a tokenizer."""

from __future__ import annotations

import json
import math
from typing import Final

from addon.translate.values import dict_or, list_or
from addon.wire.model import JSON

IMAGE_TOKENS: Final = 1600  # a fixed cost per image or PDF: Anthropic's count for a ~1.15-megapixel image
MESSAGE_TOKENS: Final = 3  # per message: role and separators


def estimate_input_tokens(body: dict[str, JSON]) -> int:
    """Input tokens of an Anthropic request, estimated without a tokenizer.

    ceil(characters / 4) over the system prompt, every message's text, thinking, tool-use name and
    input JSON, tool-result text, and every tool's name, description and input_schema JSON; plus 3
    per message; plus 1600 per image or PDF document (wherever it appears). At least 1 when there
    is any message. Characters are Unicode code points; 4 per token is the usual figure for English
    text and code with GPT- and Claude-style tokenizers (other languages use more tokens).
    """
    chars = 0
    images = 0

    def walk(value: JSON) -> None:
        nonlocal chars, images
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            kind = value.get("type")
            source = dict_or(value.get("source"), {})
            if kind == "image" or (kind == "document" and source.get("type") in ("base64", "url", "file")):
                images += 1
            elif kind == "document":
                walk(source.get("data"))
                walk(source.get("content"))
            elif kind == "text":
                walk(value.get("text"))
            elif kind == "thinking":
                walk(value.get("thinking"))
            elif kind in ("tool_use", "server_tool_use"):
                walk(value.get("name"))
                chars += len(json.dumps(value.get("input", {}), ensure_ascii=False))
            elif kind in ("tool_result", "search_result"):
                walk(value.get("content"))

    walk(body.get("system"))
    messages = list_or(body.get("messages"), [])
    for message in messages:
        if isinstance(message, dict):
            walk(message.get("content"))
    for tool in list_or(body.get("tools"), []):
        if isinstance(tool, dict):
            walk(tool.get("name"))
            walk(tool.get("description"))
            if "input_schema" in tool:
                chars += len(json.dumps(tool["input_schema"], ensure_ascii=False))
    tokens = math.ceil(chars / 4) + MESSAGE_TOKENS * len(messages) + IMAGE_TOKENS * images
    return max(tokens, 1) if messages else tokens
