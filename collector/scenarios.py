"""The scripted exchanges the collector records and the replay tests repeat, and how their results compare.

A scenario is one call of the official `ollama` SDK (`client.<route>(**request)`). Run live, its
upstream exchange is recorded; replayed, the same call must give the same result. Results are
compared in a normal form without the values that depend on the clock.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Scenario:
    name: str
    route: str  # the SDK method: chat, generate, ...
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


def run(client: ollama.Client, scenario: Scenario) -> Any:
    """Call the SDK as the scenario says; the normal form of what came back (an error included)."""
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


def expected(scenario: Scenario, status: int, answer: bytes) -> Any:
    """What the SDK makes of a recorded Ollama answer, in the same normal form as `run`."""
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

WEATHER_TOOL = {
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
    ]


# ---------------------------------------------------------------------------------------------
# Scenarios from the real OpenAI recordings: the equivalent Ollama call, answered with the recording

_ROUTES_OF = {"chat": "chat", "chat-stream": "chat", "errors": "chat", "completions": "generate"}


def recording_scenarios() -> list[Scenario]:
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
