"""An Anthropic Messages request → the OpenAI chat request (`messages_request`), and the checks of
`count_tokens`; the conversation itself is translated in `messages`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from addon.translate.anthropic.errors import invalid
from addon.translate.anthropic.messages import chat_messages, fold_system_turns, system_messages
from addon.translate.anthropic.tokens import estimate_input_tokens
from addon.translate.values import is_int, is_number

Think = bool | str | None


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
        raise invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens: Field required")
    if not is_int(max_tokens) or max_tokens < 1:
        raise invalid("max_tokens: must be an integer of at least 1")
    warnings: list[str] = []
    out: dict[str, Any] = {"model": upstream_model}

    referenced: set[str] = set()
    messages = system_messages(body.get("system")) + chat_messages(body.get("messages"), warnings, referenced)
    out["messages"] = fold_system_turns(messages) if system_turns == "user" else messages

    if max_output_tokens is not None and max_tokens > max_output_tokens:
        warnings.append(f"max_tokens {max_tokens} was lowered to the model's limit of {max_output_tokens}")
        max_tokens = max_output_tokens
    out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if (value := body.get(name)) is not None:
            if not is_number(value):
                raise invalid(f"{name}: must be a number")
            out[name] = value
    if (top_k := body.get("top_k")) is not None:
        if not is_int(top_k):
            raise invalid("top_k: must be an integer")
        if passthrough:
            out["top_k"] = top_k
        else:
            warnings.append(
                "top_k has no OpenAI equivalent and was not sent upstream (see the passthrough_options setting)"
            )
    if (stops := body.get("stop_sequences")) is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stop_sequences: must be a list of strings")
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
        raise invalid("stream: must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    if (management := body.get("context_management")) is not None and not _only_clears_thinking(management):
        warnings.append("context_management was ignored: the proxy does not edit the conversation")
    unknown = sorted(k for k in body if k not in _KNOWN_FIELDS)
    if unknown:
        warnings.append(f"fields with no OpenAI equivalent were ignored: {', '.join(unknown)}")
    return Translated(out, warnings, think, soft, stream, estimate_input_tokens(body))


def _tools(tools: Any, referenced: set[str], warnings: list[str]) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools: must be a list")
    out: list[dict[str, Any]] = []
    dropped: list[str] = []
    for number, tool in enumerate(tools):
        at = f"tools.{number}"
        if not isinstance(tool, dict):
            raise invalid(f"{at}: must be an object")
        name, kind = tool.get("name"), tool.get("type")
        if kind not in (None, "custom"):
            dropped.append(f"{name or '?'} ({kind})")
            continue
        if not isinstance(name, str) or not name:
            raise invalid(f"{at}.name: Field required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid(f"{at}.input_schema: Field required (a JSON schema object)")
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
        raise invalid("tool_choice.type: must be one of auto, any, tool, none")
    kind = choice["type"]
    names = {t["function"]["name"] for t in tools}
    if kind == "tool" and (not isinstance(choice.get("name"), str) or not choice["name"]):
        raise invalid("tool_choice.name: Field required")
    if not tools:  # OpenAI refuses tool_choice without tools
        if kind != "none":
            warnings.append("tool_choice was ignored: no tools are sent upstream")
        return
    if kind == "tool":
        if choice["name"] not in names:
            raise invalid(f"tool_choice.name: no tool named {choice['name']!r} in tools")
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
            raise invalid("output_config: must be an object")
        raw = output_config.get("effort")
        if raw is not None:
            if not isinstance(raw, str) or raw.lower() not in _EFFORTS:
                raise invalid("output_config.effort: must be one of low, medium, high, max")
            effort = _EFFORTS[raw.lower()]
    if thinking is None:
        return effort, effort is not None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise invalid("thinking.type: must be one of enabled, disabled, adaptive")
    if thinking["type"] == "disabled":
        return False, False
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if budget is not None and (not is_int(budget) or budget < 1):
            raise invalid("thinking.budget_tokens: must be a positive integer")
        return effort or True, False
    return effort, effort is not None  # adaptive: the model decides; effort only as a hint


def _response_format(output_config: Any, output_format: Any) -> dict[str, Any] | None:
    """Structured outputs (`output_config.format`, the beta `output_format`) → OpenAI json_schema."""
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    fmt = fmt if fmt is not None else output_format
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise invalid("output_config.format: must be {type: json_schema, schema: {...}}")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}


def _only_clears_thinking(management: Any) -> bool:
    """Claude Code asks to clear old thinking on every request: done anyway, as thinking is not sent."""
    edits = management.get("edits") if isinstance(management, dict) else None
    return isinstance(edits, list) and all(
        isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking") for e in edits
    )


def count_tokens(body: Any) -> dict[str, int]:
    """`POST /v1/messages/count_tokens` → `{"input_tokens": n}`, the estimate above.

    The request is checked as a Messages request would be (without `max_tokens`): AnthropicError 400.
    """
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("model: Field required")
    referenced: set[str] = set()
    system_messages(body.get("system"))
    chat_messages(body.get("messages"), [], referenced)
    _tools(body.get("tools"), referenced, [])
    return {"input_tokens": estimate_input_tokens(body)}
