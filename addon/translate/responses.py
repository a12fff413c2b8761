"""The OpenAI Responses API (`POST /v1/responses`) over an OpenAI chat-completions upstream.

Pure translations, free of mitmproxy and of the rest of the addon, stateless as real Ollama's
`/v1/responses` is (openai/responses.go and middleware/openai.go in ollama/ollama):

- `responses_request(body, upstream_model)` → (chat-completions body, think, warnings), or
  `ResponsesError` (400) for input that cannot be translated;
- `responses_answer(chat_completion, client_model, request_body)` → the Response object, or
  `ResponsesError` (502) when the upstream's answer is not a chat completion;
- `ResponsesStream(client_model, request_body)`: decoded chat.completion.chunk dicts in,
  Responses SSE events out (`event: <type>\\ndata: <json>\\n\\n`), one bytes object per event;
- `error_body(...)` and `upstream_error(...)`: errors in OpenAI's shape, statuses kept.

Choices where Ollama is silent or falls short (each is tested in tests/test_translate_responses.py):

- `previous_response_id`, `conversation`, `store: true`, `background: true`, `item_reference`
  items and stored `prompt`s are refused with a 400 naming the field: nothing is stored here.
  (Ollama parses none of them and silently answers without the earlier context; `store` it never
  reads and always answers `store: false`, so an absent or false `store`, which Codex sends, passes.)
- `reasoning` input items are dropped (with a warning): chat completions has no portable field
  for earlier reasoning, and some upstreams reject one (DeepSeek's `reasoning_content`).
  Ollama feeds `encrypted_content` back as thinking; its models see their own template's field.
- Reasoning output (upstream `reasoning_content` or `reasoning`) becomes a `reasoning` item with
  one `summary_text` part, streamed as `response.reasoning_summary_text.delta`, as Ollama does
  and Codex shows (`response.reasoning_text.*` is raw chain of thought, which Codex hides).
- `max_output_tokens` → `max_tokens`: the field every OpenAI-compatible server reads (Ollama's
  own /v1/chat/completions reads only `max_tokens`; llama.cpp, vLLM, LM Studio too), and the one
  the addon sends for Ollama's `num_predict`. OpenAI's reasoning models want
  `max_completion_tokens`: pass `max_tokens_field="max_completion_tokens"` for those.
- `developer` messages → `system` (what OpenAI does for models without a developer role, and
  the role every chat template knows); adjacent system messages (`instructions`, Codex's two
  developer messages) are joined into one, as many chat templates take only one. `tool_choice` is honoured (Ollama ignores it); text
  before tool calls is kept (Ollama drops it).
- Tools: function tools as they are (`strict` kept); `namespace` tools (Codex sends one) as their
  member functions named `<namespace>__<name>`, answered back as `name` + `namespace` as the
  Responses API has it (Ollama names them `<namespace>.<name>`, which OpenAI rejects);
  `web_search` (Codex declares it in every request; Ollama runs it on its cloud search) is dropped
  with a warning; every other built-in tool is refused with a 400 naming its type.
- Images returned by a `function_call_output` go in a user message after the tool results:
  chat-completions tool messages carry text only.
- A stream that fails after it started ends with `error` and `response.failed`; the `error`
  event carries its message and code also as an `error` object, on which the openai SDKs raise
  `APIError` (as they do for the chat-completions error events of `/v1/chat/completions`).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for readers and type checkers: the shapes built here
    from openai.types.responses import Response, ResponseStreamEvent  # noqa: F401

__all__ = [
    "ResponsesError",
    "ResponsesStream",
    "Think",
    "error_body",
    "responses_answer",
    "responses_request",
    "upstream_error",
]

# Ollama's `think` values (False, "low", "medium", "high", "max") or None for "not asked":
# the caller sends it the way its upstream takes it (reasoning_effort, chat_template_kwargs, …).
type Think = bool | str | None


def _dict_or[D](value: Any, default: D) -> dict[str, Any] | D:
    """`value` if it is a JSON object, else `default` (one lookup, which the type checker narrows)."""
    return value if isinstance(value, dict) else default


def _list_or[D](value: Any, default: D) -> list[Any] | D:
    """`value` if it is a JSON array, else `default`."""
    return value if isinstance(value, list) else default


# ---------------------------------------------------------------------------------------------
# Errors


class ResponsesError(Exception):
    """A request or answer that cannot be translated; `body()` is OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    """OpenAI's `error.type` for a status (Ollama: 400 invalid_request_error, 404 not_found_error, else api_error)."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI answers errors."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


_MODEL_MISSING = re.compile(r"model.*(not found|does not exist|not exist|unknown)|unknown model|no such model", re.I)


def upstream_error(
    status: int, body: bytes | str | dict[str, Any] | None, reason: str = "", client_model: str | None = None
) -> tuple[int, dict[str, Any]]:
    """An upstream's error answer → (the same status, an OpenAI error body).

    OpenAI-shaped errors keep their message, type, param and code; anything else (text, HTML,
    `{"detail": …}`, `{"message": …}`) becomes a message. A 2xx status here means the upstream
    answered 200 with an error in the body: that is a bad gateway (502). With `client_model`, an
    unknown model (OpenAI's 404 `model_not_found`, llama.cpp's 400 "model … not found") is a 404
    `model_not_found` naming the client's model, as Ollama answers it.
    """
    status, out = _upstream_error(status, body, reason)
    error = out["error"]
    if (
        client_model is not None
        and status in (400, 404)
        and (error.get("code") == "model_not_found" or _MODEL_MISSING.search(error["message"]))
    ):
        said = f"model '{client_model}' not found" in error["message"]  # llama.cpp's words already
        message = error["message"] if said else f"model '{client_model}' not found: {error['message']}"
        return 404, error_body(404, message, None, "model_not_found")
    return status, out


def _upstream_error(status: int, body: bytes | str | dict[str, Any] | None, reason: str) -> tuple[int, dict[str, Any]]:
    status = status if 400 <= status <= 599 else 502
    parsed: Any = body
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = " ".join(text.split())[:500]
    error: Any = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("msg") or ""
        if not isinstance(message, str):
            message = json.dumps(message)
        out = error_body(status, message or _fallback_message(status, reason))
        for key in ("type", "param", "code"):
            value = error.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
                out["error"][key] = str(value)
        return status, out
    message = error if isinstance(error, str) and error else _fallback_message(status, reason)
    return status, error_body(status, message)


def _fallback_message(status: int, reason: str) -> str:
    return f"the upstream answered {status} {reason}".rstrip()


def _bad_request(message: str, param: str | None = None, code: str | None = None) -> ResponsesError:
    return ResponsesError(400, message, param, code)


def _bad_gateway(message: str) -> ResponsesError:
    return ResponsesError(502, message, None, "bad_upstream_answer")


# ---------------------------------------------------------------------------------------------
# Requests: Responses → chat completions

_STATELESS = (
    "this server's Responses API is stateless (as Ollama's): it stores no responses or conversations; "
    "send the whole conversation in `input`"
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Ollama's effort → think mapping (openai.go thinkFromReasoningEffort), with its error text.
_EFFORT_THINK: dict[str, Think] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}
# Accepted and answered as Ollama answers them, with nothing to send upstream.
_ACCEPTED = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "user",
    "metadata",
    "truncation",
    "include",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "prompt",
    "stream_options",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "client_metadata",
}
# Accepted, but what they ask for is not done: reported in the warnings.
_NOT_DONE = {"top_logprobs", "max_tool_calls", "context_management"}


def responses_request(
    body: dict[str, Any], upstream_model: str, *, max_tokens_field: str = "max_tokens"
) -> tuple[dict[str, Any], Think, list[str]]:
    """A Responses request body → (chat-completions body, think, warnings).

    `think` is None when the request does not ask for a reasoning effort; the caller sends it in
    its upstream's think style. Raises `ResponsesError` (400) for what cannot be translated.
    """
    if not isinstance(body, dict):
        raise _bad_request("the request body must be a JSON object")
    _refuse_state(body)
    warnings: list[str] = []
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad_request("Invalid type for 'instructions': expected a string.", "instructions", "invalid_type")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages = _join_adjacent_system(messages + _input_messages(body.get("input"), warnings))

    chat: dict[str, Any] = {"model": upstream_model, "messages": messages}
    tools = _tools(body.get("tools"), warnings)
    if tools:
        chat["tools"] = tools
        choice = body.get("tool_choice")
        if choice is not None:
            chat["tool_choice"], chat["tools"] = _tool_choice(choice, tools)
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif body.get("tool_choice") not in (None, "auto", "none"):
        raise _bad_request("tool_choice needs tools: the request declares none.", "tool_choice", "invalid_value")

    if (fmt := _response_format(body.get("text"), warnings)) is not None:
        chat["response_format"] = fmt
    think = _think(body.get("reasoning"))
    if (limit := body.get("max_output_tokens")) is not None:
        if not _is_int(limit) or limit < 1:
            raise _bad_request(
                "Invalid 'max_output_tokens': expected an integer of at least 1.", "max_output_tokens", "invalid_value"
            )
        chat[max_tokens_field] = limit
    for name in ("temperature", "top_p"):
        if (value := body.get(name)) is not None:
            if not _is_number(value):
                raise _bad_request(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
            chat[name] = value
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad_request("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    not_done = sorted(k for k in body if k in _NOT_DONE and body[k] is not None)
    if not_done:
        warnings.append(f"fields with no chat-completions equivalent were ignored: {', '.join(not_done)}")
    unknown = sorted(k for k in body if k not in _ACCEPTED and k not in _NOT_DONE)
    if unknown:
        warnings.append(f"unknown fields were ignored: {', '.join(unknown)}")
    return chat, think, warnings


def _refuse_state(body: dict[str, Any]) -> None:
    for name in ("previous_response_id", "conversation"):
        if body.get(name) not in (None, ""):
            raise _bad_request(f"'{name}' is not supported: {_STATELESS}.", name, "unsupported_parameter")
    if body.get("store") is True:
        raise _bad_request(
            f"'store: true' is not supported: {_STATELESS}; send 'store: false' or leave it out.",
            "store",
            "unsupported_value",
        )
    if body.get("background") is True:
        raise _bad_request(f"'background: true' is not supported: {_STATELESS}.", "background", "unsupported_value")
    if body.get("prompt") is not None:
        raise _bad_request(
            f"'prompt' (a stored prompt) is not supported: {_STATELESS}.", "prompt", "unsupported_parameter"
        )


def _input_messages(value: Any, warnings: list[str]) -> list[dict[str, Any]]:
    if value is None:
        raise _bad_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad_request(
            "Invalid type for 'input': expected a string or an array of input items.", "input", "invalid_type"
        )
    messages: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []  # images of the tool results just read, for a user message after them
    dropped_reasoning = 0
    for position, item in enumerate(value):
        where = f"input[{position}]"
        if not isinstance(item, dict):
            raise _bad_request(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
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
                raise _bad_request(
                    f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id", "missing_required_parameter"
                )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            tool_images += images
        elif kind == "reasoning":
            dropped_reasoning += 1
        elif kind == "item_reference":
            raise _bad_request(
                f"'{where}' is an item_reference, which is not supported: {_STATELESS}.", where, "unsupported_value"
            )
        elif kind is None:
            raise _bad_request(
                f"Missing required parameter: '{where}.type'.", f"{where}.type", "missing_required_parameter"
            )
        else:
            raise _bad_request(
                f"Unsupported input item type '{kind}' in '{where}': only messages, function_call, "
                "function_call_output and reasoning items can be translated to chat completions.",
                f"{where}.type",
                "unsupported_value",
            )
    if tool_images:
        messages.append({"role": "user", "content": tool_images})
    messages = _join_adjacent_system(messages)
    if dropped_reasoning:
        warnings.append(
            f"{dropped_reasoning} reasoning input item(s) were dropped: chat completions has no portable field for them"
        )
    return messages


def _join_adjacent_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
        raise _bad_request(
            f"Invalid value for '{where}.role': {item.get('role')!r}; expected user, assistant, system or developer.",
            f"{where}.role",
            "invalid_value",
        )
    texts, images = _content_parts(item.get("content"), f"{where}.content")
    if role == "assistant":
        if images:
            raise _bad_request(
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
        raise _bad_request(f"'{where}': only user messages can carry images.", f"{where}.content", "invalid_value")
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
        raise _bad_request(
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
                raise _bad_request(f"Invalid type for '{at}.text': expected a string.", f"{at}.text", "invalid_type")
            texts.append(text)
        elif kind == "refusal":
            refusal = part.get("refusal")
            texts.append(refusal if isinstance(refusal, str) else "")
        elif kind == "input_image":
            images.append(_image_part(part, at))
        elif kind == "input_file":
            raise _bad_request(
                f"'{at}': file inputs are not supported (Ollama: \"file inputs are not currently supported\").",
                at,
                "unsupported_value",
            )
        elif not isinstance(part, dict):
            raise _bad_request(f"Invalid type for '{at}': expected an object.", at, "invalid_type")
        else:
            raise _bad_request(
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
            raise _bad_request(
                f"'{at}': input_image with a file_id is not supported: nothing is uploaded here; "
                "send image_url with a URL or a data URL (data:image/png;base64,...).",
                f"{at}.file_id",
                "unsupported_value",
            )
        raise _bad_request(
            f"Missing required parameter: '{at}.image_url'.", f"{at}.image_url", "missing_required_parameter"
        )
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _add_function_call(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise _bad_request(
            f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id", "missing_required_parameter"
        )
    if not isinstance(name, str) or not name:
        raise _bad_request(
            f"Missing required parameter: '{where}.name'.", f"{where}.name", "missing_required_parameter"
        )
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


def _tools(tools: Any, warnings: list[str]) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad_request("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        at = f"tools[{position}]"
        if not isinstance(tool, dict):
            raise _bad_request(f"Invalid type for '{at}': expected an object.", at, "invalid_type")
        kind = tool.get("type")
        if kind == "function":
            out.append(_function_tool(tool, at, ""))
        elif kind == "namespace":
            out += _namespace_tools(tool, at, "")
        elif isinstance(kind, str) and kind.startswith("web_search"):
            # Codex declares web_search in every request; Ollama runs it on its own cloud search.
            # There is none here: the model answers without it, as if the tool was not offered.
            warnings.append(f"{at}: the built-in {kind} tool was dropped: there is no web search here")
        else:
            raise _bad_request(
                f"Tool type {kind!r} in '{at}' is not supported: the upstream runs chat completions, which "
                "take function tools only; built-in tools (file_search, computer_use, code_interpreter, "
                "image_generation, mcp, local_shell, custom, …) are not available here.",
                f"{at}.type",
                "unsupported_value",
            )
    return out


def _function_tool(tool: dict[str, Any], at: str, prefix: str) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _bad_request(f"Missing required parameter: '{at}.name'.", f"{at}.name", "missing_required_parameter")
    function: dict[str, Any] = {"name": prefix + name}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("parameters"), dict):
        function["parameters"] = tool["parameters"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _namespace_tools(tool: dict[str, Any], at: str, prefix: str) -> list[dict[str, Any]]:
    """A `namespace` tool (Codex groups its sub-agent tools in one) → its member functions, each
    named `<namespace>__<name>` (chat function names allow no dots, which Ollama uses)."""
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _bad_request(f"Missing required parameter: '{at}.name'.", f"{at}.name", "missing_required_parameter")
    members = tool.get("tools")
    if not isinstance(members, list):
        raise _bad_request(f"Invalid type for '{at}.tools': expected an array.", f"{at}.tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for position, member in enumerate(members):
        where = f"{at}.tools[{position}]"
        kind = member.get("type") if isinstance(member, dict) else None
        if kind == "function":
            out.append(_function_tool(member, where, f"{prefix}{name}{NAMESPACE_SEPARATOR}"))
        elif kind == "namespace":
            out += _namespace_tools(member, where, f"{prefix}{name}{NAMESPACE_SEPARATOR}")
        else:
            raise _bad_request(
                f"Tool type {kind!r} in '{where}' is not supported in a namespace: expected function tools.",
                f"{where}.type",
                "unsupported_value",
            )
    return out


NAMESPACE_SEPARATOR = "__"


def namespaced_names(request_body: Any) -> dict[str, tuple[str, str]]:
    """Flat chat function name → (namespace, name) for every namespaced function of a request."""
    out: dict[str, tuple[str, str]] = {}

    def walk(tools: Any, path: list[str]) -> None:
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue
            if tool.get("type") == "namespace":
                walk(tool.get("tools"), [*path, tool["name"]])
            elif tool.get("type") == "function" and path:
                out[NAMESPACE_SEPARATOR.join([*path, tool["name"]])] = (".".join(path), tool["name"])

    walk(request_body.get("tools") if isinstance(request_body, dict) else None, [])
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Responses `tool_choice` → (chat `tool_choice`, the tools to send)."""
    names = {t["function"]["name"] for t in tools}
    if choice in ("auto", "none", "required"):
        return choice, tools
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if name not in names:
            raise _bad_request(
                f"tool_choice names function {name!r}, which is not in 'tools'.", "tool_choice.name", "invalid_value"
            )
        return {"type": "function", "function": {"name": name}}, tools
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = [
            t.get("name") for t in choice.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"
        ]
        kept = [t for t in tools if t["function"]["name"] in allowed]
        if mode not in ("auto", "required") or not kept:
            raise _bad_request(
                "tool_choice allowed_tools needs mode auto or required and function tools from 'tools'.",
                "tool_choice",
                "invalid_value",
            )
        return mode, kept
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise _bad_request(
        f"Unsupported tool_choice {kind!r}: expected auto, none, required, {{type: function, name}} or allowed_tools.",
        "tool_choice",
        "invalid_value",
    )


def _response_format(text: Any, warnings: list[str]) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad_request("Invalid type for 'text': expected an object.", "text", "invalid_type")
    if text.get("verbosity") is not None:
        warnings.append("text.verbosity was ignored: chat completions has no portable equivalent")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad_request(
                "Missing required parameter: 'text.format.schema'.", "text.format.schema", "missing_required_parameter"
            )
        wrapped: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        if isinstance(fmt.get("description"), str):
            wrapped["description"] = fmt["description"]
        if isinstance(fmt.get("strict"), bool):
            wrapped["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": wrapped}
    raise _bad_request(
        f"Invalid value for 'text.format.type': {kind!r}; expected text, json_object or json_schema.",
        "text.format.type",
        "invalid_value",
    )


def _think(reasoning: Any) -> Think:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise _bad_request("Invalid type for 'reasoning': expected an object.", "reasoning", "invalid_type")
    effort = reasoning.get("effort")
    if effort is None or effort == "":
        return None
    if effort not in _EFFORT_THINK:
        raise _bad_request(
            f'invalid reasoning value: {json.dumps(effort)} (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")',
            "reasoning.effort",
            "invalid_value",
        )
    return _EFFORT_THINK[effort]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# Answers: chat completion → Response


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
    reasoning = _dict_or(request.get("reasoning"), None)
    text = _dict_or(request.get("text"), {})
    fmt = _dict_or(text.get("format"), {"type": "text"})
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
        "max_output_tokens": request.get("max_output_tokens") if _is_int(request.get("max_output_tokens")) else None,
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
        "temperature": request.get("temperature") if _is_number(request.get("temperature")) else 1.0,
        "text": echoed_text,
        "tool_choice": request.get("tool_choice") if request.get("tool_choice") is not None else "auto",
        "tools": tools,
        "top_logprobs": 0,
        "top_p": request.get("top_p") if _is_number(request.get("top_p")) else 1.0,
        "truncation": request.get("truncation") if request.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": usage,
        "user": request.get("user") if isinstance(request.get("user"), str) else None,
        "metadata": _dict_or(request.get("metadata"), {}),
    }


def _usage(usage: Any, strict: bool) -> dict[str, Any]:
    """Chat `usage` → Responses usage. `strict`: a usage that is there but not numbers is an error."""
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        if strict:
            raise _bad_gateway(f"the upstream's usage is not an object: {json.dumps(usage)[:200]}")
        usage = {}

    def count(source: Any, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            if strict:
                raise _bad_gateway(f"the upstream's usage.{key} is not a token count: {json.dumps(value)[:200]}")
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


def _status(finish_reason: Any) -> tuple[str, str | None]:
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def _text_of(value: Any) -> str:
    """Message content as text: a string, or the text of a list of parts (some servers answer parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text") or "" for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _reasoning_of(part: dict[str, Any]) -> str:
    """Reasoning text as upstreams name it: `reasoning_content` (DeepSeek, vLLM, llama.cpp) or `reasoning`."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(text := part.get(key), str) and text:
            return text
    return ""


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return json.dumps(arguments, ensure_ascii=False)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def _function_call_item(
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
    """A whole chat.completion → the Response object. Raises `ResponsesError` (502) for anything else."""
    answer = openai_chat_answer
    if not isinstance(answer, dict):
        raise _bad_gateway("the upstream's answer is not a JSON object")
    if answer.get("error") is not None:
        _, body = upstream_error(502, answer)
        raise _bad_gateway(f"the upstream answered an error: {body['error']['message']}")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad_gateway(f"the upstream's answer is not a chat completion (no choices): {json.dumps(answer)[:200]}")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _bad_gateway("the upstream's answer is not a chat completion (choices[0].message is missing)")
    usage = _usage(answer.get("usage"), strict=True)
    status, reason = _status(choice.get("finish_reason"))

    output: list[dict[str, Any]] = []
    if reasoning := _reasoning_of(message):
        output.append(_reasoning_item(new_id("rs"), reasoning))
    content: list[dict[str, Any]] = []
    if text := _text_of(message.get("content")):
        content.append(_text_part(text))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append(_refusal_part(message["refusal"]))
    calls = (
        [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
        if isinstance(message.get("tool_calls"), list)
        else []
    )
    if content or not calls:
        output.append(_message_item(new_id("msg"), content or [_text_part("")], "completed"))
    for call in calls:
        function = _dict_or(call.get("function"), {})
        name = found if isinstance(found := function.get("name"), str) else ""
        call_id = given if isinstance(given := call.get("id"), str) and given else new_id("call")
        output.append(
            _function_call_item(
                new_id("fc"),
                call_id,
                name,
                _arguments_text(function.get("arguments")),
                "completed",
                namespaced_names(request_body),
            )
        )
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


# ---------------------------------------------------------------------------------------------
# Streams: chat.completion.chunk dicts → Responses SSE events


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_event(event: dict[str, Any]) -> bytes:
    """One Responses SSE event: `event: <type>\\ndata: <json>\\n\\n`.

    A lone surrogate (JSON allows "\\ud800") becomes U+FFFD rather than failing to encode.
    """
    text = f"event: {event['type']}\ndata: {_json(event)}\n\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


# The codes a Response's `error.code` may take that can arise here (openai.types.responses.ResponseError).
_RESPONSE_ERROR_CODES = {"server_error", "rate_limit_exceeded", "invalid_prompt"}


@dataclass(slots=True)
class _Call:
    """One tool call of the stream, gathered by its upstream index."""

    call_id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    output_index: int | None = None  # set once its output item was announced
    item_id: str = ""


class ResponsesStream:
    """Decoded chat.completion.chunk dicts in, Responses SSE events out, in real time.

    `feed_event(chunk)` returns the events a chunk yields (possibly none), `finish()` the closing
    events and `response.completed` (or `response.incomplete` when the upstream stopped for
    length or content filter), `fail(message)` an `error` event and `response.failed`. The first
    call of any of them also opens the stream with `response.created` and `response.in_progress`.
    Items are announced when their first piece arrives: reasoning (summary text), the message
    (output_text and refusal parts), and one function_call per tool-call index, whose arguments
    stream as they come; a tool call is announced once its name is known. After `finish()` or
    `fail()` every call returns []. No method raises on odd input or emits an empty event.
    """

    def __init__(
        self,
        client_model: str,
        request_body: dict[str, Any],
        *,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self.client_model = client_model
        self.request_body = request_body if isinstance(request_body, dict) else {}
        self.response_id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.ended = False
        self.error: str | None = None  # the message of the final error event, once made
        self.response: dict[str, Any] | None = None  # the final Response once finished or failed
        self._sequence = 0
        self._started = False
        self._items: list[dict[str, Any]] = []  # by output_index
        self._open: set[int] = set()
        self._reasoning: int | None = None  # output_index of the open reasoning item
        self._message: int | None = None  # output_index of the open message item
        self._text_part: int | None = None  # content_index in the open message
        self._refusal_part: int | None = None
        self._calls: dict[Any, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._namespaces = namespaced_names(self.request_body)

    # -- public --------------------------------------------------------------------------------

    def start(self) -> list[bytes]:
        """`response.created` and `response.in_progress`, once."""
        if self._started or self.ended:
            return []
        self._started = True
        snapshot = self._response("in_progress", [])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed_event(self, openai_chunk: dict[str, Any]) -> list[bytes]:
        """The events one decoded upstream chunk yields."""
        if self.ended:
            return []
        out = self.start()
        chunk = openai_chunk if isinstance(openai_chunk, dict) else {}
        if chunk.get("error") is not None:
            _, body = upstream_error(502, chunk)
            return out + self.fail(body["error"]["message"])
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = _dict_or(choice.get("delta"), {})
        if reasoning := _reasoning_of(delta):
            out += self._reasoning_delta(reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._text_delta("text", delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            out += self._text_delta("refusal", delta["refusal"])
        calls = delta.get("tool_calls")
        for position, fragment in enumerate(calls if isinstance(calls, list) else ()):
            if isinstance(fragment, dict):
                out += self._tool_fragment(position, fragment)
        if isinstance(choice.get("finish_reason"), str):
            self._finish_reason = choice["finish_reason"]
        return out

    def finish(self) -> list[bytes]:
        """Close every open item and end with `response.completed` (or `response.incomplete`)."""
        if self.ended:
            return []
        out = self.start()
        status, reason = _status(self._finish_reason)
        for call in self._calls.values():  # tool calls whose name never came are announced now
            if call.output_index is None:
                out += self._announce_call(call)
        if not any(item["type"] in ("message", "function_call") for item in self._items):
            out += self._close_reasoning()  # an answer that is all reasoning still gets its (empty) message
            out += self._open_message()
            out += self._open_part("text")
        last = len(self._items) - 1
        for index in sorted(self._open):
            out += self._close(index, "incomplete" if status == "incomplete" and index == last else "completed")
        self.ended = True
        self.response = self._response(status, self._items, _usage(self._usage, strict=False), reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=self.response))
        return out

    def fail(self, message: str, code: str = "server_error") -> list[bytes]:
        """An `error` event and `response.failed`: the stream broke off after it started."""
        if self.ended:
            return []
        out = self.start()
        self.ended = True
        message = message if isinstance(message, str) and message else "the upstream stream failed"
        self.error = message
        for index in self._open:
            item = self._items[index]
            if item["type"] != "reasoning":
                item["status"] = "incomplete"
        self.response = self._response(
            "failed",
            self._items,
            _usage(self._usage, strict=False),
            error={"code": code if code in _RESPONSE_ERROR_CODES else "server_error", "message": message},
        )
        # `code`, `message`, `param`: the documented error event. `error`, the same again as an
        # object: what the openai SDKs raise on (APIError) instead of handing on a cut answer.
        error = {"type": error_type(500), "code": code, "message": message, "param": None}
        out.append(self._event("error", code=code, message=message, param=None, error=error))
        out.append(self._event("response.failed", response=self.response))
        return out

    # -- items ---------------------------------------------------------------------------------

    def _reasoning_delta(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._reasoning is None:
            out += self._close_text_item()
            index = self._add_item({"id": new_id("rs"), "type": "reasoning", "summary": []})
            self._reasoning = index
            item = self._items[index]
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            item["summary"].append({"type": "summary_text", "text": ""})
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        index = self._reasoning
        item = self._items[index]
        item["summary"][0]["text"] += text
        out.append(
            self._event(
                "response.reasoning_summary_text.delta",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                delta=text,
            )
        )
        return out

    def _text_delta(self, kind: str, text: str) -> list[bytes]:
        out = self._close_reasoning()
        if self._message is None:
            out += self._open_message()
        if (self._text_part if kind == "text" else self._refusal_part) is None:
            out += self._open_part(kind)
        index = self._message
        assert index is not None
        item = self._items[index]
        if kind == "text":
            part = self._text_part
            item["content"][part]["text"] += text
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=part,
                    delta=text,
                    logprobs=[],
                )
            )
        else:
            part = self._refusal_part
            item["content"][part]["refusal"] += text
            out.append(
                self._event(
                    "response.refusal.delta", item_id=item["id"], output_index=index, content_index=part, delta=text
                )
            )
        return out

    def _open_message(self) -> list[bytes]:
        index = self._add_item(_message_item(new_id("msg"), [], "in_progress"))
        self._message, self._text_part, self._refusal_part = index, None, None
        return [self._event("response.output_item.added", output_index=index, item=self._items[index])]

    def _open_part(self, kind: str) -> list[bytes]:
        index = self._message
        assert index is not None
        item = self._items[index]
        part = _text_part("") if kind == "text" else _refusal_part("")
        item["content"].append(part)
        position = len(item["content"]) - 1
        if kind == "text":
            self._text_part = position
        else:
            self._refusal_part = position
        return [
            self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=position, part=part
            )
        ]

    def _tool_fragment(self, position: int, fragment: dict[str, Any]) -> list[bytes]:
        key: Any = fragment.get("index")
        if not _is_int(key):  # servers that send calls without an index: by id, else a name starts a call
            call_id = fragment.get("id")
            known = [k for k, c in self._calls.items() if call_id and c.call_id == call_id]
            function = _dict_or(fragment.get("function"), {})
            if known:
                key = known[0]
            elif call_id or function.get("name") or not self._calls:
                key = ("unindexed", len(self._calls))
            else:
                key = next(reversed(self._calls))
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
        if isinstance(fragment.get("id"), str) and fragment["id"] and call.call_id is None:
            call.call_id = fragment["id"]
        function = _dict_or(fragment.get("function"), {})
        if call.output_index is None and isinstance(function.get("name"), str):
            call.name += function["name"]
        arguments = _arguments_text(function.get("arguments"))
        out: list[bytes] = []
        if call.output_index is None:
            if arguments:
                call.arguments.append(arguments)
            if call.name:
                out += self._announce_call(call)
        elif arguments:
            call.arguments.append(arguments)
            item = self._items[call.output_index]
            item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=arguments,
                )
            )
        return out

    def _announce_call(self, call: _Call) -> list[bytes]:
        out = self._close_reasoning() + self._close_text_item()
        call.call_id = call.call_id or new_id("call")
        call.item_id = new_id("fc")
        index = self._add_item(
            _function_call_item(call.item_id, call.call_id, call.name, "", "in_progress", self._namespaces)
        )
        call.output_index = index
        out.append(self._event("response.output_item.added", output_index=index, item=self._items[index]))
        if buffered := "".join(call.arguments):
            self._items[index]["arguments"] = buffered
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=call.item_id, output_index=index, delta=buffered
                )
            )
        return out

    def _close_reasoning(self) -> list[bytes]:
        return self._close(self._reasoning, "completed") if self._reasoning is not None else []

    def _close_text_item(self) -> list[bytes]:
        return self._close(self._message, "completed") if self._message is not None else []

    def _close(self, index: int, status: str) -> list[bytes]:
        if index not in self._open:
            return []
        self._open.discard(index)
        item = self._items[index]
        out: list[bytes] = []
        if item["type"] == "reasoning":
            self._reasoning = None
            text = item["summary"][0]["text"]
            out.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    text=text,
                )
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": text},
                )
            )
        elif item["type"] == "message":
            self._message = None
            for position, part in enumerate(item["content"]):
                if part["type"] == "output_text":
                    out.append(
                        self._event(
                            "response.output_text.done",
                            item_id=item["id"],
                            output_index=index,
                            content_index=position,
                            text=part["text"],
                            logprobs=[],
                        )
                    )
                else:
                    out.append(
                        self._event(
                            "response.refusal.done",
                            item_id=item["id"],
                            output_index=index,
                            content_index=position,
                            refusal=part["refusal"],
                        )
                    )
                out.append(
                    self._event(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=position,
                        part=part,
                    )
                )
            item["status"] = status
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            item["status"] = status
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _add_item(self, item: dict[str, Any]) -> int:
        self._items.append(item)
        index = len(self._items) - 1
        self._open.add(index)
        return index

    # -- events --------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        """Serialised at once, so later changes to the items do not reach events already made."""
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_event(event)

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            self.request_body,
            self.client_model,
            response_id=self.response_id,
            created_at=self.created_at,
            status=status,
            output=_copy(output),
            usage=usage,
            incomplete_reason=reason,
            error=error,
        )


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (items change after their events were built)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
