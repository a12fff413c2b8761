"""The route table and the endpoints through the addon's hooks (mitmproxy's test helpers): discovery
answers, prefix routes, async routes, embeddings and /v1 rewritten and answered."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from addon import endpoints
from addon.catalog.catalog import Catalog
from addon.catalog.models import infer
from addon.endpoints import ollama_discovery as discovery
from addon.endpoints.openai import SSERelay
from harness.inproc import client_flow, configured_proxy


def test_show_answer_has_what_clients_read() -> None:
    model = Catalog.parse({"models": {"coder": {"upstream": "qwen2.5-coder", "context_length": 32768}}}).get("coder")
    directory = type("D", (), {"loaded_at": 1_700_000_000.0})()
    answer = discovery.show_answer(model, "coder", directory, copilot=False)  # type: ignore[arg-type]
    assert answer["model_info"] == {
        "general.architecture": "qwen",
        "general.basename": "qwen2.5-coder",
        "qwen.context_length": 32768,
    }
    assert "insert" in answer["capabilities"] and ".Suffix" in answer["template"], "Continue detects FIM by .Suffix"
    assert answer["parameters"].split() == ["num_ctx", "32768"] and answer["modified_at"] == "2023-11-14T22:13:20Z"
    assert (
        discovery.show_answer(infer("gpt-4o"), "gpt4", directory, copilot=True)["model_info"]["general.basename"]
        == "gpt4"
    )  # type: ignore[arg-type]
    assert ".Suffix" not in discovery.show_answer(infer("gpt-4o"), "x", directory, copilot=False)["template"]  # type: ignore[arg-type]


def test_show_answer_has_the_models_stop_sequences() -> None:
    """As Ollama shows a Modelfile's `PARAMETER stop`: in `parameters` (`%-30s %#v`) and in the Modelfile."""
    model = Catalog.parse({"models": {"g": {"stop": ["\n\n", "</tool_call>"]}}}).get("g")
    directory = type("D", (), {"loaded_at": 1_700_000_000.0})()
    answer = discovery.show_answer(model, "g", directory, copilot=False)  # type: ignore[arg-type]
    assert answer["parameters"].splitlines() == [
        f"{'num_ctx':<30} 8192",
        f"{'stop':<30} " + '"\\n\\n"',
        f"{'stop':<30} " + '"</tool_call>"',
    ]
    assert 'PARAMETER stop "\\n\\n"\nPARAMETER stop "</tool_call>"\n' in answer["modelfile"]


def test_prefix_routes() -> None:
    assert endpoints.find("/api/blobs/sha256:00") is not None and endpoints.find("/api/blobs/") is None
    assert endpoints.find("/v1/models/gpt-4o") is not None and endpoints.find("/v1/models") is not None
    assert endpoints.find("/v1/nothing") is None


@pytest.fixture
def addon():
    catalog = '[models."llama3.2"]\nupstream = "gpt-4o-mini"\n[models."e"]\nupstream = "text-embedding-3-small"\n'
    with configured_proxy(catalog) as (proxy, _):
        yield proxy


async def test_async_routes_answer_through_the_hook(addon) -> None:
    flow = client_flow("/api/tags", method="GET")
    await addon.request(flow)
    assert [m["name"] for m in json.loads(flow.response.content)["models"]] == ["llama3.2:latest", "e:latest"]
    flow = client_flow("/api/show", {"model": "llama3.2"})
    await addon.request(flow)
    assert json.loads(flow.response.content)["model_info"]["general.architecture"] == "gpt"


def test_embed_is_rewritten_and_answered(addon) -> None:
    flow = client_flow("/api/embed", {"model": "e", "input": "hi", "dimensions": 2})
    addon.request(flow)
    assert flow.request.url == "https://api.example.com/v1/embeddings"
    assert json.loads(flow.request.content) == {
        "model": "text-embedding-3-small",
        "input": ["hi"],
        "encoding_format": "float",
        "dimensions": 2,
    }
    assert flow.request.headers["authorization"] == "Bearer sk-unit"
    flow.response = tutils.tresp(
        headers=http.Headers(content_type="application/json"),
        content=json.dumps({"data": [{"index": 0, "embedding": [3.0, 4.0]}], "usage": {"prompt_tokens": 1}}).encode(),
    )
    addon.responseheaders(flow)
    addon.response(flow)
    answer = json.loads(flow.response.content)
    assert answer["model"] == "e" and answer["embeddings"] == [pytest.approx([0.6, 0.8])]
    assert flow.request.headers["authorization"] == "Bearer [redacted]"
    assert "POST /api/embed e → /v1/embeddings text-embedding-3-small · 200" in flow.comment


def test_v1_chat_is_forwarded_with_the_alias(addon) -> None:
    flow = client_flow("/v1/chat/completions", {"model": "llama3.2", "messages": [], "stream": True})
    addon.request(flow)
    assert flow.request.url == "https://api.example.com/v1/chat/completions"
    assert json.loads(flow.request.content)["model"] == "gpt-4o-mini"
    flow.response = tutils.tresp(
        headers=http.Headers(content_type="text/event-stream", content_length="99"), content=None
    )
    addon.responseheaders(flow)
    converter = flow.response.stream.converter
    assert isinstance(converter, SSERelay) and converter.model == "llama3.2"
    assert "content-length" not in flow.response.headers and flow.response.headers["transfer-encoding"] == "chunked"
    bad = client_flow("/v1/chat/completions", {"messages": []})
    addon.request(bad)
    assert (
        bad.response.status_code == 400 and json.loads(bad.response.content)["error"]["message"] == "model is required"
    )
