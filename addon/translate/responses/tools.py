"""Responses tools → chat-completions function tools (namespaces flattened), and `tool_choice`."""

from __future__ import annotations

from typing import Any

from addon.translate.responses.errors import bad_request


def function_tools(tools: Any, warnings: list[str]) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        at = f"tools[{position}]"
        if not isinstance(tool, dict):
            raise bad_request(f"Invalid type for '{at}': expected an object.", at, "invalid_type")
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
            raise bad_request(
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
        raise bad_request(f"Missing required parameter: '{at}.name'.", f"{at}.name", "missing_required_parameter")
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
        raise bad_request(f"Missing required parameter: '{at}.name'.", f"{at}.name", "missing_required_parameter")
    members = tool.get("tools")
    if not isinstance(members, list):
        raise bad_request(f"Invalid type for '{at}.tools': expected an array.", f"{at}.tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for position, member in enumerate(members):
        where = f"{at}.tools[{position}]"
        kind = member.get("type") if isinstance(member, dict) else None
        if kind == "function":
            out.append(_function_tool(member, where, f"{prefix}{name}{NAMESPACE_SEPARATOR}"))
        elif kind == "namespace":
            out += _namespace_tools(member, where, f"{prefix}{name}{NAMESPACE_SEPARATOR}")
        else:
            raise bad_request(
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


def tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Responses `tool_choice` → (chat `tool_choice`, the tools to send)."""
    names = {t["function"]["name"] for t in tools}
    if choice in ("auto", "none", "required"):
        return choice, tools
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if name not in names:
            raise bad_request(
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
            raise bad_request(
                "tool_choice allowed_tools needs mode auto or required and function tools from 'tools'.",
                "tool_choice",
                "invalid_value",
            )
        return mode, kept
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise bad_request(
        f"Unsupported tool_choice {kind!r}: expected auto, none, required, {{type: function, name}} or allowed_tools.",
        "tool_choice",
        "invalid_value",
    )
