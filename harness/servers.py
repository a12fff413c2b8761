"""Test data and helpers shared by the several-upstreams tests (tests/test_upstreams_*.py): the issue's
example catalog with its environment, a fake clock, and servers, tables and lists made in one line."""

from __future__ import annotations

import logging
from typing import Any

from addon.upstreams.health import Health
from addon.upstreams.servers import BaseURL, Server, ServerTable

ENV = {
    "VLLM_KEY": "sk-vllm-aaaaaaaaaaaa",
    "OPENROUTER_API_KEY": "sk-or-bbbbbbbbbbbb",
    "OPENAI_KEY": "sk-oai-cccccccccccc",
}

ISSUE_EXAMPLE = """
[servers.vllm]
base_url = "http://gpu1:8000/v1"
api_key_env = "VLLM_KEY"
think_style = "chat_template_kwargs"
passthrough_options = true
models = ["meta-llama/*", "Qwen/*"]

[servers.openrouter]
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"
upstream_timeout = 600

[models."llama3.2"]
server = "vllm"
upstream = "meta-llama/Llama-3.2-3B-Instruct"
"""


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def server(name: str, models: tuple[str, ...] = (), key: str = "") -> Server:
    return Server(
        name=name,
        base_url=BaseURL.parse(f"http://{name}.test:8000/v1"),
        authorization=f"Bearer {key}" if key else None,
        think_style="reasoning_effort",
        passthrough_options=False,
        upstream_timeout=300,
        forward_client_key=False,
        models=models,
    )


def table(*named: Server, clock: Clock | None = None, **health: Any) -> ServerTable:
    return ServerTable(
        [server("default", key="sk-default-key"), *named],
        Health(clock or Clock(), log=logging.getLogger("ollama_proxy"), **health),
    )


def lists(**by_server: tuple[str, ...]) -> dict[str, frozenset[str]]:
    return {name: frozenset(ids) for name, ids in by_server.items()}
