"""One rule for where an answer ends on every route (issue 22 §5): a limit above the model's known output
limit is lowered to it, and it goes in the field the model takes; the model's own stop sequences (the
catalog's `stop`, a Modelfile's `PARAMETER stop`) go with a request that names none. Through the addon's
real hooks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.inproc import client_flow, configured_proxy, run_request

CATALOG = """
[models."coder"]
upstream = "Qwen/Qwen3-Coder"
max_output_tokens = 8192
stop = ["\\n\\n", "</tool_call>"]
"""


@pytest.fixture(scope="module")
def addon():
    with configured_proxy(CATALOG) as (proxy, _):
        yield proxy


def sent(addon, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body that went upstream for this request."""
    flow = client_flow(route, body)
    run_request(addon, flow)
    assert flow.response is None, flow.response and flow.response.content
    assert flow.request.host == "api.example.com"
    return json.loads(flow.request.content)


def request(route: str, model: str, limit: int) -> dict[str, Any]:
    """The same wish on each route: an answer of at most `limit` tokens, as each API spells it."""
    hi = [{"role": "user", "content": "hi"}]
    return {
        "/api/chat": {"model": model, "messages": hi, "options": {"num_predict": limit}},
        "/api/generate": {"model": model, "prompt": "hi", "options": {"num_predict": limit}},
        "/api/generate (raw)": {"model": model, "prompt": "hi", "raw": True, "options": {"num_predict": limit}},
        "/v1/chat/completions": {"model": model, "messages": hi, "max_tokens": limit},
        "/v1/chat/completions (new field)": {"model": model, "messages": hi, "max_completion_tokens": limit},
        "/v1/completions": {"model": model, "prompt": "hi", "max_tokens": limit},
        "/v1/messages": {"model": model, "messages": hi, "max_tokens": limit},
        "/v1/responses": {"model": model, "input": "hi", "max_output_tokens": limit},
    }[route]


ROUTES = [
    "/api/chat",
    "/api/generate",
    "/api/generate (raw)",
    "/v1/chat/completions",
    "/v1/chat/completions (new field)",
    "/v1/completions",
    "/v1/messages",
    "/v1/responses",
]
TEXT_COMPLETIONS = ("/api/generate (raw)", "/v1/completions")  # {base}/completions: max_tokens is its only field


@pytest.mark.parametrize("route", ROUTES)
def test_a_limit_above_the_models_is_lowered(addon, route: str) -> None:
    """opencode asks 32000 of gpt-4o-mini (16384 at most), Claude Code 32000 and more: OpenAI refuses those."""
    body = sent(addon, route.split(" ")[0], request(route, "gpt-4o-mini", 32000))
    field = "max_completion_tokens" if route.endswith("(new field)") else "max_tokens"
    assert body[field] == 16384
    assert {"max_tokens", "max_completion_tokens"} & set(body) == {field}

    catalog = sent(addon, route.split(" ")[0], request(route, "coder", 32000))
    assert catalog[field] == 8192, "the catalog's max_output_tokens"


@pytest.mark.parametrize("route", ROUTES)
def test_a_limit_within_the_models_is_kept(addon, route: str) -> None:
    body = sent(addon, route.split(" ")[0], request(route, "gpt-4o-mini", 500))
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 500
    unknown = sent(addon, route.split(" ")[0], request(route, "my-own-model", 1_000_000))
    assert unknown.get("max_tokens", unknown.get("max_completion_tokens")) == 1_000_000, "no known limit: as asked"


@pytest.mark.parametrize("route", [r for r in ROUTES if r not in TEXT_COMPLETIONS])
def test_reasoning_models_get_the_field_they_take(addon, route: str) -> None:
    """OpenAI's o-series and GPT-5 refuse max_tokens: the limit goes as max_completion_tokens, lowered alike."""
    body = sent(addon, route.split(" ")[0], request(route, "o4-mini", 200000))
    assert body["max_completion_tokens"] == 100000 and "max_tokens" not in body


def own_stop(route: str) -> dict[str, Any]:
    """The same request with the client's own stop sequence, as each API spells it."""
    body = request(route, "coder", 100)
    if route.startswith("/api/"):
        body["options"]["stop"] = ["END"]
    elif route == "/v1/messages":
        body["stop_sequences"] = ["END"]
    else:
        body["stop"] = ["END"]
    return body


@pytest.mark.parametrize("route", ROUTES)
def test_the_models_stop_sequences_go_with_a_request_that_names_none(addon, route: str) -> None:
    """As Ollama applies a Modelfile's `PARAMETER stop`: the model's own when the request names none, the
    request's own otherwise (Responses has no stop field: always the model's)."""
    path = route.split(" ")[0]
    assert sent(addon, path, request(route, "coder", 100))["stop"] == ["\n\n", "</tool_call>"]
    assert "stop" not in sent(addon, path, request(route, "gpt-4o-mini", 100)), "a model without any: none"
    if route != "/v1/responses":
        assert sent(addon, path, own_stop(route))["stop"] == ["END"]
