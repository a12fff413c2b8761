"""The scripted exchanges the collector records and the replay tests repeat, and how their results compare.

A scenario is one call of the official `ollama` SDK (`client.<route>(**request)`), or one request to
an agent's API (`messages`: POST /v1/messages, `responses`: POST /v1/responses, made with httpx).
Run live, its upstream exchange is recorded; replayed, the same call must give the same result.
Results are compared in a normal form without the values that depend on the clock, and without the
ids the proxy makes up for the agents' answers (`msg_…`, `resp_…`, …).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama
import pydantic

RECORDINGS = Path(__file__).parent.parent / "tests" / "fixtures" / "openai-recordings"
MANIFEST = "manifest.json"  # beside the flows: which scenarios they are, against what upstream
CLOCK_FIELDS = {
    "created_at",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
    "modified_at",
    "expires_at",
}
RESPONSE_TYPES: dict[str, type[pydantic.BaseModel]] = {
    "chat": ollama.ChatResponse,
    "generate": ollama.GenerateResponse,
    "embed": ollama.EmbedResponse,
    "embeddings": ollama.EmbeddingsResponse,
}


# The agents' APIs: scenario route → the proxy's path (a raw HTTP request, not an ollama SDK call).
HTTP_ROUTES = {"messages": "/v1/messages", "responses": "/v1/responses"}
# Ids the proxy makes up for the agents' answers (random: left out of the comparison).
_MADE_UP_ID = re.compile(r"^(msg|resp|rs|fc|toolu|req)_")
_MADE_UP_ID_KEYS = frozenset({"id", "item_id", "request_id"})
AGENT_CLOCK_FIELDS = frozenset({"created_at", "completed_at"})


@dataclass(frozen=True)
class Scenario:
    name: str
    route: str  # the SDK method: chat, generate, ...; or an agent's API: messages, responses
    request: dict[str, Any]
    upstream_answer: dict[str, Any] | None = None  # a recorded upstream response to serve, for recordings
    source: dict[str, Any] = field(default_factory=dict)  # provenance of a recording


def scenarios_of(manifest: dict[str, Any]) -> dict[str, Scenario]:
    """The scenarios a folder of flows was recorded from, by name."""
    found = (
        recording_scenarios()
        if manifest["scenarios"] == "recordings"
        else live_scenarios(manifest["model"], manifest["embed_model"])
    )
    return {s.name: s for s in found}


# ---------------------------------------------------------------------------------------------
# Running and comparing


def run(client: ollama.Client, scenario: Scenario, http: httpx.Client | None = None) -> Any:
    """Call the SDK as the scenario says (an agent's API: POST with `http`); the normal form of what came back."""
    if scenario.route in HTTP_ROUTES:
        if http is None:
            raise ValueError(f"scenario {scenario.name} needs an httpx client for {HTTP_ROUTES[scenario.route]}")
        response = http.post(HTTP_ROUTES[scenario.route], json=scenario.request)
        return agent_answer(response.status_code, response.content)
    try:
        result = getattr(client, scenario.route)(**scenario.request)
        if scenario.request.get("stream"):
            result = list(result)
    except ollama.ResponseError as e:
        return {"error": e.error, "status": e.status_code}
    return normalize(result)


def normalize(result: Any) -> Any:
    if isinstance(result, list):
        return [normalize(item) for item in result]
    if hasattr(result, "model_dump"):
        return _drop_clock(result.model_dump(exclude_none=True))
    return result


def _drop_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_clock(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list):
        return [_drop_clock(v) for v in value]
    return value


def agent_answer(status: int, body: bytes) -> Any:
    """An agent API's answer in normal form: {"status", "error"} for an error, the JSON object, or the
    SSE events as [event name, data] pairs; without the clock and the ids the proxy makes up."""
    if status != 200:
        return {"status": status, "error": _agent_normal(json.loads(body))}
    text = body.decode()
    if text.lstrip().startswith("{"):
        return _agent_normal(json.loads(text))
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append([fields.get("event", ""), _agent_normal(json.loads(fields["data"]))])
    return events


def _agent_normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _agent_normal(v)
            for k, v in value.items()
            if k not in AGENT_CLOCK_FIELDS
            and not (k in _MADE_UP_ID_KEYS and isinstance(v, str) and _MADE_UP_ID.match(v))
        }
    if isinstance(value, list):
        return [_agent_normal(v) for v in value]
    return value


def expected(scenario: Scenario, status: int, answer: bytes) -> Any:
    """What the SDK makes of a recorded Ollama answer, in the same normal form as `run`."""
    if scenario.route in HTTP_ROUTES:
        return agent_answer(status, answer)
    if status != 200:
        try:
            error = json.loads(answer).get("error", answer.decode())
        except ValueError:
            error = answer.decode()
        return {"error": error, "status": status}
    kind = RESPONSE_TYPES[scenario.route]
    if scenario.request.get("stream"):
        items = []
        for line in answer.splitlines():
            obj = json.loads(line)
            if "error" in obj:
                return {"error": obj["error"], "status": -1}
            items.append(kind.model_validate(obj))
        return normalize(items)
    return normalize(kind.model_validate(json.loads(answer)))


# ---------------------------------------------------------------------------------------------
# Scenarios against a live upstream

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def live_scenarios(model: str, embed_model: str) -> list[Scenario]:
    """Every feature of the routes that go upstream, streaming and not, errors included.

    Discovery (/api/tags, show, ps) reads the upstream's model list outside any flow, so it is
    covered by the live tests instead.
    """
    short = {"temperature": 0, "seed": 42, "num_predict": 24}
    user = [{"role": "user", "content": "Name three colours."}]
    return [
        Scenario("chat", "chat", {"model": model, "messages": user, "options": short, "stream": False}),
        Scenario("chat-stream", "chat", {"model": model, "messages": user, "options": short, "stream": True}),
        Scenario(
            "chat-system-multi-turn",
            "chat",
            {
                "model": model,
                "stream": False,
                "options": short,
                "messages": [
                    {"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": "What colour is the sky?"},
                    {"role": "assistant", "content": "Blue."},
                    {"role": "user", "content": "And grass?"},
                ],
            },
        ),
        Scenario(
            "chat-length",
            "chat",
            {"model": model, "messages": user, "options": {**short, "num_predict": 3}, "stream": True},
        ),
        Scenario(
            "chat-stop",
            "chat",
            {"model": model, "messages": user, "options": {**short, "stop": ["\n"]}, "stream": False},
        ),
        Scenario(
            "chat-format-json",
            "chat",
            {
                "model": model,
                "messages": [{"role": "user", "content": "Give a JSON object with a key colour."}],
                "format": "json",
                "options": short,
                "stream": True,
            },
        ),
        Scenario(
            "chat-format-schema",
            "chat",
            {
                "model": model,
                "messages": [{"role": "user", "content": "Name a colour."}],
                "options": short,
                "format": {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]},
                "stream": False,
            },
        ),
        Scenario(
            "chat-tools",
            "chat",
            {
                "model": model,
                "tools": [WEATHER_TOOL],
                "stream": False,
                "options": {**short, "num_predict": 48, "stop": ["</tool_call>"]},
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            },
        ),
        Scenario(
            "chat-tools-stream",
            "chat",
            {
                "model": model,
                "tools": [WEATHER_TOOL],
                "stream": True,
                "options": {**short, "num_predict": 48, "stop": ["</tool_call>"]},
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            },
        ),
        # llama-server's quirk: with tools and stop ["\n"], an answer that begins `<tool_call>` is
        # kept back by its tool-call parser while streamed and dropped at the stop (the stream
        # carries no text), while the same request whole answers the text `<tool_call>`.
        *(
            Scenario(
                "chat-tools-stop-newline" + ("-stream" if stream else ""),
                "chat",
                {
                    "model": model,
                    "tools": [WEATHER_TOOL],
                    "stream": stream,
                    "options": {**short, "num_predict": 64, "stop": ["\n"]},
                    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                },
            )
            for stream in (False, True)
        ),
        Scenario(
            "chat-tool-result",
            "chat",
            {
                "model": model,
                "tools": [WEATHER_TOOL],
                "stream": False,
                "options": short,
                "messages": [
                    {"role": "user", "content": "What is the weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
                    },
                    {"role": "tool", "tool_name": "get_weather", "content": "18 degrees and sunny"},
                ],
            },
        ),
        Scenario("chat-unknown-model", "chat", {"model": "no-such-model", "messages": user, "stream": False}),
        Scenario("chat-unknown-model-stream", "chat", {"model": "no-such-model", "messages": user, "stream": True}),
        Scenario(
            "generate",
            "generate",
            {"model": model, "prompt": "The capital of France is", "options": short, "stream": False},
        ),
        Scenario(
            "generate-stream",
            "generate",
            {"model": model, "prompt": "Count to five:", "system": "Be brief.", "options": short, "stream": True},
        ),
        Scenario(
            "generate-raw",
            "generate",
            {"model": model, "prompt": "Once upon a time", "raw": True, "options": short, "stream": True},
        ),
        Scenario(
            "generate-json",
            "generate",
            {
                "model": model,
                "prompt": "A JSON object with key a:",
                "format": "json",
                "options": short,
                "stream": False,
            },
        ),
        Scenario("generate-unknown-model", "generate", {"model": "no-such-model", "prompt": "x", "stream": False}),
        Scenario("embed", "embed", {"model": embed_model, "input": "The sky is blue."}),
        Scenario("embed-batch", "embed", {"model": embed_model, "input": ["first text", "second text", "third text"]}),
        Scenario("embed-dimensions", "embed", {"model": embed_model, "input": "short", "dimensions": 64}),
        Scenario("embed-unknown-model", "embed", {"model": "no-such-embedder", "input": "x"}),
        Scenario("embeddings-legacy", "embeddings", {"model": embed_model, "prompt": "The sky is blue."}),
        *agent_scenarios(model),
    ]


WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
COLOUR_SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}},
    "required": ["colour"],
    "additionalProperties": False,
}


def agent_scenarios(model: str) -> list[Scenario]:
    """The agents' APIs (/v1/messages for Claude Code, /v1/responses for Codex CLI), greedy and short.

    Their upstream requests all differ (server replay finds a flow by its request): the Responses
    scenarios ask other questions than the Messages ones.
    """
    question = [{"role": "user", "content": "Name three colours."}]
    messages = {"model": model, "max_tokens": 24, "temperature": 0, "messages": question}
    responses = {"model": model, "input": "Name three fruits.", "max_output_tokens": 24, "temperature": 0}
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    return [
        Scenario("messages", "messages", messages),
        Scenario("messages-stream", "messages", {**messages, "stream": True}),
        Scenario("messages-system", "messages", {**messages, "system": "Answer in one word."}),
        Scenario(
            "messages-tools-stream",
            "messages",
            {
                **messages,
                "max_tokens": 48,
                "messages": weather,
                "tools": [WEATHER_TOOL_ANTHROPIC],
                "stop_sequences": ["</tool_call>"],
                "stream": True,
            },
        ),
        Scenario(
            "messages-tool-result",
            "messages",
            {
                **messages,
                "tools": [WEATHER_TOOL_ANTHROPIC],
                "messages": [
                    *weather,
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 degrees and sunny"}
                        ],
                    },
                ],
            },
        ),
        Scenario("messages-unknown-model", "messages", {**messages, "model": "no-such-model"}),
        Scenario("responses", "responses", responses),
        Scenario("responses-stream", "responses", {**responses, "stream": True}),
        Scenario("responses-instructions", "responses", {**responses, "instructions": "Answer briefly."}),
        Scenario(
            "responses-json-schema",
            "responses",
            {
                **responses,
                "max_output_tokens": 32,
                "input": "Name a colour.",
                "text": {"format": {"type": "json_schema", "name": "colour", "schema": COLOUR_SCHEMA, "strict": True}},
            },
        ),
        Scenario(
            "responses-tool-result-stream",
            "responses",
            {
                **responses,
                "stream": True,
                "tools": [{"type": "function", **WEATHER_TOOL["function"]}],
                "input": [
                    {"role": "user", "content": "What is the weather in Rome?"},
                    {
                        "type": "function_call",
                        "call_id": "call_1",
                        "name": "get_weather",
                        "arguments": '{"city": "Rome"}',
                    },
                    {"type": "function_call_output", "call_id": "call_1", "output": "21 degrees and cloudy"},
                ],
            },
        ),
        Scenario("responses-unknown-model", "responses", {**responses, "model": "no-such-model"}),
    ]


# ---------------------------------------------------------------------------------------------
# Scenarios from the real OpenAI recordings: the equivalent Ollama call, answered with the recording

_ROUTES_OF = {"chat": "chat", "chat-stream": "chat", "errors": "chat", "completions": "generate"}


# Recordings the agents' APIs are also driven with (the same upstream answer, asked for by
# /v1/messages and by /v1/responses): text, a stream with usage, tool calls, reasoning, errors.
AGENT_RECORDINGS = (
    "chat/plain-text",
    "chat/tool-call-single",
    "chat-stream/plain-text-include-usage",
    "chat-stream/tool-call-fragments",
    "chat-stream/tool-calls-parallel",
    "chat-stream/reasoning-gpt-5-nano",
    "chat-stream/max-tokens-finish-length",
    "errors/404-model-not-found",
    "errors/429-rate-limit-request-too-large",
)


def recording_scenarios() -> list[Scenario]:
    return ollama_recording_scenarios() + agent_recording_scenarios()


def agent_recording_scenarios() -> list[Scenario]:
    """For each of AGENT_RECORDINGS, a /v1/messages and a /v1/responses request asking for what it recorded."""
    scenarios = []
    for name in AGENT_RECORDINGS:
        exchange = json.loads((RECORDINGS / f"{name}.json").read_text())
        body = exchange["request"]["body"] or {}
        source = {"recording": name, **exchange["source"]}
        stem = name.replace("/", "-")
        for route, request in (("messages", messages_request(body)), ("responses", responses_request(body))):
            scenarios.append(Scenario(f"{route}-{stem}", route, request, exchange["response"], source))
    return scenarios


def _texts(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The recorded request's system text and its other messages as plain user/assistant text turns."""
    system = "\n".join(m["content"] for m in body.get("messages", []) if m["role"] in ("system", "developer"))
    turns = []
    for message in body.get("messages", []):
        if message["role"] in ("user", "assistant") and isinstance(message.get("content"), str):
            turns.append({"role": message["role"], "content": message["content"]})
    return system, turns or [{"role": "user", "content": "hi"}]


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["function"] for t in body.get("tools", []) if t.get("type") == "function"]


def messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic Messages request that asks for what a recorded chat request asked for."""
    system, turns = _texts(body)
    request: dict[str, Any] = {"model": body["model"], "max_tokens": body.get("max_tokens") or 256, "messages": turns}
    if system:
        request["system"] = system
    if tools := _tools(body):
        request["tools"] = [
            {"name": t["name"], "description": t.get("description", ""), "input_schema": t["parameters"]} for t in tools
        ]
    if body.get("reasoning_effort"):
        request["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if body.get("stream"):
        request["stream"] = True
    return request


def responses_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses request that asks for what a recorded chat request asked for."""
    system, turns = _texts(body)
    request: dict[str, Any] = {"model": body["model"], "input": turns}
    if system:
        request["instructions"] = system
    if tools := _tools(body):
        request["tools"] = [{"type": "function", **t} for t in tools]
    if tokens := body.get("max_tokens") or body.get("max_completion_tokens"):
        request["max_output_tokens"] = tokens
    if body.get("reasoning_effort"):
        request["reasoning"] = {"effort": body["reasoning_effort"]}
    if body.get("stream"):
        request["stream"] = True
    return request


def ollama_recording_scenarios() -> list[Scenario]:
    scenarios = []
    for path in sorted(RECORDINGS.glob("*/*.json")):
        folder = path.parent.name
        exchange = json.loads(path.read_text())
        body = exchange["request"]["body"] or {}
        route = _ROUTES_OF.get(folder)
        if route is None or not exchange["request"]["path"].endswith(("chat/completions", "/completions")):
            continue
        request = ollama_request(body, route)
        if request is None:
            continue
        source = {"recording": f"{folder}/{path.stem}", **exchange["source"]}
        scenarios.append(Scenario(f"{folder}-{path.stem}", route, request, exchange["response"], source))
    return scenarios


def ollama_request(body: dict[str, Any], route: str) -> dict[str, Any] | None:
    """The Ollama call equivalent to a recorded OpenAI request, or None where Ollama has none."""
    request: dict[str, Any] = {"model": body["model"], "stream": bool(body.get("stream"))}
    options: dict[str, Any] = {
        name: body[name]
        for name in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
        if name in body
    }
    if "stop" in body:
        options["stop"] = body["stop"] if isinstance(body["stop"], list) else [body["stop"]]
    if tokens := body.get("max_tokens") or body.get("max_completion_tokens"):
        options["num_predict"] = tokens
    if options:
        request["options"] = options
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        request["format"] = "json"
    elif fmt.get("type") == "json_schema":
        request["format"] = fmt["json_schema"]["schema"]
    if effort := body.get("reasoning_effort"):
        request["think"] = {"minimal": "low"}.get(effort, effort)
    if route == "generate":
        if not isinstance(body.get("prompt"), str):
            return None
        return {**request, "prompt": body["prompt"], "raw": True}
    if body.get("tools"):
        request["tools"] = body["tools"]
    converted = [ollama_message(m) for m in body.get("messages", [])]
    messages = [m for m in converted if m is not None]
    if len(messages) != len(converted):
        return None
    names = {call.get("id"): call["function"]["name"] for m in messages for call in m.get("tool_calls", ())}
    for message in messages:
        if message["role"] == "tool":  # the SDK sends tool_name; tool_call_id is newer than it
            message["tool_name"] = names.get(message.get("tool_call_id"), "")
    request["messages"] = messages
    return request


def ollama_message(message: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {"role": message["role"] if message["role"] != "developer" else "system"}
    content = message.get("content")
    if isinstance(content, list):
        texts, images = [], []
        for part in content:
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                if not url.startswith("data:"):
                    return None  # Ollama takes images as base64 only
                images.append(url.split(",", 1)[1])
            else:
                return None
        out["content"] = "".join(texts)
        if images:
            base64.b64decode(images[0], validate=True)
            out["images"] = images
    elif content is None or isinstance(content, str):
        out["content"] = content or ""
    else:
        return None  # not expressible in Ollama's message format
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call["id"],
                "function": {
                    "name": call["function"]["name"],
                    "arguments": json.loads(call["function"]["arguments"] or "{}"),
                },
            }
            for call in message["tool_calls"]
        ]
    if message["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id")
    return out
