"""Fixtures of the hostile suite (tests/hostile/README.md): the hostile upstream, a tarpit that
also serves as every proxy's reverse target (so that a request forwarded untranslated is seen),
and mitmdump processes that never fail at teardown (xfail tests must stay xfail)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hostile.evil import EvilUpstream, Tarpit
from hostile.tools import UPSTREAM_KEY, Quiet


@pytest.fixture(scope="session")
def evil() -> Iterator[EvilUpstream]:
    with EvilUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def sentinel() -> Iterator[Tarpit]:
    """The reverse-mode target of every hostile proxy: nothing may ever connect to it."""
    with Tarpit() as tarpit:
        yield tarpit


@pytest.fixture(autouse=True)
def _reset_evil(request: pytest.FixtureRequest) -> None:
    if "evil" in request.fixturenames:
        request.getfixturevalue("evil").reset()


@pytest.fixture
def start(evil: EvilUpstream, sentinel: Tarpit, tmp_path: Path) -> Iterator:
    """Start mitmdump processes running the addon in front of the hostile upstream, with the
    upstream key set and the sentinel as reverse target; extra `--set` settings as arguments."""
    started: list[Quiet] = []

    def run(
        *settings: str, base_url: str | None = None, key: str | None = UPSTREAM_KEY, mode: str | None = None, **kwargs
    ) -> Quiet:
        base = [f"openai_base_url={base_url or evil.base_url}"] + ([f"openai_api_key={key}"] if key else [])
        dump = Quiet(tmp_path, mode or f"reverse:http://127.0.0.1:{sentinel.port}", *base, *settings, **kwargs)
        started.append(dump)
        return dump

    yield run
    for dump in started:
        dump.stop()


@pytest.fixture(scope="session")
def shared(evil: EvilUpstream, sentinel: Tarpit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quiet]:
    """One proxy with default settings for the light tests that change nothing."""
    dump = Quiet(
        tmp_path_factory.mktemp("hostile"),
        f"reverse:http://127.0.0.1:{sentinel.port}",
        f"openai_base_url={evil.base_url}",
        f"openai_api_key={UPSTREAM_KEY}",
    )
    yield dump
    dump.stop()
