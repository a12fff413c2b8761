"""Ollama requests → OpenAI request bodies: plain data in, plain data out, no I/O.

Each function returns what it could not map as warnings, for the endpoint to log once per
request. `think` travels in the `Translation` (`translate.upstream`), applied with the token limit
after translation (`endpoints.base.forward`). Fields OpenAI does not define
(`chat_template_kwargs`, the `passthrough_options` sampling options) go into the translation's
`extra`, which the wire body gets last; the typed `body` holds only OpenAI's own fields, in the
order the proxy has always written them (recorded flows are replayed by their exact bytes).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any, cast

from addon.translate.upstream import Translation
from addon.wire.ollama import ChatRequest, GenerateRequest, Message, Options

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam, ChatCompletionToolParam
    from openai.types.chat.completion_create_params import ResponseFormat

    from addon.wire.openai import ChatCompletionRequest, CompletionRequest


class TranslationError(ValueError):
    """The client's request cannot be expressed upstream; the message is for the client (HTTP 400)."""


# ---------------------------------------------------------------------------------------------
# Options and fields

# Ollama option → OpenAI field; values are copied as the client sent them.
_DIRECT_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
# Sampling options with no OpenAI field that vLLM and llama.cpp accept as extra body fields.
EXTENSION_OPTIONS = ("top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n")


def sampling_options(options: Options | None, passthrough: bool) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Map Ollama `options` to OpenAI body fields. Returns (fields, extra fields, warnings)."""
    if options is None:
        return {}, {}, []
    body: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    unmapped: list[str] = []
    for name, value in options.model_dump(exclude_none=True).items():
        if name in _DIRECT_OPTIONS:
            body[_DIRECT_OPTIONS[name]] = value
        elif name == "num_predict":
            if value >= 0:  # -1 (unlimited) and -2 (fill context) have no OpenAI form
                body["max_tokens"] = int(value)
        elif name == "seed":
            if value >= 0:  # -1 means random
                body["seed"] = int(value)
        elif name == "stop":
            body["stop"] = [value] if isinstance(value, str) else value
        elif passthrough and name in EXTENSION_OPTIONS:
            extra[name] = value
        else:
            unmapped.append(name)
    warnings = []
    if unmapped:
        warnings.append(
            f"options with no OpenAI equivalent were not sent upstream: {', '.join(sorted(unmapped))}"
            + ("" if passthrough else " (see the passthrough_options setting)")
        )
    return body, extra, warnings


def response_format(fmt: str | dict[str, Any] | None) -> ResponseFormat | None:
    """Ollama `format` → OpenAI `response_format`: "json" → json_object, a schema → json_schema."""
    if not fmt:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if not isinstance(fmt, dict):
        return None
    wrapped: dict[str, Any] = {"name": "schema", "schema": fmt}
    if fmt.get("type") == "object" and _strict_schema(fmt):  # strict mode also wants an object at the root
        wrapped["strict"] = True
    return cast("ResponseFormat", {"type": "json_schema", "json_schema": wrapped})


def _strict_schema(schema: Any) -> bool:
    """Whether a schema meets OpenAI's strict mode (every object closed, every property required).

    OpenAI rejects `strict: true` for other schemas, such as pydantic's `model_json_schema()`
    that Ollama clients send, so those go without `strict` (the upstream follows them best-effort).
    """
    if isinstance(schema, list):
        return all(_strict_schema(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or ()) != set(properties):
            return False
    nested = [
        *(schema.get("properties") or {}).values(),
        *(schema.get("$defs") or {}).values(),
        *(schema.get("definitions") or {}).values(),
    ]
    for key in ("items", "anyOf", "allOf", "oneOf"):
        if key in schema:
            nested.append(schema[key])
    return all(_strict_schema(s) for s in nested)


# ---------------------------------------------------------------------------------------------
# Messages

_IMAGE_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
)


def image_data_url(data: str) -> str:
    """A base64 image (as Ollama clients send it) → a data URL with the MIME type sniffed from its bytes."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise TranslationError(f"invalid image: not valid base64 ({e})") from None
    for signature, offset, mime in _IMAGE_SIGNATURES:
        if raw[offset : offset + len(signature)] == signature:
            return f"data:{mime};base64,{data}"
    raise TranslationError("invalid image: unsupported format (expected png, jpeg, gif or webp)")


def _content(text: str | None, images: list[str] | None) -> str | list[ChatCompletionContentPartParam]:
    if not images:
        return text or ""
    parts: list[ChatCompletionContentPartParam] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": image_data_url(i)}} for i in images)
    return parts


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def chat_messages(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    """Ollama messages → OpenAI messages, giving tool results the ids of the calls they answer."""
    out: list[ChatCompletionMessageParam] = []
    unanswered: list[tuple[str, str]] = []  # (tool name, call id) in call order
    for position, message in enumerate(messages):
        if message.role == "tool":
            call_id = message.tool_call_id
            if call_id is None:
                match = next((c for c in unanswered if c[0] == message.tool_name), None)
                match = match or (unanswered[0] if unanswered else None)
                call_id = match[1] if match else f"call_{position}"
            unanswered = [c for c in unanswered if c[1] != call_id]
            out.append({"role": "tool", "tool_call_id": call_id, "content": message.content or ""})
            continue
        item: dict[str, Any] = {"role": message.role, "content": _content(message.content, message.images)}
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for number, call in enumerate(message.tool_calls):
                call_id = call.id or f"call_{position}_{number}"
                unanswered.append((call.function.name, call_id))
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": _arguments_text(call.function.arguments)},
                    }
                )
            item["tool_calls"] = calls
            if not message.content:
                item["content"] = None
        out.append(cast("ChatCompletionMessageParam", item))
    return out


# ---------------------------------------------------------------------------------------------
# Requests


def _common_fields(
    request: ChatRequest | GenerateRequest, model: str, passthrough: bool
) -> tuple[ChatCompletionRequest, dict[str, Any], list[str]]:
    body: ChatCompletionRequest = {"model": model}
    options, extra, warnings = sampling_options(request.options, passthrough)
    body.update(cast("ChatCompletionRequest", options))
    if (fmt := response_format(request.format)) is not None:
        body["response_format"] = fmt
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    ignored = [name for name in ("truncate", "shift") if getattr(request, name) is not None]
    ignored += request.unknown_fields()
    if ignored:
        warnings.append(f"fields with no OpenAI equivalent were ignored: {', '.join(ignored)}")
    return body, extra, warnings


def chat_request(request: ChatRequest, model: str, passthrough: bool = False) -> Translation:
    """POST /api/chat → POST /chat/completions."""
    body, extra, warnings = _common_fields(request, model, passthrough)
    body["messages"] = chat_messages(request.messages)
    if request.tools:
        body["tools"] = cast("list[ChatCompletionToolParam]", request.tools)
    for position, message in enumerate(request.messages):
        if message.unknown_fields():
            warnings.append(f"messages[{position}]: ignored fields {', '.join(message.unknown_fields())}")
    return Translation("chat/completions", body, extra, warnings, request.think, stream=request.stream)


def generate_request(request: GenerateRequest, model: str, passthrough: bool = False) -> Translation:
    """POST /api/generate → /chat/completions, or /completions for `raw` prompts and `suffix` (FIM).

    The chat route applies the upstream's chat template, as Ollama applies the model's template;
    raw prompts and fill-in-the-middle need the plain text-completion route.
    """
    if request.raw and (request.system or request.template or request.context):
        raise TranslationError("raw mode does not support template, system, or context")
    body, extra, warnings = _common_fields(request, model, passthrough)
    if request.template:
        warnings.append("template was ignored: the upstream applies its own chat template")
    if request.context:
        warnings.append("context was ignored: token ids cannot be sent to an OpenAI upstream")
    if request.raw or request.suffix is not None:
        if request.images:
            raise TranslationError("images are not supported with raw or suffix (text completion)")
        completion = cast("CompletionRequest", body)
        completion["prompt"] = request.prompt
        if request.suffix is not None:
            completion["suffix"] = request.suffix
        return Translation("completions", completion, extra, warnings, request.think, stream=request.stream)
    messages: list[ChatCompletionMessageParam] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append(
        cast("ChatCompletionMessageParam", {"role": "user", "content": _content(request.prompt, request.images)})
    )
    body["messages"] = messages
    return Translation("chat/completions", body, extra, warnings, request.think, stream=request.stream)
