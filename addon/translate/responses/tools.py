"""Responses tools → chat-completions function tools (namespaces flattened), and `tool_choice`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from addon.translate.responses.errors import bad_request
from addon.wire.model import JSON
from addon.wire.responses import FunctionChoice, FunctionTool, NamespaceTool, Other, Tool

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionToolChoiceOptionParam, ChatCompletionToolParam
    from openai.types.shared_params import FunctionDefinition

    from addon.wire.responses import ToolChoice

NAMESPACE_SEPARATOR = "__"
_MODES: dict[str, Literal["auto", "none", "required"]] = {"auto": "auto", "none": "none", "required": "required"}


def function_tools(tools: list[Tool], warnings: list[str]) -> list[ChatCompletionToolParam]:
    out: list[ChatCompletionToolParam] = []
    for position, tool in enumerate(tools):
        at = f"tools[{position}]"
        if isinstance(tool, FunctionTool):
            out.append(_function_tool(tool, ""))
        elif isinstance(tool, NamespaceTool):
            out += _namespace_tools(tool, at, "")
        elif isinstance(tool.type, str) and tool.type.startswith("web_search"):
            # Codex declares web_search in every request; Ollama runs it on its own cloud search.
            # There is none here: the model answers without it, as if the tool was not offered.
            warnings.append(f"{at}: the built-in {tool.type} tool was dropped: there is no web search here")
        else:
            raise bad_request(
                f"Tool type {tool.type!r} in '{at}' is not supported: the upstream runs chat completions, which "
                "take function tools only; built-in tools (file_search, computer_use, code_interpreter, "
                "image_generation, mcp, local_shell, custom, …) are not available here.",
                f"{at}.type",
                "unsupported_value",
            )
    return out


def _function_tool(tool: FunctionTool, prefix: str) -> ChatCompletionToolParam:
    function: FunctionDefinition = {"name": prefix + tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _namespace_tools(tool: NamespaceTool, at: str, prefix: str) -> list[ChatCompletionToolParam]:
    """A `namespace` tool (Codex groups its sub-agent tools in one) → its member functions, each
    named `<namespace>__<name>` (chat function names allow no dots, which Ollama uses)."""
    out: list[ChatCompletionToolParam] = []
    inner = f"{prefix}{tool.name}{NAMESPACE_SEPARATOR}"
    for position, member in enumerate(tool.tools):
        if isinstance(member, FunctionTool):
            out.append(_function_tool(member, inner))
        elif isinstance(member, NamespaceTool):
            out += _namespace_tools(member, f"{at}.tools[{position}]", inner)
        else:
            where = f"{at}.tools[{position}]"
            raise bad_request(
                f"Tool type {member.type!r} in '{where}' is not supported in a namespace: expected function tools.",
                f"{where}.type",
                "unsupported_value",
            )
    return out


def namespaced_names(request_body: JSON) -> dict[str, tuple[str, str]]:
    """Flat chat function name → (namespace, name) for every namespaced function of a request (the
    client's body as it came: its answer is made after the request was checked)."""
    out: dict[str, tuple[str, str]] = {}

    def walk(tools: JSON, path: list[str]) -> None:
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, dict) or not isinstance(name := tool.get("name"), str):
                continue
            if tool.get("type") == "namespace":
                walk(tool.get("tools"), [*path, name])
            elif tool.get("type") == "function" and path:
                out[NAMESPACE_SEPARATOR.join([*path, name])] = (".".join(path), name)

    walk(request_body.get("tools") if isinstance(request_body, dict) else None, [])
    return out


def tool_choice(
    choice: ToolChoice, tools: list[ChatCompletionToolParam]
) -> tuple[ChatCompletionToolChoiceOptionParam, list[ChatCompletionToolParam]]:
    """Responses `tool_choice` → (chat `tool_choice`, the tools to send)."""
    names = {t["function"]["name"] for t in tools if t["type"] == "function"}
    if isinstance(choice, str) and choice in _MODES:
        return _MODES[choice], tools
    if isinstance(choice, FunctionChoice):
        if choice.name not in names:
            raise bad_request(
                f"tool_choice names function {choice.name!r}, which is not in 'tools'.",
                "tool_choice.name",
                "invalid_value",
            )
        return {"type": "function", "function": {"name": choice.name}}, tools
    if isinstance(choice, str | Other):
        kind = choice if isinstance(choice, str) else choice.type
        raise bad_request(
            f"Unsupported tool_choice {kind!r}: expected auto, none, required, {{type: function, name}} or allowed_tools.",
            "tool_choice",
            "invalid_value",
        )
    allowed = {t.name for t in choice.tools if t.type == "function" and isinstance(t.name, str)}
    kept = [t for t in tools if t["type"] == "function" and t["function"]["name"] in allowed]
    if choice.mode not in ("auto", "required") or not kept:
        raise bad_request(
            "tool_choice allowed_tools needs mode auto or required and function tools from 'tools'.",
            "tool_choice",
            "invalid_value",
        )
    return _MODES[choice.mode], kept
