"""Pure translation between Ollama and OpenAI bodies: plain data in, plain data out, no I/O."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from addon.models import ChatRequest, GenerateRequest, Message, Options


class TranslationError(ValueError):
    """The client's request cannot be expressed upstream; the message is for the client (HTTP 400)."""


@dataclass(slots=True)
class Translation:
    """An upstream request: the OpenAI route, its JSON body, and what could not be mapped."""

    route: str
    body: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Small shared pieces


_second: int = -1
_second_text = ""


def rfc3339_now() -> str:
    """UTC now in Go's RFC3339Nano form: fractional seconds without trailing zeros, 'Z'."""
    global _second, _second_text
    now_us = time.time_ns() // 1000
    second, micro = divmod(now_us, 1_000_000)
    if second != _second:  # formatting the date once a second is enough
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    fraction = f"{micro:06d}".rstrip("0")
    return f"{_second_text}.{fraction}Z" if fraction else f"{_second_text}Z"


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # compact, like Ollama's


def dumps_line(obj: dict[str, Any]) -> bytes:
    """One NDJSON line."""
    return dumps_body(obj) + b"\n"


def dumps_body(obj: dict[str, Any]) -> bytes:
    return utf8(_encode(obj))


def utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (JSON allows "\\ud800") becomes U+FFFD, as Go's decoder makes it."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def done_reason(finish_reason: str | None) -> str:
    """Ollama knows only 'stop' and 'length' for a finished generation."""
    return "length" if finish_reason == "length" else "stop"


# ---------------------------------------------------------------------------------------------
# Requests: Ollama → OpenAI

# Ollama option → OpenAI field; values are copied as the client sent them.
_DIRECT_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
# Sampling options with no OpenAI field that vLLM and llama.cpp accept as extra body fields.
_EXTENSION_OPTIONS = ("top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n")


def sampling_options(options: Options | None, passthrough: bool) -> tuple[dict[str, Any], list[str]]:
    """Map Ollama `options` to OpenAI body fields. Returns (fields, warnings)."""
    if options is None:
        return {}, []
    body: dict[str, Any] = {}
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
        elif passthrough and name in _EXTENSION_OPTIONS:
            body[name] = value
        else:
            unmapped.append(name)
    warnings = []
    if unmapped:
        warnings.append(
            f"options with no OpenAI equivalent were not sent upstream: {', '.join(sorted(unmapped))}"
            + ("" if passthrough else " (see the passthrough_options setting)")
        )
    return body, warnings


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Ollama `format` → OpenAI `response_format`: "json" → json_object, a schema → json_schema."""
    if not fmt:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    wrapped: dict[str, Any] = {"name": "schema", "schema": fmt}
    if fmt.get("type") == "object" and _strict_schema(fmt):  # strict mode also wants an object at the root
        wrapped["strict"] = True
    return {"type": "json_schema", "json_schema": wrapped}


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
    nested = [*(schema.get("properties") or {}).values(), *(schema.get("$defs") or {}).values(), *(schema.get("definitions") or {}).values()]
    for key in ("items", "anyOf", "allOf", "oneOf"):
        if key in schema:
            nested.append(schema[key])
    return all(_strict_schema(s) for s in nested)


_REASONING_EFFORT = {True: "medium", "low": "low", "medium": "medium", "high": "high", "max": "high"}


def reasoning_fields(think: bool | str | None) -> dict[str, Any]:
    """Ollama `think` → OpenAI `reasoning_effort`. False and absent send nothing."""
    effort = _REASONING_EFFORT.get(think) if think is not False else None
    return {"reasoning_effort": effort} if effort else {}


def apply_think_style(body: dict[str, Any], think: bool | str | None, style: str) -> None:
    """Send `think` the way the upstream takes it (the think_style option or the catalog's).

    reasoning_effort: OpenAI's field (as `reasoning_fields`). chat_template_kwargs: llama.cpp and
    vLLM's `chat_template_kwargs.enable_thinking`, true for true and every level, false for false.
    none: nothing. An absent `think` sends nothing in every style.
    """
    if style == "reasoning_effort":
        return
    body.pop("reasoning_effort", None)
    if style == "chat_template_kwargs" and think is not None:
        body["chat_template_kwargs"] = {"enable_thinking": think is not False}


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


def _content(text: str | None, images: list[str] | None) -> str | list[dict[str, Any]]:
    if not images:
        return text or ""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": image_data_url(i)}} for i in images)
    return parts


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama messages → OpenAI messages, giving tool results the ids of the calls they answer."""
    out: list[dict[str, Any]] = []
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
                        "function": {
                            "name": call.function.name,
                            "arguments": _arguments_text(call.function.arguments),
                        },
                    }
                )
            item["tool_calls"] = calls
            if not message.content:
                item["content"] = None
        out.append(item)
    return out


def _common_fields(
    request: ChatRequest | GenerateRequest, upstream_model: str, passthrough: bool
) -> tuple[dict[str, Any], list[str]]:
    body: dict[str, Any] = {"model": upstream_model}
    options, warnings = sampling_options(request.options, passthrough)
    body.update(options)
    if (fmt := response_format(request.format)) is not None:
        body["response_format"] = fmt
    body.update(reasoning_fields(request.think))
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
    return body, warnings


def chat_request(request: ChatRequest, upstream_model: str, passthrough: bool = False) -> Translation:
    """POST /api/chat → POST /chat/completions."""
    body, warnings = _common_fields(request, upstream_model, passthrough)
    body["messages"] = chat_messages(request.messages)
    if request.tools:
        body["tools"] = request.tools
    for position, message in enumerate(request.messages):
        if message.unknown_fields():
            warnings.append(f"messages[{position}]: ignored fields {', '.join(message.unknown_fields())}")
    return Translation("chat/completions", body, warnings)


def generate_request(request: GenerateRequest, upstream_model: str, passthrough: bool = False) -> Translation:
    """POST /api/generate → /chat/completions, or /completions for `raw` prompts and `suffix` (FIM).

    The chat route applies the upstream's chat template, as Ollama applies the model's template;
    raw prompts and fill-in-the-middle need the plain text-completion route.
    """
    if request.raw and (request.system or request.template or request.context):
        raise TranslationError("raw mode does not support template, system, or context")
    body, warnings = _common_fields(request, upstream_model, passthrough)
    if request.template:
        warnings.append("template was ignored: the upstream applies its own chat template")
    if request.context:
        warnings.append("context was ignored: token ids cannot be sent to an OpenAI upstream")
    if request.raw or request.suffix is not None:
        if request.images:
            raise TranslationError("images are not supported with raw or suffix (text completion)")
        body["prompt"] = request.prompt
        if request.suffix is not None:
            body["suffix"] = request.suffix
        return Translation("completions", body, warnings)
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": _content(request.prompt, request.images)})
    body["messages"] = messages
    return Translation("chat/completions", body, warnings)


# ---------------------------------------------------------------------------------------------
# Responses: OpenAI → Ollama


@dataclass(slots=True)
class Clock:
    """Wall-clock marks of one exchange, in nanoseconds, for Ollama's duration metrics."""

    start_ns: int
    first_token_ns: int | None = None

    def mark_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.time_ns()


def metrics(clock: Clock, usage: dict[str, Any] | None, timings: dict[str, Any] | None = None) -> dict[str, int]:
    """The six metrics of a final Ollama chunk, as integers.

    Token counts come from the upstream's usage. Durations come from the upstream's own timings
    when it reports them (llama.cpp's `timings`), otherwise from what the proxy measured: prompt
    evaluation until the first token, evaluation from there to the end.
    """
    end = time.time_ns()
    total = max(end - clock.start_ns, 0)
    usage = usage if isinstance(usage, dict) else {}
    if (isinstance(timings, dict) and isinstance(timings.get("prompt_ms"), (int, float))
            and isinstance(timings.get("predicted_ms"), (int, float))):
        prompt_duration = int(timings["prompt_ms"] * 1e6)
        eval_duration = int(timings["predicted_ms"] * 1e6)
    elif clock.first_token_ns is not None:
        prompt_duration = max(clock.first_token_ns - clock.start_ns, 0)
        eval_duration = max(end - clock.first_token_ns, 0)
    else:
        prompt_duration, eval_duration = 0, total
    return {
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": _count(usage.get("prompt_tokens")),
        "prompt_eval_duration": prompt_duration,
        "eval_count": _count(usage.get("completion_tokens")),
        "eval_duration": eval_duration,
    }


def _count(value: Any) -> int:
    """A token count as an integer; anything that is not a finite number counts 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        return 0
    return int(value)


def parse_arguments(arguments: Any) -> tuple[dict[str, Any], str | None]:
    """Tool-call arguments (an OpenAI JSON string) → an object, with a warning when unparsable.

    Ollama clients require an object. Text that is not a JSON object becomes {} and is reported.
    """
    if isinstance(arguments, dict):
        return arguments, None
    if not arguments:
        return {}, None
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, dict):
        return value, None
    return {}, f"tool call arguments are not a JSON object and were replaced by {{}}: {str(arguments)[:200]!r}"


def ollama_tool_call(index: int, call_id: str | None, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call: dict[str, Any] = {"function": {"index": index, "name": name, "arguments": arguments}}
    if call_id:
        call = {"id": call_id, **call}
    return call


def tool_calls_from_openai(calls: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], list[str]]:
    out, warnings = [], []
    for index, call in enumerate(calls or ()):
        function = call.get("function") or {}
        arguments, warning = parse_arguments(function.get("arguments"))
        if warning:
            warnings.append(warning)
        out.append(ollama_tool_call(index, call.get("id"), function.get("name") or "", arguments))
    return out, warnings


def thinking_of(part: dict[str, Any]) -> str | None:
    """Reasoning text as upstreams name it: `reasoning_content` (DeepSeek, vLLM, llama.cpp) or `reasoning`."""
    return part.get("reasoning_content") or part.get("reasoning") or None


def chat_response(body: dict[str, Any], model: str, clock: Clock) -> tuple[dict[str, Any], list[str]]:
    """A whole chat.completion → one Ollama /api/chat answer."""
    choice = (body.get("choices") or [{}])[0]
    source = choice.get("message") or {}
    message: dict[str, Any] = {"role": "assistant", "content": source.get("content") or source.get("refusal") or ""}
    if thinking := thinking_of(source):
        message["thinking"] = thinking
    tool_calls, warnings = tool_calls_from_openai(source.get("tool_calls"))
    if tool_calls:
        message["tool_calls"] = tool_calls
    answer = {
        "model": model,
        "created_at": rfc3339_now(),
        "message": message,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **metrics(clock, body.get("usage"), body.get("timings")),
    }
    if logprobs := _logprobs(choice):
        answer["logprobs"] = logprobs
    return answer, warnings


def generate_response(body: dict[str, Any], model: str, clock: Clock, raw: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A whole chat.completion or text_completion → one Ollama /api/generate answer.

    Like Ollama's, the answer carries `context` unless the request was `raw`: an empty list, as
    the upstream has no token ids to give (clients such as the Vercel AI SDK provider require the field).
    """
    choice = (body.get("choices") or [{}])[0]
    source = choice.get("message") or {}
    answer: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339_now(),
        "response": choice.get("text") or source.get("content") or source.get("refusal") or "",
    }
    if thinking := thinking_of(source):
        answer["thinking"] = thinking
    tool_calls, warnings = tool_calls_from_openai(source.get("tool_calls"))
    if tool_calls:
        answer["tool_calls"] = tool_calls
    answer.update(done=True, done_reason=done_reason(choice.get("finish_reason")))
    if not raw:
        answer["context"] = []
    answer.update(metrics(clock, body.get("usage"), body.get("timings")))
    if logprobs := _logprobs(choice):
        answer["logprobs"] = logprobs
    return answer, warnings


def logprobs_of(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    return _logprobs(choice)


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """OpenAI `choices[].logprobs.content` → Ollama's `logprobs` list (same token/logprob/bytes)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("content"):
        return None
    return [
        {
            "token": item.get("token", ""),
            "logprob": item.get("logprob", 0.0),
            "bytes": item.get("bytes"),
            "top_logprobs": [
                {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0), "bytes": t.get("bytes")}
                for t in item.get("top_logprobs") or ()
            ],
        }
        for item in logprobs["content"]
    ]


# ---------------------------------------------------------------------------------------------
# Errors

_MODEL_MISSING = re.compile(r"model.*(not found|does not exist|not exist|unknown)|unknown model|no such model", re.I)


def upstream_error(status: int, body: bytes, reason: str, model: str | None) -> tuple[int, str]:
    """An upstream error answer → (status, message) for an Ollama `{"error": message}` body."""
    message = _error_text(body)
    code = ""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            code = str(parsed["error"].get("code") or "")
    except ValueError:
        pass
    if model is not None and status in (400, 404) and (code == "model_not_found" or _MODEL_MISSING.search(message)):
        return 404, f"model '{model}' not found"
    if not message:
        message = f"upstream answered {status} {reason}".rstrip()
    if status in (401, 403):
        message = f"the upstream rejected the API key ({status}): {message}"
    return status, message


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        parsed = json.loads(text)
    except ValueError:
        if text.lstrip().startswith("<"):  # an HTML error page: keep only its title or first words
            title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
            text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        return " ".join(text.split())[:500]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("message", parsed.get("detail")))
        if isinstance(error, dict):
            error = error.get("message") or error.get("msg") or json.dumps(error)
        if error is not None:
            return str(error) if not isinstance(error, list) else json.dumps(error)
    return text[:500]
