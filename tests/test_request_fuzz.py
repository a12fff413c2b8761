"""Any JSON value in any field of a request: a 400 in the route's family shape, or a valid upstream request.

Each route starts from a request that sets every field the proxy reads (nested ones too: content
blocks, tool results, tools, options …). Hypothesis replaces or removes the values at one to three
places of it with arbitrary JSON and sends it through the addon's real hooks (mitmproxy's test
helpers): the answer is a 400 in the family's error shape, or the request went upstream as a
request the openai SDK's types accept. Never a 500 (`internal proxy error`), never an untranslated
request.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from openai.types import completion_create_params as completion_params
from openai.types.chat import completion_create_params as chat_params
from pydantic import TypeAdapter, ValidationError

from harness.inproc import client_flow, configured_proxy, run_request

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}

MESSAGES: dict[str, Any] = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 1000,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c"}]}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "reading"},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": False,
                    "content": [
                        {"type": "text", "text": "file"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                        {"type": "tool_reference", "tool_name": "later"},
                    ],
                },
                {"type": "text", "text": "go on"},
            ],
        },
        {"role": "system", "content": "env"},
        {"role": "user", "content": "and?"},
    ],
    "tools": [
        {"name": "read", "description": "read a file", "input_schema": SCHEMA, "strict": True},
        {"name": "later", "input_schema": SCHEMA, "defer_loading": True},
        {"type": "web_search_20250305", "name": "web_search"},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 500},
    "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": SCHEMA}},
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "stop_sequences": ["END"],
    "stream": True,
    "metadata": {"user_id": "u"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
}

RESPONSES: dict[str, Any] = {
    "model": "codex-model",
    "instructions": "be brief",
    "input": [
        {"type": "message", "role": "developer", "content": "rules"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"},
            ],
        },
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "reading"}]},
        {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": '{"path":"a"}'},
        {"type": "function_call", "call_id": "call_2", "name": "spawn", "namespace": "agents", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "file"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "ok"}, {"type": "input_image", "image_url": "https://x/a.png"}],
        },
        {"role": "user", "content": "go on"},
    ],
    "tools": [
        {"type": "function", "name": "read", "description": "read a file", "parameters": SCHEMA, "strict": True},
        {
            "type": "namespace",
            "name": "agents",
            "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}],
        },
        {"type": "web_search"},
    ],
    "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "read"}]},
    "parallel_tool_calls": False,
    "text": {"format": {"type": "json_schema", "name": "out", "schema": SCHEMA, "strict": True}, "verbosity": "low"},
    "reasoning": {"effort": "high", "summary": "auto"},
    "max_output_tokens": 1000,
    "temperature": 0.5,
    "top_p": 0.9,
    "stream": True,
    "store": False,
    "metadata": {"k": "v"},
    "user": "u",
    "truncation": "auto",
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "k",
}

CHAT: dict[str, Any] = {
    "model": "qwen3-coder",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "look", "images": [PNG]},
        {
            "role": "assistant",
            "content": "",
            "thinking": "hmm",
            "tool_calls": [{"id": "c1", "function": {"name": "read", "arguments": {"path": "a"}, "index": 0}}],
        },
        {"role": "tool", "content": "file", "tool_name": "read", "tool_call_id": "c1"},
    ],
    "tools": [{"type": "function", "function": {"name": "read", "description": "d", "parameters": SCHEMA}}],
    "format": SCHEMA,
    "options": {"num_predict": 1000, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 1, "stop": ["END"]},
    "think": "high",
    "stream": True,
    "keep_alive": "5m",
    "logprobs": True,
    "top_logprobs": 2,
}

GENERATE: dict[str, Any] = {
    "model": "qwen3-coder",
    "prompt": "def f(",
    "system": "be brief",
    "context": [1, 2, 3],
    "images": [PNG],
    "format": "json",
    "options": {"num_predict": 1000, "temperature": 0.5, "stop": "END", "repeat_penalty": 1.1},
    "think": True,
    "stream": False,
}
RAW_GENERATE: dict[str, Any] = {
    "model": "qwen3-coder",
    "prompt": "def f(",
    "suffix": "return 1",
    "raw": True,
    "options": {"num_predict": 100000, "temperature": 0.5, "stop": ["END"], "seed": 3},
    "stream": True,
}

CHAT_COMPLETIONS: dict[str, Any] = {
    "model": "qwen3-coder",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "max_tokens": 32000,
    "max_completion_tokens": 32000,
    "tools": [{"type": "function", "function": {"name": "read", "parameters": SCHEMA}}],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.5,
}

CATALOG = """
[models."claude-sonnet-5-5"]
upstream = "gpt-4o-mini"

[models."codex-model"]
upstream = "o4-mini"

[models."qwen3-coder"]
upstream = "Qwen/Qwen3-Coder"
capabilities = ["completion", "tools", "thinking", "insert"]
think_style = "chat_template_kwargs"
max_output_tokens = 8192
"""

CHAT_PARAMS = TypeAdapter(chat_params.CompletionCreateParams)
COMPLETION_PARAMS = TypeAdapter(completion_params.CompletionCreateParams)


def _strict_json(raw: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(raw, parse_constant=refuse)


def ollama_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and body["error"]


def openai_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and error["message"]
        and error["type"] == "invalid_request_error"
    )


def anthropic_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and isinstance(error, dict)
        and error.get("type") == "invalid_request_error"
        and isinstance(error.get("message"), str)
        and error["message"]
    )


ROUTES = {  # name: (route, base request, the family's 400 shape, what a translated request must be)
    "messages": ("/v1/messages", MESSAGES, anthropic_error, "translated"),
    "count tokens": ("/v1/messages/count_tokens", MESSAGES, anthropic_error, "counted"),
    "responses": ("/v1/responses", RESPONSES, openai_error, "translated"),
    "chat": ("/api/chat", CHAT, ollama_error, "translated"),
    "generate": ("/api/generate", GENERATE, ollama_error, "translated"),
    "raw generate": ("/api/generate", RAW_GENERATE, ollama_error, "translated"),
    "chat completions": ("/v1/chat/completions", CHAT_COMPLETIONS, openai_error, "forwarded"),
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value: each object member and each array item, at any depth."""
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        out.append((*prefix, key))
        out += paths(item, (*prefix, key))
    return out


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "text", "image", "function", "user", "auto", "high", "base64", "json_schema", "none"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
# Values the translators test by identity (dicts and lists as dict keys, `in` a set): unhashable ones first.
odd_values = st.one_of(
    json_values,
    st.just({}),
    st.just([]),
    st.just({"type": "text"}),
    st.just([{"type": "text"}]),
    st.just({"type": None}),
    st.just(-1),
    st.just(0),
    st.just(True),
)


def mutate(base: Any, changes: list[tuple[tuple[Any, ...], Any, bool]]) -> Any:
    body = json.loads(json.dumps(base))
    for path, value, remove in changes:
        parent = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict) != isinstance(path[-1], str):
                continue  # an earlier change made an object an array or the other way round
            if remove:
                del parent[path[-1]]
            else:
                parent[path[-1]] = json.loads(json.dumps(value))  # a copy: hypothesis reuses its values
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced this place
    return body


def changes_for(base: dict[str, Any]) -> st.SearchStrategy[list[tuple[tuple[Any, ...], Any, bool]]]:
    return st.lists(st.tuples(st.sampled_from(paths(base)), odd_values, st.booleans()), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def addon():
    with configured_proxy(CATALOG, passthrough_options=True) as (proxy, _):
        yield proxy


def send(addon, route: str, body: Any) -> http.HTTPFlow:
    flow = client_flow(route, json.dumps(body).encode())  # (as JSON even when None: `null`)
    run_request(addon, flow)
    return flow


def check(addon, name: str, body: Any) -> None:
    route, _, family_error, translation = ROUTES[name]
    flow = send(addon, route, body)
    if flow.response is not None:
        status, answer = flow.response.status_code, _strict_json(flow.response.content.split(b"\n")[0])
        if status == 200 and translation == "counted":
            assert set(answer) == {"input_tokens"} and isinstance(answer["input_tokens"], int), answer
            return
        if status == 200 and route.startswith("/api/"):  # nothing to generate: Ollama loads the model
            assert answer["done_reason"] in ("load", "unload"), answer
            return
        if status == 404 and route == "/api/generate":  # Ollama's answer to an empty name
            assert answer == {"error": "model '' not found"} and not body.get("model"), answer
            return
        assert status == 400, (status, answer, body)
        assert family_error(answer), answer
        return
    assert flow.request.host == "api.example.com", "the request went upstream translated"
    sent = _strict_json(flow.request.content)
    if translation == "forwarded":  # as it came, but the model's name and the answer's length
        limits = ("max_tokens", "max_completion_tokens")
        assert {k: v for k, v in sent.items() if k not in limits} == {
            **{k: v for k, v in body.items() if k not in limits},
            "model": "Qwen/Qwen3-Coder" if body["model"] == "qwen3-coder" else body["model"],
        }
        for name in limits:
            if name in body and body["model"] == "qwen3-coder":
                asked = body[name]
                counted = isinstance(asked, int) and not isinstance(asked, bool)
                assert sent[name] == (min(asked, 8192) if counted else asked), "lowered to the model's limit"
        return
    try:
        if flow.request.path.endswith("/completions") and "messages" not in sent:
            COMPLETION_PARAMS.validate_python(sent)
        else:
            CHAT_PARAMS.validate_python(sent)
    except ValidationError as e:
        pytest.fail(f"{route}: an invalid upstream request {sent} for {body}: {e}")


@pytest.mark.parametrize("name", [name for name in ROUTES if ROUTES[name][3] != "counted"])
def test_the_base_requests_are_translated(addon, name: str) -> None:
    route, base, _, _ = ROUTES[name]
    flow = send(addon, route, base)
    assert flow.response is None, flow.response and flow.response.content
    check(addon, name, base)


def _fuzz(name: str):
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(changes=changes_for(ROUTES[name][1]))
    def test(addon, changes) -> None:
        check(addon, name, mutate(ROUTES[name][1], changes))

    return test


test_messages_fuzz = _fuzz("messages")
test_count_tokens_fuzz = _fuzz("count tokens")
test_responses_fuzz = _fuzz("responses")
test_chat_fuzz = _fuzz("chat")
test_generate_fuzz = _fuzz("generate")
test_raw_generate_fuzz = _fuzz("raw generate")
test_chat_completions_fuzz = _fuzz("chat completions")


@given(body=odd_values)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_body(addon, body) -> None:
    """A body that is any JSON value at all, on every route."""
    for route, _, family_error, kind in ROUTES.values():
        flow = send(addon, route, body)
        if flow.response is None:
            continue
        answer = _strict_json(flow.response.content.split(b"\n")[0])
        if kind == "counted" and flow.response.status_code == 200:
            assert isinstance(answer["input_tokens"], int)
        elif route.startswith("/api/") and flow.response.status_code == 200:  # {"model": "x"}: a load
            assert answer["done_reason"] in ("load", "unload")
        else:
            assert flow.response.status_code in (400, 404) and family_error(answer), answer


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("messages", ("messages", 1, "content", 2, "input", "path")),
        ("responses", ("input", 4, "arguments")),
        ("chat completions", ("messages", 1, "content")),
    ],
)
def test_json_nested_too_deeply(addon, name: str, path: tuple[Any, ...]) -> None:
    """Deeper than validation goes (255 levels): a 400 that says so in the family's shape, never a 500."""
    route, base, family_error, translation = ROUTES[name]
    deep: Any = {"a": 1}
    for _ in range(400):
        deep = [deep]
    flow = send(addon, route, mutate(base, [(path, deep, False)]))
    if translation == "forwarded":  # relayed as it is: the upstream judges it
        assert flow.response is None
        return
    answer = _strict_json(flow.response.content)
    assert flow.response.status_code == 400 and family_error(answer), answer
    assert "the request nests JSON too deeply" in json.dumps(answer) and "…" in json.dumps(answer, ensure_ascii=False)
