"""The Anthropic Messages API over an OpenAI chat-completions upstream: plain data in, plain data out.

`POST /v1/messages` and `POST /v1/messages/count_tokens`, as real Ollama serves them (since 0.14,
for Claude Code), translated to `{base}/chat/completions`. Nothing here does I/O or knows mitmproxy:

- `messages_request(body, upstream_model)` checks an Anthropic request and builds the OpenAI chat
  body (`AnthropicError` 400 for what Anthropic itself would refuse);
- `messages_response(answer, client_model)` turns a whole chat.completion into an Anthropic Message;
- `MessagesStream` turns decoded OpenAI stream chunks into Anthropic SSE events, event by event;
- `error_body`, `upstream_error` give errors Anthropic's shape and types;
- `count_tokens(body)` estimates input tokens (the rule is in `estimate_input_tokens`).

What is translated and how (a request):
- `system` (a string or text blocks, joined with "\\n") → a first `system` message; `system` turns
  inside `messages` (Claude Code sends them) stay `system` messages in place (or become user
  messages with `system_turns="user"`, for chat templates that refuse a late system message).
- User blocks in order: `text` and `image` (base64 → a `data:` URL, `url` → the URL) become one
  user message per run; each `tool_result` becomes a `tool` message (text blocks joined; images in
  a result go in a user message right after the tool messages, as OpenAI tool messages carry
  text only; `is_error: true` prefixes the text with "Error: "); `document` blocks with a text
  source become text, base64 PDFs OpenAI's `file` part.
- Assistant blocks: `text` → content, `tool_use` → `tool_calls` (input as JSON text); `thinking`
  and `redacted_thinking` are dropped (OpenAI upstreams take no reasoning in history, and
  Anthropic itself ignores earlier turns' thinking), and so is `cache_control` everywhere.
- `tools` → function tools (`input_schema` → `parameters`, `strict` kept); built-in/server tools
  (any `type` other than `custom`) are dropped with a warning; `defer_loading` tools are sent only
  once a `tool_reference` in a tool result has loaded them, as Anthropic's tool search does.
- `tool_choice` auto/any/tool/none → auto/required/{function}/none; `disable_parallel_tool_use`
  → `parallel_tool_calls: false`.
- `max_tokens` (required) → `max_tokens`, `temperature`, `top_p` as they are, `top_k` only with
  pass-through on, `stop_sequences` → `stop`, `output_config.format` (JSON schema) →
  `response_format`, `stream` → `stream` + `stream_options.include_usage`; `metadata` ignored.
- `thinking` and `output_config.effort` → a neutral `think` value in Ollama's terms
  (True/False/"low"/"medium"/"high"/"max"/None) that the caller sends in its think style.

Answers: reasoning (`reasoning_content` or `reasoning`) → a `thinking` block (signature ""),
text or refusal → a `text` block, tool calls → `tool_use` blocks; finish reasons stop/length/
tool_calls/content_filter → end_turn/max_tokens/tool_use/refusal (`stop_sequence` when the
upstream names the matched stop string, as vLLM does in `stop_reason`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

Think = bool | str | None


def _dict_or[D](value: Any, default: D) -> dict[str, Any] | D:
    """`value` if it is a JSON object, else `default` (one lookup, which the type checker narrows)."""
    return value if isinstance(value, dict) else default


def _list_or[D](value: Any, default: D) -> list[Any] | D:
    """`value` if it is a JSON array, else `default`."""
    return value if isinstance(value, list) else default


# ---------------------------------------------------------------------------------------------
# Errors

_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status: the table above, else by class (4xx, 5xx)."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type": …, "message": …}, "request_id": "req_…"}`."""
    return {
        "type": "error",
        "error": {"type": kind or error_type(status), "message": message},
        "request_id": new_id("req"),
    }


class AnthropicError(Exception):
    """A request or an upstream answer that cannot be served: status, Anthropic error type and message."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or error_type(status)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.kind)


def _invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message)


_MODEL_MISSING: Final = re.compile(
    r"model.*(not found|does not exist|not exist|unknown)|unknown model|no such model", re.I
)


def upstream_error(status: int, body: Any, client_model: str | None = None) -> tuple[int, dict[str, Any]]:
    """An upstream's error answer (OpenAI's `{"error": {...}}`, or any text) → (status, Anthropic error body).

    The status is kept (an unknown model, 404 or a 400 saying so, becomes 404 `not_found_error`);
    a status outside 400–599 (an error body with 200) becomes 502. The upstream's 401/403 say that
    the upstream refused the proxy's key, not the client's.
    """
    message, code = _error_text(body)
    if status in (400, 404) and (code == "model_not_found" or _MODEL_MISSING.search(message)):
        name = f"'{client_model}' " if client_model else ""
        said = bool(client_model) and f"model '{client_model}' not found" in message  # llama.cpp's words already
        return 404, error_body(404, message if said else f"model {name}not found" + (f": {message}" if message else ""))
    if not 400 <= status < 600:
        status = 502
    if not message:
        message = f"the upstream answered {status}"
    if status in (401, 403):
        message = f"the upstream rejected the API key ({status}): {message}"
    return status, error_body(status, message)


def _error_text(body: Any) -> tuple[str, str]:
    """(message, code) out of an error body: OpenAI's shape, `{"message"|"detail": …}`, or text."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            if text.startswith("<"):  # an HTML error page: its title or its words
                title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
                text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
            return " ".join(text.split())[:500], ""
    if not isinstance(body, dict):
        return ("" if body is None else json.dumps(body)[:500]), ""
    error = body.get("error", body.get("message", body.get("detail")))
    code = ""
    if isinstance(error, dict):
        code = str(error.get("code") or error.get("type") or "")
        error = error.get("message") or error.get("msg") or json.dumps(error)
    if error is None:
        return json.dumps(body)[:500], code
    return (error if isinstance(error, str) else json.dumps(error))[:1000], code


_ID_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    """An id shaped like Anthropic's: `msg_01` + 22 base62 characters."""
    return f"{prefix}_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


# ---------------------------------------------------------------------------------------------
# Requests: Anthropic → OpenAI


@dataclass(slots=True)
class Translated:
    """An OpenAI chat body for `{base}/chat/completions`, and what the caller needs besides.

    `think` is the request's thinking wish in Ollama's terms, for the caller's think style:
    True/False, a level ("low", "medium", "high", "max"), or None (nothing asked). `think_soft`
    is True when it came only from `thinking: adaptive` or `output_config.effort`, which Claude
    Code sends with every request: send it only to models that can think (as Ollama relaxes
    thinking for Anthropic requests), or a non-reasoning upstream refuses the request.
    """

    body: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    think: Think = None
    think_soft: bool = False
    stream: bool = False
    input_tokens: int = 0  # estimate_input_tokens(request), for message_start


_KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "output_config",
        "output_format",
        "context_management",
    }
)
_EFFORTS: Final = {"low": "low", "medium": "medium", "high": "high", "max": "max", "xhigh": "high"}


def messages_request(
    body: Any,
    upstream_model: str,
    *,
    passthrough: bool = False,
    max_output_tokens: int | None = None,
    system_turns: str = "system",
) -> Translated:
    """An Anthropic Messages request → the OpenAI chat request. Raises AnthropicError (400).

    `passthrough`: send `top_k` as an extra body field (vLLM, llama.cpp take it), as the
    passthrough_options setting says. `max_output_tokens`: the upstream model's output limit;
    a larger `max_tokens` (Claude Code asks 32000 and more) is lowered to it, with a warning.
    `system_turns`: "system" keeps `system` turns inside `messages` as system messages where
    they are (OpenAI takes them anywhere); "user" sends those after the first user or assistant
    turn as user messages and adds earlier ones to the system prompt, for upstreams whose chat
    template refuses a system message after the start (Qwen3's, among others).
    """
    if system_turns not in ("system", "user"):
        raise ValueError(f"system_turns must be 'system' or 'user', not {system_turns!r}")
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _invalid("max_tokens: must be an integer of at least 1")
    warnings: list[str] = []
    out: dict[str, Any] = {"model": upstream_model}

    referenced: set[str] = set()
    messages = _system_messages(body.get("system")) + _messages(body.get("messages"), warnings, referenced)
    out["messages"] = _fold_system_turns(messages) if system_turns == "user" else messages

    if max_output_tokens is not None and max_tokens > max_output_tokens:
        warnings.append(f"max_tokens {max_tokens} was lowered to the model's limit of {max_output_tokens}")
        max_tokens = max_output_tokens
    out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if (value := body.get(name)) is not None:
            if not _is_number(value):
                raise _invalid(f"{name}: must be a number")
            out[name] = value
    if (top_k := body.get("top_k")) is not None:
        if not _is_int(top_k):
            raise _invalid("top_k: must be an integer")
        if passthrough:
            out["top_k"] = top_k
        else:
            warnings.append(
                "top_k has no OpenAI equivalent and was not sent upstream (see the passthrough_options setting)"
            )
    if (stops := body.get("stop_sequences")) is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences: must be a list of strings")
        if stops:
            out["stop"] = stops

    tools = _tools(body.get("tools"), referenced, warnings)
    if tools:
        out["tools"] = tools
    _tool_choice(body.get("tool_choice"), tools, out, warnings)

    think, soft = _think(body.get("thinking"), body.get("output_config"))
    if (fmt := _response_format(body.get("output_config"), body.get("output_format"))) is not None:
        out["response_format"] = fmt

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream: must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    if (management := body.get("context_management")) is not None and not _only_clears_thinking(management):
        warnings.append("context_management was ignored: the proxy does not edit the conversation")
    unknown = sorted(k for k in body if k not in _KNOWN_FIELDS)
    if unknown:
        warnings.append(f"fields with no OpenAI equivalent were ignored: {', '.join(unknown)}")
    return Translated(out, warnings, think, soft, stream, estimate_input_tokens(body))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _block_type(block: Any, where: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise _invalid(f"{where}: each content block must be an object with a type")
    return kind


def _text_of_blocks(blocks: Any, where: str) -> str:
    """The text of a string or of a list of text blocks (system prompts, system turns)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _invalid(f"{where}: must be a string or a list of text blocks")
    texts = []
    for number, block in enumerate(blocks):
        if _block_type(block, f"{where}.{number}") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"{where}.{number}: only text blocks are allowed here")
        texts.append(block["text"])
    return "\n".join(texts)


def _system_messages(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = _text_of_blocks(system, "system")
    return [{"role": "system", "content": text}] if text else []


def _messages(messages: Any, warnings: list[str], referenced: set[str]) -> list[dict[str, Any]]:
    if messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: must be a non-empty list")
    out: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        where = f"messages.{position}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant", "system"):
            raise _invalid(f"{where}.role: must be 'user' or 'assistant' (got {role!r})")
        if content is None:
            raise _invalid(f"{where}.content: Field required")
        if role == "system":
            text = _text_of_blocks(content, f"{where}.content")
            if text:
                out.append({"role": "system", "content": text})
        elif isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise _invalid(f"{where}.content: must be a string or a list of content blocks")
        elif role == "user":
            out += _user_blocks(content, where, warnings, referenced)
        else:
            out += _assistant_blocks(content, where, warnings)
    return out


def _fold_system_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
                raise _invalid(f"{at}.text: must be a string")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block.get("source"), at))
        elif kind == "document":
            parts.append(_document_part(block.get("source"), at))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        elif kind in ("tool_use", "server_tool_use"):
            raise _invalid(f"{at}: {kind} blocks belong in assistant messages")
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
                raise _invalid(f"{at}.text: must be a string")
            texts.append(block["text"])
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"{at}.id: Field required")
            if not isinstance(name, str) or not name:
                raise _invalid(f"{at}.name: Field required")
            if not isinstance(arguments, dict):
                raise _invalid(f"{at}.input: must be an object")
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
            raise _invalid(f"{at}: tool_result blocks belong in user messages")
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
        raise _invalid(f"{at}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in _IMAGE_TYPES:
            raise _invalid(f"{at}.source.media_type: must be one of {', '.join(_IMAGE_TYPES)}")
        _check_base64(data, f"{at}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise _invalid(f"{at}.source.url: Field required")
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if kind == "file":
        raise _invalid(
            f"{at}.source: file sources (the Files API) are not supported; send the image as base64 or a URL"
        )
    raise _invalid(f"{at}.source.type: must be 'base64' or 'url' (got {kind!r})")


def _check_base64(data: Any, at: str) -> None:
    if not isinstance(data, str) or not data:
        raise _invalid(f"{at}: Field required")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{at}: not valid base64") from None


def _document_part(source: Any, at: str) -> dict[str, Any]:
    """Plain-text documents → text; base64 PDFs → OpenAI's `file` part; others are refused."""
    if not isinstance(source, dict):
        raise _invalid(f"{at}.source: Field required")
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "content":
        return {"type": "text", "text": _text_of_blocks(source.get("content"), f"{at}.source.content")}
    if kind == "base64" and source.get("media_type") == "application/pdf":
        _check_base64(source.get("data"), f"{at}.source.data")
        return {
            "type": "file",
            "file": {"filename": "document.pdf", "file_data": f"data:application/pdf;base64,{source['data']}"},
        }
    raise _invalid(f"{at}.source: only text, content and base64 PDF documents are supported (got {kind!r})")


def _tool_result(
    block: dict[str, Any], at: str, warnings: list[str], referenced: set[str]
) -> tuple[str, list[dict[str, Any]]]:
    """A tool_result → (text for the tool message, image parts for the user message after it)."""
    if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
        raise _invalid(f"{at}.tool_use_id: Field required")
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
                    raise _invalid(f"{item_at}.text: must be a string")
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
        raise _invalid(f"{at}.content: must be a string or a list of content blocks")
    text = "\n".join(texts)
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool) and is_error is not None:
        raise _invalid(f"{at}.is_error: must be a boolean")
    if is_error:
        text = f"Error: {text}" if text else "Error"
    return text, images


def _tools(tools: Any, referenced: set[str], warnings: list[str]) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("tools: must be a list")
    out: list[dict[str, Any]] = []
    dropped: list[str] = []
    for number, tool in enumerate(tools):
        at = f"tools.{number}"
        if not isinstance(tool, dict):
            raise _invalid(f"{at}: must be an object")
        name, kind = tool.get("name"), tool.get("type")
        if kind not in (None, "custom"):
            dropped.append(f"{name or '?'} ({kind})")
            continue
        if not isinstance(name, str) or not name:
            raise _invalid(f"{at}.name: Field required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"{at}.input_schema: Field required (a JSON schema object)")
        if tool.get("defer_loading") is True and name not in referenced:
            continue  # not loaded by a tool search yet: the model does not see it
        function: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        function["parameters"] = schema
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    if dropped:
        warnings.append(f"built-in tools cannot run upstream and were not sent: {', '.join(dropped)}")
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]], out: dict[str, Any], warnings: list[str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _invalid("tool_choice.type: must be one of auto, any, tool, none")
    kind = choice["type"]
    names = {t["function"]["name"] for t in tools}
    if kind == "tool" and (not isinstance(choice.get("name"), str) or not choice["name"]):
        raise _invalid("tool_choice.name: Field required")
    if not tools:  # OpenAI refuses tool_choice without tools
        if kind != "none":
            warnings.append("tool_choice was ignored: no tools are sent upstream")
        return
    if kind == "tool":
        if choice["name"] not in names:
            raise _invalid(f"tool_choice.name: no tool named {choice['name']!r} in tools")
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _think(thinking: Any, output_config: Any) -> tuple[Think, bool]:
    """(think, soft): `thinking` enabled/disabled decides; adaptive or absent leaves it to `effort`."""
    effort = None
    if output_config is not None:
        if not isinstance(output_config, dict):
            raise _invalid("output_config: must be an object")
        raw = output_config.get("effort")
        if raw is not None:
            if not isinstance(raw, str) or raw.lower() not in _EFFORTS:
                raise _invalid("output_config.effort: must be one of low, medium, high, max")
            effort = _EFFORTS[raw.lower()]
    if thinking is None:
        return effort, effort is not None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise _invalid("thinking.type: must be one of enabled, disabled, adaptive")
    if thinking["type"] == "disabled":
        return False, False
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if budget is not None and (not _is_int(budget) or budget < 1):
            raise _invalid("thinking.budget_tokens: must be a positive integer")
        return effort or True, False
    return effort, effort is not None  # adaptive: the model decides; effort only as a hint


def _response_format(output_config: Any, output_format: Any) -> dict[str, Any] | None:
    """Structured outputs (`output_config.format`, the beta `output_format`) → OpenAI json_schema."""
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    fmt = fmt if fmt is not None else output_format
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _invalid("output_config.format: must be {type: json_schema, schema: {...}}")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}


def _only_clears_thinking(management: Any) -> bool:
    """Claude Code asks to clear old thinking on every request: done anyway, as thinking is not sent."""
    edits = management.get("edits") if isinstance(management, dict) else None
    return isinstance(edits, list) and all(
        isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking") for e in edits
    )


# ---------------------------------------------------------------------------------------------
# Token estimate

IMAGE_TOKENS: Final = 1600  # a fixed cost per image or PDF: Anthropic's count for a ~1.15-megapixel image
MESSAGE_TOKENS: Final = 3  # per message: role and separators


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of an Anthropic request, estimated without a tokenizer.

    ceil(characters / 4) over the system prompt, every message's text, thinking, tool-use name and
    input JSON, tool-result text, and every tool's name, description and input_schema JSON; plus 3
    per message; plus 1600 per image or PDF document (wherever it appears). At least 1 when there
    is any message. Characters are Unicode code points; 4 per token is the usual figure for English
    text and code with GPT- and Claude-style tokenizers (other languages use more tokens).
    """
    chars = 0
    images = 0

    def walk(value: Any) -> None:
        nonlocal chars, images
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            kind = value.get("type")
            source = _dict_or(value.get("source"), {})
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
    messages = _list_or(body.get("messages"), [])
    for message in messages:
        if isinstance(message, dict):
            walk(message.get("content"))
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            walk(tool.get("name"))
            walk(tool.get("description"))
            if "input_schema" in tool:
                chars += len(json.dumps(tool["input_schema"], ensure_ascii=False))
    tokens = math.ceil(chars / 4) + MESSAGE_TOKENS * len(messages) + IMAGE_TOKENS * images
    return max(tokens, 1) if messages else tokens


def count_tokens(body: Any) -> dict[str, int]:
    """`POST /v1/messages/count_tokens` → `{"input_tokens": n}`, the estimate above.

    The request is checked as a Messages request would be (without `max_tokens`): AnthropicError 400.
    """
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("model: Field required")
    referenced: set[str] = set()
    _system_messages(body.get("system"))
    _messages(body.get("messages"), [], referenced)
    _tools(body.get("tools"), referenced, [])
    return {"input_tokens": estimate_input_tokens(body)}


# ---------------------------------------------------------------------------------------------
# Answers: OpenAI → Anthropic


def _bad_answer(why: str) -> AnthropicError:
    return AnthropicError(502, f"the upstream's answer is not a chat completion: {why}", "api_error")


def _token_count(usage: Any, name: str) -> int:
    """A usage count as an int (absent: 0); anything not a finite number is an upstream error."""
    if not isinstance(usage, dict):
        return 0
    value = usage.get(name)
    if value is None:
        return 0
    if not _is_number(value) or value < 0:
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


def _matched_stop(choice: dict[str, Any]) -> str | None:
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
        text, _ = _error_text({"error": answer["error"]})
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
        function = _dict_or(call.get("function"), {})
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
    matched = _matched_stop(choice)
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


# ---------------------------------------------------------------------------------------------
# Streams: OpenAI chunks → Anthropic SSE events

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event: `event: <type>\\ndata: <compact JSON>\\n\\n`, UTF-8 (a lone surrogate → U+FFFD)."""
    text = f"event: {event}\ndata: {_encode(data)}\n\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


class _StreamFault(Exception):
    """Input the stream cannot express: the stream ends with an error event."""


@dataclass(slots=True)
class _ToolCall:
    call_id: str
    name: str = ""
    pending: str = ""  # argument text not yet sent (before the block could start)
    block: int | None = None  # the content block index, once started


class MessagesStream:
    """Decoded OpenAI chat-completion chunks → Anthropic SSE events, as they arrive.

    `feed_event(chunk)` for each decoded `data:` object, `finish()` after `[DONE]` (or at the
    end of the upstream body), `fail(message)` when the upstream fails mid-way. Each returns
    the bytes to send now (possibly none, never an empty piece); after the end every call
    returns []. Odd input never raises: it ends the stream with an `event: error`.

    Events: `message_start` (usage: the given input estimate, 0 output tokens) and `ping` with the
    first chunk; one content block per run of reasoning (`thinking`, closed by a `signature_delta`
    with an empty signature), text (`text`) or tool call (`tool_use`, its arguments as
    `input_json_delta`s as they arrive, a new block per tool-call index); then `message_delta`
    (stop_reason, stop_sequence, usage from the upstream's final usage chunk) and `message_stop`.
    """

    def __init__(self, client_model: str, input_tokens: int = 0, message_id: str | None = None) -> None:
        self.model = client_model
        self.id = message_id or new_id("msg")
        self.input_tokens = input_tokens
        self.started = False
        self.ended = False
        self.error: str | None = None  # the message of the final error event, once made
        self._blocks = 0  # content blocks started so far
        self._open: str | None = None  # "thinking", "text" or "tool" while a block is open
        self._open_tool: _ToolCall | None = None
        self._tools: dict[int, _ToolCall] = {}
        self._finish: str | None = None
        self._matched: str | None = None
        self._usage: Any = None

    # -- public

    def start(self) -> list[bytes]:
        """`message_start` and `ping`, once; call it early to answer before the first chunk."""
        if self.started or self.ended:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [sse("message_start", {"type": "message_start", "message": message}), sse("ping", {"type": "ping"})]

    def feed_event(self, chunk: Any) -> list[bytes]:
        if self.ended:
            return []
        out = self.start()
        try:
            self._chunk(chunk, out)
        except _StreamFault as e:
            return out + self.fail(str(e))
        except Exception as e:  # noqa: BLE001 - odd input must not break the flow: end it cleanly instead
            return out + self.fail(f"the upstream's stream could not be converted: {type(e).__name__}: {e}")
        return out

    def finish(self) -> list[bytes]:
        if self.ended:
            return []
        out = self.start()
        if self._finish is None:
            return out + self.fail("the upstream stream ended before the answer was complete")
        try:
            for call in self._tools.values():  # a call whose name never came still gets its block
                if call.block is None:
                    self._start_tool(call, out)
            self._close(out)
            usage = usage_of(self._usage)
        except (_StreamFault, AnthropicError) as e:
            return out + self.fail(e.message if isinstance(e, AnthropicError) else str(e))
        delta_usage: dict[str, int] = {"output_tokens": usage["output_tokens"]}
        if isinstance(self._usage, dict):  # the real counts replace message_start's estimate
            delta_usage = {**usage}
        stop = "stop_sequence" if self._matched else stop_reason(self._finish, bool(self._tools))
        out.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": self._matched},
                    "usage": delta_usage,
                },
            )
        )
        out.append(sse("message_stop", {"type": "message_stop"}))
        self.ended = True
        return out

    def fail(self, message: str, status: int = 500) -> list[bytes]:
        """End the stream with `event: error` (type from `status`: 500 api_error, 529 overloaded_error …)."""
        if self.ended:
            return []
        self.ended = True
        self.error = message
        return [sse("error", {"type": "error", "error": {"type": error_type(status), "message": message}})]

    # -- conversion

    def _chunk(self, chunk: Any, out: list[bytes]) -> None:
        if not isinstance(chunk, dict):
            raise _StreamFault("the upstream sent an event that is not a JSON object")
        if chunk.get("error"):
            message, _ = _error_text({"error": chunk["error"]})
            raise _StreamFault(f"the upstream failed: {message}")
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is None:
            return
        if not isinstance(choices, list):
            raise _StreamFault("the upstream sent choices that are not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise _StreamFault("the upstream sent a choice that is not an object")
            if _is_int(choice.get("index")) and choice["index"] != 0:
                continue  # n > 1 is not asked for
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _StreamFault("the upstream sent a delta that is not an object")
            if thinking := reasoning_of(delta):
                self._thinking(thinking, out)
            for name in ("content", "refusal"):
                if isinstance(text := delta.get(name), str) and text:
                    self._text(text, out)
            calls = delta.get("tool_calls")
            if calls:
                if not isinstance(calls, list):
                    raise _StreamFault("the upstream sent tool_calls that are not a list")
                for call in calls:
                    self._tool_fragment(call, out)
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]
                self._matched = _matched_stop(choice)

    def _begin(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        index = self._blocks
        self._blocks += 1
        self._open = kind
        out.append(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        index = self._blocks - 1
        if self._open == "thinking":
            out.append(
                sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": ""},
                    },
                )
            )
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open = None
        self._open_tool = None

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            sse("content_block_delta", {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta})
        )

    def _thinking(self, text: str, out: list[bytes]) -> None:
        if self._open != "thinking":
            self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        self._delta({"type": "thinking_delta", "thinking": text}, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._begin("text", {"type": "text", "text": ""}, out)
        self._delta({"type": "text_delta", "text": text}, out)

    def _tool_fragment(self, fragment: Any, out: list[bytes]) -> None:
        if not isinstance(fragment, dict):
            raise _StreamFault("the upstream sent a tool call that is not an object")
        function = fragment.get("function") or {}
        if not isinstance(function, dict):
            raise _StreamFault("the upstream sent a tool call function that is not an object")
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) and fragment["id"] else None
        index = fragment.get("index")
        if not _is_int(index):  # some upstreams send whole calls without an index
            known = next((i for i, c in self._tools.items() if call_id and c.call_id == call_id), None)
            index = (
                known
                if known is not None
                else (max(self._tools, default=-1) + 1 if call_id or not self._tools else max(self._tools))
            )
        assert isinstance(index, int)
        call = self._tools.get(index)
        if call is None:
            call = self._tools[index] = _ToolCall(call_id or new_id("toolu"))
        name = function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few upstreams send the arguments as an object
            arguments = json.dumps(arguments, ensure_ascii=False)
        if call.block is None:
            if call_id:
                call.call_id = call_id
            if isinstance(name, str) and name:
                call.name = name
            if isinstance(arguments, str):
                call.pending += arguments
            if call.name:
                self._start_tool(call, out)
            return
        if not isinstance(arguments, str) or not arguments:
            return  # a repeated id or name: nothing new
        if self._open_tool is not call:
            raise _StreamFault(
                "the upstream interleaved the arguments of parallel tool calls, which an Anthropic stream cannot carry"
            )
        self._delta({"type": "input_json_delta", "partial_json": arguments}, out)

    def _start_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        call.block = self._begin("tool", {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}, out)
        self._open_tool = call
        if call.pending:
            self._delta({"type": "input_json_delta", "partial_json": call.pending}, out)
            call.pending = ""
