"""Shared fixtures: a fake OpenAI upstream on loopback and real mitmdump processes running the addon
(both from the `harness` package, which the collector uses too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import FakeOpenAI, UpstreamServer


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(FakeOpenAI()) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").fake.reset()


@pytest.fixture(scope="session")
def proxy(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    """The addon in reverse mode: a drop-in Ollama endpoint in front of the fake upstream."""
    dump = Mitmdump(
        tmp_path_factory.mktemp("reverse"),
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
    )
    yield dump
    dump.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Mitmdump]]:
    """Start extra mitmdump processes with their own settings; all are stopped after the test."""
    started: list[Mitmdump] = []

    def start(mode: str, *settings: str, **kwargs: Any) -> Mitmdump:
        dump = Mitmdump(tmp_path, mode, *settings, **kwargs)
        started.append(dump)
        return dump

    yield start
    for dump in started:
        dump.stop()
