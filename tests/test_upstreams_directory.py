"""Several upstreams, the per-server directory (addon/upstreams/directory.py): fetching, caching and
probing each server's model list, resolving client names; and the three-upstream harness of harness/upstream.py.

No test sleeps: time is a fake clock, except the bounded waits of a hanging server (tens of ms).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tomllib
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from addon.catalog.catalog import Catalog
from addon.mitm_internals import FailureKind
from addon.upstreams.directory import Resolution, ServersDirectory
from addon.upstreams.fetch import HttpFetcher, ListUnavailable
from addon.upstreams.health import Health, passive_verdict
from addon.upstreams.listings import ServerList
from addon.upstreams.servers import RouteRefusal, Server, ServerTable
from harness.servers import Clock, server, table
from harness.upstream import TRIO, UpstreamServer, servers_catalog, several

# ---------------------------------------------------------------------------------------------
# The per-server directory, with a fake fetcher


class FakeFetch:
    """Per server: a model list, an exception to raise, or "hang" (until released)."""

    def __init__(self, **answers: Any) -> None:
        self.answers: dict[str, Any] = answers
        self.calls: list[tuple[str, str | None]] = []  # (server, authorization sent)
        self.release = asyncio.Event()

    async def __call__(self, server: Server) -> Mapping[str, Mapping[str, Any]]:
        self.calls.append((server.name, server.authorization))
        await asyncio.sleep(0)  # let concurrent callers pile up on the shared task
        answer = self.answers[server.name]
        if answer == "hang":
            await self.release.wait()
            return {}
        if isinstance(answer, BaseException):
            raise answer
        return {model_id: {"id": model_id} for model_id in answer}

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)


def directory(fetch: FakeFetch, clock: Clock, catalog: Catalog | None = None, **kwargs: Any) -> ServersDirectory:
    servers = table(
        server("alpha", key="sk-alpha"),
        server("beta", key="sk-beta"),
        server("gamma", models=("gamma/*",), key="sk-gamma"),
        clock=clock,
    )
    kwargs.setdefault("first_wait", 1.0)
    kwargs.setdefault("fetch_timeout", 5.0)
    kwargs.setdefault("ttl", 300)
    return ServersDirectory(servers, catalog or Catalog(), fetch=fetch, clock=clock, **kwargs)


async def test_each_server_is_fetched_once_for_concurrent_lookups_with_its_own_key() -> None:
    fetch = FakeFetch(
        default=["gpt-4o-mini"], alpha=["shared", "alpha-only"], beta=["shared", "beta-only"], gamma=["gamma/x"]
    )
    models = directory(fetch, Clock())
    results = await asyncio.gather(*(models.listing() for _ in range(10)))
    assert sorted(fetch.calls) == [
        ("alpha", "Bearer sk-alpha"),
        ("beta", "Bearer sk-beta"),
        ("default", "Bearer sk-default-key"),
        ("gamma", "Bearer sk-gamma"),
    ], "one fetch per server, each with its own key"
    assert [m.name for m in results[0].models] == [
        "gpt-4o-mini:latest",
        "alpha-only:latest",
        "shared:latest",
        "beta-only:latest",
        "gamma/x:latest",
    ]
    assert results[0].served_by["shared:latest"] == ("alpha", "beta") and results[0].error is None
    await models.listing()
    assert len(fetch.calls) == 4, "cached for ttl"


async def test_a_hanging_server_does_not_delay_the_others() -> None:
    fetch = FakeFetch(default=["gpt-4o-mini"], alpha=["shared"], beta=["shared", "beta-only"], gamma="hang")
    clock = Clock()
    models = directory(fetch, clock, first_wait=0.02, fetch_timeout=0.1)
    models.start()
    began = time.monotonic()
    listing = await models.listing()
    assert time.monotonic() - began < 0.07, "the first listing waits at most first_wait for a server's first list"
    assert [m.name for m in listing.models] == ["gpt-4o-mini:latest", "shared:latest", "beta-only:latest"]
    assert listing.unlisted == ("gamma",) and listing.error == "server gamma: its model list is not known yet"
    began = time.monotonic()
    assert isinstance(await models.resolve("beta-only"), Resolution)
    assert time.monotonic() - began < 0.05, "after first_wait nothing waits for the hanging server again"
    await models.settle()  # gamma's fetch times out (fetch_timeout)
    assert (
        models.health.is_down("gamma")
        and "no answer to GET /models within 0.1 s" in models.health.state("gamma").reason
    )
    assert isinstance(models.resolve_now("gamma/model"), RouteRefusal), "its pattern's models are refused at once"
    clock.advance(301)  # every list is stale: refreshed in the background, the last good ones serve at once
    fetch.answers["alpha"] = "hang"
    began = time.monotonic()
    listing = await models.listing()
    assert time.monotonic() - began < 0.05 and "shared:latest" in [m.name for m in listing.models]
    fetch.release.set()
    await models.settle()


async def test_a_down_server_keeps_its_last_list_and_its_twin_takes_over(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ollama_proxy")
    fetch = FakeFetch(default=[], alpha=["shared", "alpha-only"], beta=["shared"], gamma=[])
    clock = Clock()
    models = directory(fetch, clock, ttl=0)
    await models.listing()
    assert models.resolve_now("shared").server.name == "alpha"
    fetch.answers["alpha"] = ConnectionError("cannot connect to http://alpha.test:8000/v1 (connection refused)")
    await asyncio.gather(*models.tick())  # ttl 0: stale at once
    assert models.health.is_down("alpha")
    listing = await models.listing()
    assert "alpha-only:latest" in [m.name for m in listing.models], "the last good list is kept for /api/tags"
    assert listing.errors["alpha"].startswith("cannot connect") and listing.error is None
    assert "alpha-only:latest" not in [m.name for m in models.available(listing)], "/api/ps: not while it is down"
    assert models.resolve_now("shared").server.name == "beta"
    refusal = models.resolve_now("alpha-only")
    assert isinstance(refusal, RouteRefusal) and "the only server for it, alpha, is down" in refusal.message
    assert refusal.retry_after == 1, "Retry-After: the next probe"
    # Probes: 1 s, then 2 s, 5 s, 10 s apart, until it answers.
    assert "alpha" not in models.due()
    clock.advance(1)
    assert "alpha" in models.due()
    await asyncio.gather(*models.tick())
    assert models.health.is_down("alpha") and fetch.count("alpha") == 3
    clock.advance(1.5)
    assert "alpha" not in models.due()
    clock.advance(0.5)
    fetch.answers["alpha"] = ["shared", "alpha-only"]
    await asyncio.gather(*models.tick())
    assert not models.health.is_down("alpha") and models.resolve_now("alpha-only").server.name == "alpha"
    downs = [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()]
    assert downs == [
        "server alpha is down: cannot connect to http://alpha.test:8000/v1 (connection refused); requests go to its twins, if any, "
        "until it answers again",
        "servers: default up · alpha down for 0 s (cannot connect to http://alpha.test:8000/v1 (connection refused)) · beta up · gamma up",
        "server alpha is up again (down for 3 s: cannot connect to http://alpha.test:8000/v1 (connection refused))",
        "servers: default up · alpha up · beta up · gamma up",
    ], "logged once per change of state, with the health of every server"


async def test_passive_reports_mark_and_schedule_a_probe() -> None:
    fetch = FakeFetch(default=[], alpha=["shared"], beta=["shared"], gamma=[])
    clock = Clock()
    models = directory(fetch, clock, probe_interval=3600)
    await models.listing()
    models.report("beta", passive_verdict(failure=FailureKind.CLIENT_GONE))
    models.report("beta", passive_verdict(404))
    assert not models.health.is_down("beta")
    models.report("alpha", passive_verdict(failure=FailureKind.REFUSED))
    assert models.health.is_down("alpha") and models.resolve_now("shared").server.name == "beta"
    models.report("beta", passive_verdict(failure=FailureKind.REFUSED))
    assert isinstance(models.resolve_now("shared"), RouteRefusal), "all of its servers are down: refused at once"
    assert models.due() == []
    clock.advance(1)
    assert models.due() == ["alpha", "beta"], "the probe is the model list, a second later"
    await asyncio.gather(*models.tick())
    assert models.resolve_now("shared").server.name == "alpha"
    models.report("alpha", passive_verdict(400))  # any answer below 500: up
    await models.close()


async def test_one_clients_failures_confirm_with_a_probe_and_never_mark_down() -> None:
    """Three 500s, or a generation that outlasts upstream_timeout, in a row: the server is asked
    itself (its list), and stays up when it answers (issue 21, §8)."""
    fetch = FakeFetch(default=[], alpha=["shared"], beta=["shared"], gamma=[])
    clock = Clock()
    models = directory(fetch, clock, probe_interval=3600)
    await models.listing()
    fetched = fetch.count("alpha")
    for _ in range(2):
        models.report("alpha", passive_verdict(500))
    models.report("alpha", passive_verdict(failure=FailureKind.SERVER_CLOSED, expired="open"))
    assert not models.health.is_down("alpha")
    await models.settle()
    assert fetch.count("alpha") == fetched + 1, "one probe of alpha"
    assert not models.health.is_down("alpha"), "it answered its probe: up"
    for _ in range(3):
        models.report("alpha", passive_verdict(502))
    await models.settle()
    assert fetch.count("alpha") == fetched + 1, "at most one probe a second"
    clock.advance(1)
    fetch.answers["alpha"] = ConnectionRefusedError("connection refused")
    for _ in range(3):
        models.report("alpha", passive_verdict(503))
    await models.settle()
    assert models.health.is_down("alpha"), "a failed probe marks it down"
    await models.close()


async def test_a_connection_broken_under_a_request_is_probed_at_once() -> None:
    """A reset or a close mid-answer (a server that died looks like this) asks the server at once: a
    dead one is down before the next request picks it, a live one stays up (issue 21, §8)."""
    fetch = FakeFetch(default=[], alpha=["shared"], beta=["shared"], gamma=[])
    clock = Clock()
    models = directory(fetch, clock, probe_interval=3600)
    await models.listing()
    fetched = fetch.count("alpha")
    models.report("alpha", passive_verdict(failure=FailureKind.RESET))
    await models.settle()
    assert fetch.count("alpha") == fetched + 1 and not models.health.is_down("alpha"), "probed; it answered: up"
    clock.advance(1)
    fetch.answers["alpha"] = ConnectionRefusedError("connection refused")
    models.report("alpha", passive_verdict(failure=FailureKind.BROKE_OFF))
    await models.settle()
    assert models.health.is_down("alpha"), "its probe failed: down after one broken answer"
    await models.close()


async def test_a_reachable_server_without_a_list_is_healthy_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ollama_proxy")
    fetch = FakeFetch(
        default=ListUnavailable("GET http://default.test:8000/v1/models answered 404 'not found'"),
        alpha=[],
        beta=[],
        gamma=[],
    )
    models = directory(fetch, Clock(), ttl=0, failed_retry=0)
    for _ in range(3):
        await models.listing()
        await models.settle()
    assert fetch.count("default") >= 3 and not models.health.is_down("default")
    fetch.answers["default"] = ["gpt-4o-mini"]
    await models.listing()
    await models.settle()
    lines = [r.getMessage() for r in caplog.records if "default" in r.getMessage()]
    assert lines == [
        "server default: cannot list its models: GET http://default.test:8000/v1/models answered 404 'not found'",
        "server default: its model list is available again",
    ]


async def test_resolution_of_client_names() -> None:
    catalog = Catalog.parse(
        {
            "servers": {
                "alpha": {"base_url": "http://alpha.test/v1"},
                "beta": {"base_url": "http://beta.test/v1"},
                "gamma": {"base_url": "http://gamma.test/v1"},
            },
            "models": {
                "llama3.2": {"upstream": "meta-llama/Llama-3.2-3B-Instruct", "server": "alpha", "think_style": "none"},
                "coder": {"upstream": "shared"},
            },
        },
        environ={},
    )
    fetch = FakeFetch(default=["gpt-4o-mini"], alpha=["shared"], beta=["qwen3:latest", "shared"], gamma=[])
    models = directory(fetch, Clock(), catalog)
    assert models.resolve_now("qwen3").server.name == "default", "before any list: the default server"
    pinned = await models.resolve("llama3.2")
    assert fetch.calls == [], "a catalog pin decides alone: nothing to wait for"
    assert (pinned.server.name, pinned.model_id, pinned.rule, pinned.think_style) == (
        "alpha",
        "meta-llama/Llama-3.2-3B-Instruct",
        "catalog",
        "none",
    )
    listed = await models.resolve("qwen3")
    assert (listed.server.name, listed.model_id, listed.rule) == ("beta", "qwen3:latest", "listed"), (
        "the name:tag form of a listed id"
    )
    assert listed.think_style == "reasoning_effort", "the server's, which is the option's"
    alias = await models.resolve("coder:latest")
    assert (alias.server.name, alias.model_id, alias.rule, alias.entry.name) == (
        "alpha",
        "shared",
        "listed",
        "coder:latest",
    )
    unknown = await models.resolve("mystery:latest")
    assert (unknown.server.name, unknown.model_id, unknown.rule) == ("default", "mystery", "default")
    assert models.upstream_id("gpt-4o-mini:latest") == "gpt-4o-mini"


async def test_info_without_fetching() -> None:
    catalog = Catalog.parse({"models": {"coder": {"upstream": "shared", "context_length": 4096}}})
    fetch = FakeFetch(default=[], alpha=[], beta=[], gamma=[])
    models = directory(fetch, Clock(), catalog)
    assert models.info("coder").context_length == 4096 and fetch.calls == []
    models._set_list("beta", ServerList({"qwen3:latest": {"context_length": 32768}}, None, 1.0))
    assert models.info("qwen3").context_length == 32768, "the entry of the server that lists it"
    assert models.info("unknown").upstream == "unknown"


async def test_info_is_inferred_once_per_model_and_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request asks `info`: what a model's name and list entry say is worked out once, again when a new
    list comes, and the cache of names (which clients choose) is bounded."""
    from addon.upstreams import directory as module

    models = directory(FakeFetch(default=[], alpha=[], beta=[], gamma=[]), Clock())
    first = models.info("text-embedder:latest")
    assert models.info("text-embedder:latest") is first and first.capabilities == ("embedding",)
    models._set_list("beta", ServerList({"qwen3:latest": {"context_length": 32768}}, None, 1.0))
    listed = models.info("qwen3")
    assert models.info("qwen3") is listed and listed.context_length == 32768
    models._set_list("beta", ServerList({"qwen3:latest": {"context_length": 65536}}, None, 2.0))
    assert models.info("qwen3").context_length == 65536, "a new list: inferred again"
    monkeypatch.setattr(module, "INFERENCE_CACHE", 3)
    for n in range(10):
        models.info(f"model-{n}")
    assert len(models._inference) <= 3


async def test_find_over_every_list() -> None:
    fetch = FakeFetch(default=["gpt-4o-mini"], alpha=["shared"], beta=ConnectionError("refused"), gamma=[])
    models = directory(fetch, Clock())
    found, why = await models.find("shared")
    assert found.upstream == "shared" and why is None
    found, why = await models.find("nothing")
    assert found.upstream == "nothing" and why == "server beta: refused", (
        "a server's list is unknown: defaults, flagged"
    )
    fetch.answers["beta"] = ["b"]
    await models.probe("beta")
    assert await models.find("nothing") == (None, None)


# ---------------------------------------------------------------------------------------------
# Real loopback upstreams: the fetcher, and the harness the e2e tests use


def test_the_three_upstream_harness() -> None:
    with several() as servers:
        alpha = servers["alpha"]
        models = httpx.get(
            alpha.base_url + "/models", headers={"authorization": f"Bearer {TRIO[0].key}"}, trust_env=False, timeout=5
        )
        assert [m["id"] for m in models.json()["data"]] == list(TRIO[0].models)
        wrong = httpx.get(
            alpha.base_url + "/models", headers={"authorization": f"Bearer {TRIO[1].key}"}, trust_env=False, timeout=5
        )
        assert wrong.status_code == 401 and alpha.fake.authorizations() == [
            f"Bearer {TRIO[0].key}",
            f"Bearer {TRIO[1].key}",
        ]
        alpha.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.get(alpha.base_url + "/models", trust_env=False, timeout=5)
        alpha.revive()
        assert (
            httpx.get(
                alpha.base_url + "/models",
                headers={"authorization": f"Bearer {TRIO[0].key}"},
                trust_env=False,
                timeout=5,
            ).status_code
            == 200
        )
        text, environment = servers_catalog(servers, extra='[models."pinned"]\nserver = "beta"\n')
        catalog = Catalog.parse(tomllib.loads(text), environ=environment)
        assert list(catalog.servers) == ["alpha", "beta", "gamma"] and catalog.servers["gamma"].models == ("gamma/*",)
        assert catalog.get("pinned").server == "beta"


async def test_http_fetcher_against_three_upstreams() -> None:
    with several() as servers:
        text, environment = servers_catalog(servers)
        catalog = Catalog.parse(tomllib.loads(text), environ=environment)
        default = UpstreamServer()  # the default server: the recorded OpenAI list, no key check
        with default:
            clock = Clock()
            health = Health(clock, log=None)
            servers_table = ServerTable.build(
                Server.default(default.base_url, "sk-default-0123456789"), catalog.servers, health=health
            )
            fetcher = HttpFetcher(timeout=5)
            models = ServersDirectory(servers_table, catalog, fetch=fetcher, clock=clock, first_wait=5, fetch_timeout=5)
            try:
                listing = await models.listing()
                names = [m.name for m in listing.models]
                assert {
                    "shared-model:latest",
                    "alpha-only:latest",
                    "beta-only:latest",
                    "gamma-only:latest",
                    "gpt-4o-mini:latest",
                } <= set(names)
                assert listing.served_by["shared-model:latest"] == ("alpha", "beta") and listing.error is None
                for spec in TRIO:  # keys never cross
                    assert set(servers[spec.name].fake.authorizations()) == {f"Bearer {spec.key}"}
                assert set(default.fake.authorizations()) == {"Bearer sk-default-0123456789"}
                servers["alpha"].kill()
                await models.probe("alpha")
                assert health.is_down("alpha") and "cannot connect" in health.state("alpha").reason
                assert models.resolve_now("shared-model").server.name == "beta"
                servers["alpha"].revive()
                await models.probe("alpha")
                assert not health.is_down("alpha") and models.resolve_now("shared-model").server.name == "alpha"
                servers["beta"].fake.models_gate = gate = threading.Event()  # beta's list hangs
                models.fetch_timeout = 0.3
                began = time.monotonic()
                await models.probe("beta")
                assert time.monotonic() - began < 1 and health.is_down("beta"), "the per-server timeout"
                gate.set()
                servers[
                    "gamma"
                ].fake.key = "sk-rotated-0123456789"  # a key the upstream no longer accepts: reachable, no list
                await models.probe("gamma")
                assert not health.is_down("gamma") and "answered 401" in models.lists()["gamma"].error
            finally:
                await models.close()


# ---------------------------------------------------------------------------------------------
# One server alone (no [servers.NAME] tables): the directory behaves as before several servers


ONE_CATALOG = {
    "models": {
        "llama3.2:latest": {"upstream": "gpt-4o-mini", "context_length": 128000},
        "coder": {"upstream": "qwen2.5-coder-32b", "think_style": "none", "family": "qwen2"},
        "qwen3:8b": {},
    }
}


def one_server(upstream: UpstreamServer, ttl: float = 300, list_upstream: bool = True) -> ServersDirectory:
    servers = ServerTable([Server.default(upstream.base_url, "k")], Health(log=None))
    return ServersDirectory(servers, Catalog.parse(ONE_CATALOG), ttl=ttl, list_upstream=list_upstream)


async def test_one_server_is_fetched_once_for_concurrent_lookups() -> None:
    with UpstreamServer() as upstream:
        upstream.fake.models = [
            {"id": "gpt-4o-mini", "created": 2},
            {"id": "qwen3:latest", "created": 1},
            {"bad": "entry"},
        ]
        models = one_server(upstream)
        try:
            assert not models.several and not models.warming
            models.start()
            assert upstream.fake.requests == [], "one server: fetched when a lookup first needs it, as before"
            assert models.upstream_id("gpt-4o-mini:latest") == "gpt-4o-mini", "before any list: only :latest is dropped"
            results = await asyncio.gather(*(models.listing() for _ in range(10)))
            assert len(upstream.fake.requests) == 1 and upstream.fake.requests[0].headers["authorization"] == "Bearer k"
            names = [m.name for m in results[0].models]
            assert names == ["llama3.2:latest", "coder:latest", "qwen3:8b", "gpt-4o-mini:latest", "qwen3:latest"]
            assert results[0].error is None
            assert models.upstream_id("llama3.2") == "gpt-4o-mini"
            assert models.upstream_id("qwen3") == "qwen3:latest", (
                "an upstream id with a tag is matched by its full name"
            )
            assert models.upstream_id("unknown:latest") == "unknown" and models.upstream_id("x:7b") == "x:7b"
            assert (await models.find("gpt-4o-mini"))[0].upstream == "gpt-4o-mini"
            assert await models.find("nothing") == (None, None)
            assert models.resolve_now("coder").think_style == "none"
            assert models.resolve_now("gpt-4o-mini").think_style == "reasoning_effort"
        finally:
            await models.close()


async def test_one_server_failure_keeps_the_last_list_or_the_catalog_and_is_never_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ollama_proxy")
    with UpstreamServer() as upstream:
        models = one_server(upstream, ttl=0)
        try:
            upstream.fake.queue(503, "overloaded")
            listing = await models.listing()
            assert [m.name for m in listing.models] == ["llama3.2:latest", "coder:latest", "qwen3:8b"]
            assert listing.error and "503" in listing.error
            assert "cannot list the upstream's models: GET " in caplog.text
            assert not models.health.is_down("default") and isinstance(models.resolve_now("x"), Resolution)
            found, error = await models.find("not-listed")
            assert found is not None and found.upstream == "not-listed" and error, "unknown list: defaults, flagged"
            await models.settle()
            upstream.fake.models = [{"id": "gpt-4o-mini"}]
            await models.listing()  # ttl 0: refreshed in the background, the last answer serves meanwhile
            await models.settle()
            assert (await models.listing()).error is None
            await models.settle()
            upstream.fake.queue(200, "not json", {"content-type": "text/plain"})
            await models.listing()
            await models.settle()
            listing = await models.listing()
            assert listing.error is None and "gpt-4o-mini:latest" in [m.name for m in listing.models], (
                "the last good list is kept"
            )
            models.report("default", passive_verdict(failure=FailureKind.REFUSED))
            assert not models.health.is_down("default"), "one server: no health to keep"
        finally:
            await models.settle()
            await models.close()


async def test_one_server_without_upstream_listing_fetches_nothing_for_the_listing() -> None:
    with UpstreamServer() as upstream:
        models = one_server(upstream, list_upstream=False)
        assert [m.name for m in (await models.listing()).models] == ["llama3.2:latest", "coder:latest", "qwen3:8b"]
        assert upstream.fake.requests == []
        await models.close()
