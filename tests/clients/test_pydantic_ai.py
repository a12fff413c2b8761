"""pydantic-ai's Ollama provider on the proxy's /v1 routes: a run, a streamed run, a tool round trip,
structured output, and a stream the upstream breaks off (an error, never a silently cut answer)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.ollama import OllamaProvider

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

from .conftest import CHAT_MODEL


def agent(proxy: Mitmdump, model: str = CHAT_MODEL, **kwargs: object) -> Agent:
    provider = OllamaProvider(base_url=f"{proxy.url}/v1")
    return Agent(OpenAIChatModel(model, provider=provider), **kwargs)  # type: ignore[arg-type]


def test_run(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("The sky scatters blue light.")
    result = agent(ollama_proxy).run_sync("Why is the sky blue?")
    assert result.output == "The sky scatters blue light."
    assert upstream.fake.requests[-1].body["model"] == "gpt-4o-mini"


async def test_streamed_run(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("one two three four")
    async with agent(ollama_proxy).run_stream("Count.") as run:
        pieces = [piece async for piece in run.stream_text(delta=True, debounce_by=None)]
    assert "".join(pieces) == "one two three four" and len(pieces) > 1


def test_tool_round_trip(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("", tool_calls=[{"name": "temperature", "arguments": {"city": "Paris"}}])
    upstream.fake.queue_reply("It is 21 degrees in Paris.")
    weather = agent(ollama_proxy)
    asked: list[str] = []

    @weather.tool_plain
    def temperature(city: str) -> int:
        """The temperature in a city, in degrees Celsius."""
        asked.append(city)
        return 21

    assert weather.run_sync("How warm is Paris?").output == "It is 21 degrees in Paris."
    assert asked == ["Paris"]
    tool_message = upstream.fake.requests[-1].body["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "21"


class City(BaseModel):
    name: str
    country: str


def test_structured_output(ollama_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    # pydantic-ai asks for its output through a tool call ("final_result") by default.
    upstream.fake.queue_reply(
        "", tool_calls=[{"name": "final_result", "arguments": {"name": "Paris", "country": "France"}}]
    )
    result = agent(ollama_proxy, output_type=City).run_sync("Name a city.")
    assert result.output == City(name="Paris", country="France")


@pytest.mark.parametrize("fault", ["reset", "close"])
async def test_a_broken_stream_is_an_error(ollama_proxy: Mitmdump, fault: str) -> None:
    with pytest.raises(ModelAPIError) as caught:
        async with agent(ollama_proxy, f"fault:{fault}").run_stream("Hello") as run:
            async for _ in run.stream_text(delta=True):
                pass
    assert "the upstream connection broke off" in str(caught.value)
