"""Several upstreams (addon/servers.py, addon/servers_directory.py): configuration, routing, health,
merged model lists and the per-server fetcher; and the three-upstream harness of tests/upstream.py.

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
from mitmproxy.exceptions import OptionsError

from addon.catalog import Catalog
from addon.servers import (
    BaseURL,
    Defaults,
    Health,
    RouteRefusal,
    Server,
    ServerList,
    ServerTable,
    listed_by,
    merge_listings,
    next_list,
    parse_servers,
    passive_failure,
)
from addon.servers_directory import HttpFetcher, ListUnavailable, Resolution, ServersDirectory
from upstream import TRIO, UpstreamServer, several, servers_catalog

ENV = {"VLLM_KEY": "sk-vllm-aaaaaaaaaaaa", "OPENROUTER_API_KEY": "sk-or-bbbbbbbbbbbb", "OPENAI_KEY": "sk-oai-cccccccccccc"}

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
    return Server(name, BaseURL.parse(f"http://{name}.test:8000/v1"), f"Bearer {key}" if key else None,
                  "reasoning_effort", False, 300, False, models, "")


def table(*named: Server, clock: Clock | None = None, **health: Any) -> ServerTable:
    return ServerTable([server("default", key="sk-default-key"), *named],
                       Health(clock or Clock(), log=logging.getLogger("ollama_proxy"), **health))


def lists(**by_server: tuple[str, ...]) -> dict[str, frozenset[str]]:
    return {name: frozenset(ids) for name, ids in by_server.items()}


# ---------------------------------------------------------------------------------------------
# Configuration


def test_the_issue_example_parses_and_inherits_the_global_options() -> None:
    catalog = Catalog.parse(tomllib.loads(ISSUE_EXAMPLE), "models.toml", ENV)
    assert list(catalog.servers) == ["vllm", "openrouter"]
    assert catalog.get("llama3.2").server == "vllm" and catalog.get("llama3.2").upstream == "meta-llama/Llama-3.2-3B-Instruct"
    defaults = Defaults(think_style="none", passthrough_options=False, upstream_timeout=120, forward_client_key=True)
    servers = ServerTable.build(Server.default("https://api.openai.com/v1", "sk-oai-cccccccccccc", defaults), catalog.servers, defaults)
    assert servers.names == ("default", "vllm", "openrouter")
    vllm, openrouter = servers["vllm"], servers["openrouter"]
    assert (vllm.think_style, vllm.passthrough_options, vllm.upstream_timeout, vllm.forward_client_key) == ("chat_template_kwargs", True, 120, True)
    assert (openrouter.think_style, openrouter.upstream_timeout) == ("none", 600), "unset keys inherit the options"
    assert vllm.models == ("meta-llama/*", "Qwen/*") and vllm.serves_pattern("Qwen/Qwen3-8B") and not vllm.serves_pattern("qwen/x")
    assert vllm.url("chat/completions") == "http://gpu1:8000/v1/chat/completions"
    assert openrouter.url("models") == "https://openrouter.ai:443/api/v1/models"


def test_keys_are_per_server_and_never_shown() -> None:
    catalog = Catalog.parse(tomllib.loads(ISSUE_EXAMPLE), "models.toml", ENV)
    servers = ServerTable.build(Server.default("https://api.openai.com/v1", "sk-oai-cccccccccccc"), catalog.servers)
    assert servers["vllm"].authorization == "Bearer sk-vllm-aaaaaaaaaaaa"
    assert servers["openrouter"].authorization == "Bearer sk-or-bbbbbbbbbbbb"
    assert servers.default.authorization == "Bearer sk-oai-cccccccccccc"
    assert servers["vllm"].key_source == "$VLLM_KEY" and servers.default.key_source == "openai_api_key"
    assert servers.secrets() == {"servers.default": "sk-oai-cccccccccccc", "servers.vllm": "sk-vllm-aaaaaaaaaaaa",
                                 "servers.openrouter": "sk-or-bbbbbbbbbbbb"}
    shown = repr(servers.servers) + repr(catalog)
    assert not any(key in shown for key in ENV.values()), "no repr shows a key"
    keyless = Catalog.parse({"servers": {"local": {"base_url": "http://127.0.0.1:8000/v1"}}}, environ={})
    assert Server.from_spec(keyless.servers["local"]).authorization is None


def test_the_default_server_keeps_todays_messages() -> None:
    with pytest.raises(OptionsError, match=r"^openai_base_url must be an http\(s\) URL"):
        Server.default("ftp://x", "")
    with pytest.raises(OptionsError, match="openai_base_url has an invalid port"):
        Server.default("http://x:99999/v1", "")
    assert Server.default("http://[::1]:8000/v1/", "").url("models") == "http://[::1]:8000/v1/models"


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"vllm": {"base_url": "http://a/v1", "base_ulr": "x"}}, r"\[servers.vllm\]: unknown key 'base_ulr' \(known: base_url, "),
        ({"vllm": {"base_url": "http://a/v1", "api_key": "sk-123"}}, r"\[servers.vllm\]: api_key is refused: a key never goes in the file"),
        ({"vllm": {"base_url": "http://a/v1", "api_key_env": "sk-live-123"}}, r"\[servers.vllm\]: api_key_env must be the NAME of an environment variable"),
        ({"vllm": {"base_url": "http://a/v1", "api_key_env": "NOT_SET_ANYWHERE"}},
         r"\[servers.vllm\]: api_key_env names the environment variable NOT_SET_ANYWHERE, which is not set"),
        ({"vllm": {"base_url": "http://a/v1", "api_key_env": "EMPTY"}}, r"\[servers.vllm\]: .*EMPTY, which is empty"),
        ({"vllm": {"api_key_env": "VLLM_KEY"}}, r"\[servers.vllm\]: base_url is required"),
        ({"vllm": {"base_url": "gpu1:8000"}}, r"\[servers.vllm\]: base_url must be an http\(s\) URL"),
        ({"vllm": {"base_url": "http://gpu1:http/v1"}}, r"\[servers.vllm\]: base_url has an invalid port"),
        ({"vllm": {"base_url": "http://a/v1", "think_style": "loud"}}, r"\[servers.vllm\]: think_style must be one of"),
        ({"vllm": {"base_url": "http://a/v1", "passthrough_options": "yes"}}, r"\[servers.vllm\]: passthrough_options must be true or false"),
        ({"vllm": {"base_url": "http://a/v1", "upstream_timeout": True}}, r"\[servers.vllm\]: upstream_timeout must be an integer"),
        ({"vllm": {"base_url": "http://a/v1", "upstream_timeout": -1}}, r"\[servers.vllm\]: upstream_timeout must be 0"),
        ({"vllm": {"base_url": "http://a/v1", "models": "meta-llama/*"}}, r"\[servers.vllm\]: models must be a list"),
        ({"vllm": {"base_url": "http://a/v1", "models": ["ok/*", ""]}}, r"\[servers.vllm\]: models must be a list of non-empty"),
        ({"default": {"base_url": "http://a/v1"}}, r"\[servers.default\]: the name 'default' is taken"),
        ({"my server": {"base_url": "http://a/v1"}}, r"\[servers.my server\]: invalid server name"),
        ({"vllm": "http://a/v1"}, r"\[servers.vllm\] must be a table"),
    ],
)
def test_server_errors_name_the_server(servers: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=r"^models.toml: " + message):
        Catalog.parse({"servers": servers}, "models.toml", {**ENV, "EMPTY": ""})


def test_catalog_entries_name_configured_servers_only() -> None:
    data = {"servers": {"vllm": {"base_url": "http://a/v1"}}, "models": {"x": {"server": "vlm"}}}
    with pytest.raises(OptionsError, match=r"""\[models."x"\]: server 'vlm' is not configured \(known: default, vllm; add a \[servers.vlm\] table\)"""):
        Catalog.parse(data, "models.toml", {})
    assert Catalog.parse({"models": {"x": {"server": "default"}}}).get("x").server == "default"
    with pytest.raises(OptionsError, match=r"server must be a string"):
        Catalog.parse({"models": {"x": {"server": 1}}})
    with pytest.raises(OptionsError, match=r"'servers' must be a table"):
        Catalog.parse({"servers": ["a"]})
    with pytest.raises(OptionsError, match=r"unknown top-level keys \['server'\] \(expected \[models.\"name\"\] and \[servers.NAME\] tables\)"):
        Catalog.parse({"server": {}})
    assert parse_servers({}) == {} and Catalog.parse({}).servers == {}


def test_catalog_file_with_servers(tmp_path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(ISSUE_EXAMPLE)
    catalog = Catalog.load(str(path), ENV)
    assert catalog.servers["vllm"].base_url.host == "gpu1"
    with pytest.raises(OptionsError, match=r"\[servers.vllm\]: api_key_env names the environment variable VLLM_KEY, which is not set"):
        Catalog.load(str(path), {})


# ---------------------------------------------------------------------------------------------
# Health


def test_health_state_machine(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = Health(clock, retry_after=30, soft_limit=3)
    caplog.set_level(logging.INFO, "ollama_proxy")
    assert health.is_healthy("a") and health.state("a").status == "up"
    assert health.mark_failed("a", "connection refused") is True
    assert not health.is_healthy("a") and health.is_down("a")
    clock.advance(5)
    assert health.mark_failed("a", "timed out") is False, "already down: no new transition"
    state = health.state("a")
    assert (state.status, state.reason, state.down_since, state.last_failure) == ("down", "timed out", 1000.0, 1005.0)
    clock.advance(29)
    assert not health.is_healthy("a")
    clock.advance(1)
    assert health.is_healthy("a") and health.state("a").status == "trial", "unprobed for retry_after: tried again"
    assert health.mark_failed("a", "connection refused") is False and not health.is_healthy("a"), "a failed trial is down again"
    assert health.mark_ok("a") is True and health.state("a").status == "up"
    assert health.mark_ok("a") is False
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["server a is down: connection refused; requests go to its twins, if any, until it answers again",
                     "server a is up again (down for 35 s: connection refused)"], "one line per change of state"


def test_soft_failures_take_several_in_a_row() -> None:
    health = Health(Clock(), soft_limit=3, log=None)
    assert not health.mark_failed("a", "answered 500", soft=True)
    assert not health.mark_failed("a", "answered 502", soft=True)
    assert health.state("a").soft_failures == 2 and health.is_healthy("a")
    health.mark_ok("a")  # a success in between starts the count again
    assert not health.mark_failed("a", "answered 500", soft=True) and not health.mark_failed("a", "answered 500", soft=True)
    assert health.mark_failed("a", "answered 503", soft=True) is True
    assert health.state("a").reason == "answered 503 (3 times in a row)"


def test_outstanding_requests() -> None:
    health = Health(Clock(), log=None)
    health.begin("a", "flow-1")
    health.begin("a", "flow-2")
    health.begin("b", "flow-3")
    assert (health.outstanding("a"), health.outstanding("b"), health.outstanding("c")) == (2, 1, 0)
    assert health.end("flow-1") == "a" and health.end("flow-1") is None, "ending twice is harmless"
    health.begin("b", "flow-2")  # re-routed: it moves
    assert (health.outstanding("a"), health.outstanding("b")) == (0, 2)
    assert health.end("unknown") is None


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (None, "[Errno 111] Connect call failed ('127.0.0.1', 9)", ("connection refused", False)),
        (None, "Connection refused", ("connection refused", False)),
        (None, "[Errno -2] Name or service not known", ("unknown host", False)),
        (None, "TLS handshake failed: certificate verify failed", ("TLS handshake failed", False)),
        (None, "the upstream did not accept the connection within 5 s (upstream_timeout)", ("timed out connecting", False)),
        (None, "the upstream sent nothing for 300 s (upstream_timeout)", ("timed out (upstream_timeout)", False)),
        (None, "Server closed connection.", ("closed the connection without answering", False)),
        (None, "the upstream connection broke off (peer closed connection)", ("the connection broke off mid-answer", False)),
        (None, "Client disconnected.", None),
        (None, "Connection killed.", None),
        (None, "upstream_timeout", ("timed out (upstream_timeout)", False)),
        (None, "HTTP protocol error in server reply", ("HTTP protocol error in server reply", False)),
        (500, None, ("answered 500", True)),
        (503, None, ("answered 503", True)),
        (501, None, None),
        (429, None, None),
        (404, None, None),
        (200, None, None),
    ],
)
def test_passive_failures(status: int | None, error: str | None, expected: tuple[str, bool] | None) -> None:
    assert passive_failure(status, error) == expected


def test_status_line() -> None:
    clock = Clock()
    health = Health(clock, log=None)
    health.begin("default", "f1")
    health.mark_failed("vllm", "connection refused")
    clock.advance(12)
    assert health.status_line(["default", "vllm"]) == "servers: default up (1 running) · vllm down for 12 s (connection refused)"


# ---------------------------------------------------------------------------------------------
# Routing


ALPHA = server("alpha", models=("alpha/*", "shared/*"), key="sk-alpha")
BETA = server("beta", models=("shared/*",), key="sk-beta")


def test_routing_rules_first_match_wins() -> None:
    servers = table(ALPHA, BETA)
    listed = lists(alpha=("a1", "both"), beta=("b1", "both", "alpha/listed-by-beta"))
    assert servers.pick("anything", "beta", listed) == ("catalog", BETA), "the catalog's server, whatever the lists say"
    assert servers.pick("a1", "default", listed) == ("catalog", servers.default)
    assert servers.pick("b1", None, listed) == ("listed", BETA)
    assert servers.pick("alpha/listed-by-beta", None, listed) == ("listed", BETA), "a list beats a pattern"
    assert servers.pick("alpha/x", None, listed) == ("pattern", ALPHA)
    assert servers.pick("gpt-4o-mini", None, listed) == ("default", servers.default)
    assert servers.pick("gpt-4o-mini", None, {}) == ("default", servers.default)
    assert servers.route("b1", None, listed) is BETA


def test_a_model_two_servers_list_fails_over_to_the_healthy_twin() -> None:
    clock = Clock()
    servers = table(ALPHA, BETA, clock=clock)
    listed = lists(alpha=("both",), beta=("both",))
    assert servers.route("both", None, listed) is ALPHA, "ties: configuration order"
    servers.health.mark_failed("alpha", "connection refused")
    assert servers.route("both", None, listed) is BETA
    assert servers.route("shared/x", None, {}) is BETA, "pattern twins fail over too"
    clock.advance(3)
    servers.health.mark_failed("beta", "answered 503 (3 times in a row)")
    refusal = servers.route("both", None, listed, asked="both:latest")
    assert isinstance(refusal, RouteRefusal)
    assert (refusal.status, refusal.rule, refusal.servers) == (503, "listed", ("alpha", "beta"))
    assert refusal.message == (
        "model 'both:latest': every server that serves it is down: alpha (connection refused, for 3 s); "
        "beta (answered 503 (3 times in a row), for 0 s); the proxy retries them in the background"
    )
    assert refusal.retry_after == 27, "until the sooner trial"
    servers.health.mark_ok("beta")
    assert servers.route("both", None, listed) is BETA


def test_least_outstanding_among_the_healthy() -> None:
    servers = table(ALPHA, BETA)
    listed = lists(alpha=("both",), beta=("both",))
    health = servers.health
    health.begin("alpha", "1")
    assert servers.route("both", None, listed) is BETA
    health.begin("beta", "2")
    health.begin("beta", "3")
    assert servers.route("both", None, listed) is ALPHA
    health.end("2")
    assert servers.route("both", None, listed) is ALPHA, "1 each: configuration order"
    health.mark_failed("alpha", "connection refused")
    assert servers.route("both", None, listed) is BETA, "the least loaded must be healthy"


def test_a_pinned_model_has_no_failover_and_a_down_default_refuses_at_once() -> None:
    servers = table(ALPHA, BETA)
    servers.health.mark_failed("alpha", "connection refused")
    refusal = servers.route("m", "alpha", lists(beta=("m",)), asked="llama3.2")
    assert isinstance(refusal, RouteRefusal) and refusal.rule == "catalog"
    assert refusal.message.startswith("model 'llama3.2': its catalog entry's server, alpha, is down (connection refused, for 0 s)")
    assert isinstance(servers.route("alpha/x", None, {}), RouteRefusal), "the only server its pattern names"
    servers.health.mark_failed("default", "timed out")
    refusal = servers.route("gpt-4o-mini", None, {})
    assert isinstance(refusal, RouteRefusal) and refusal.rule == "default"
    assert refusal.message.startswith("model 'gpt-4o-mini': the default server (http://default.test:8000/v1) is down (timed out")


def test_table_invariants() -> None:
    with pytest.raises(ValueError, match="default"):
        ServerTable([ALPHA])
    with pytest.raises(ValueError, match="distinct"):
        ServerTable([server("default"), ALPHA, ALPHA])
    servers = table(ALPHA)
    assert len(servers) == 2 and [s.name for s in servers] == ["default", "alpha"] and servers.get(None) is None
    assert not servers.any_forwards_client_key


# ---------------------------------------------------------------------------------------------
# Merged model lists


def test_merged_listing_catalog_first_each_model_once() -> None:
    catalog = Catalog.parse({"models": {"mini": {"upstream": "gpt-4o-mini"}, "pinned": {"server": "default"}}})
    per_server = [
        ("default", ServerList({"gpt-4o-mini": {"created": 1}, "old": {"created": 0}, "new": {"created": 5}}, None, 1.0)),
        ("alpha", ServerList({"new": {"created": 9}, "alpha-only": {}}, None, 1.0)),
        ("beta", ServerList(None, "cannot connect", None)),
    ]
    merged = merge_listings(catalog.models.values(), per_server)
    assert [m.name for m in merged.models] == ["mini:latest", "pinned:latest", "new:latest", "gpt-4o-mini:latest", "old:latest", "alpha-only:latest"]
    assert merged.models[2].created == 5, "a model several servers list: the first server's entry"
    assert merged.served_by["new:latest"] == ("default", "alpha") and merged.served_by["mini:latest"] == ("default",)
    assert merged.served_by["pinned:latest"] == ("default",), "a catalog pin: its server"
    assert merged.unlisted == ("beta",) and merged.errors == {"beta": "cannot connect"}
    assert merged.error == "server beta: cannot connect"
    only_catalog = merge_listings(catalog.models.values(), per_server, show_servers=False)
    assert [m.name for m in only_catalog.models] == ["mini:latest", "pinned:latest"] and only_catalog.error is None


def test_a_failed_fetch_keeps_the_last_good_list() -> None:
    first = next_list(ServerList(), {"a": {}, "b": {}}, now=10.0)
    assert first == ServerList({"a": {}, "b": {}}, None, 10.0)
    failed = next_list(first, ConnectionError("connection refused"), now=20.0)
    assert failed.entries == first.entries and failed.error == "connection refused" and failed.fetched_at == 10.0
    assert next_list(ServerList(), TimeoutError(), 5.0) == ServerList(None, "TimeoutError", None)
    again = next_list(failed, {"c": {}}, now=30.0)
    assert again == ServerList({"c": {}}, None, 30.0)
    assert listed_by({"x": failed, "y": ServerList(), "z": again}) == {"x": frozenset({"a", "b"}), "z": frozenset({"c"})}
    merged = merge_listings([], [("x", failed)])
    assert [m.name for m in merged.models] == ["a:latest", "b:latest"] and merged.error is None and merged.errors == {"x": "connection refused"}


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
    servers = table(server("alpha", key="sk-alpha"), server("beta", key="sk-beta"), server("gamma", models=("gamma/*",), key="sk-gamma"),
                    clock=clock)
    kwargs.setdefault("first_wait", 1.0)
    kwargs.setdefault("fetch_timeout", 5.0)
    kwargs.setdefault("ttl", 300)
    return ServersDirectory(servers, catalog or Catalog(), fetch=fetch, clock=clock, **kwargs)


async def test_each_server_is_fetched_once_for_concurrent_lookups_with_its_own_key() -> None:
    fetch = FakeFetch(default=["gpt-4o-mini"], alpha=["shared", "alpha-only"], beta=["shared", "beta-only"], gamma=["gamma/x"])
    models = directory(fetch, Clock())
    results = await asyncio.gather(*(models.listing() for _ in range(10)))
    assert sorted(fetch.calls) == [("alpha", "Bearer sk-alpha"), ("beta", "Bearer sk-beta"), ("default", "Bearer sk-default-key"),
                                   ("gamma", "Bearer sk-gamma")], "one fetch per server, each with its own key"
    assert [m.name for m in results[0].models] == ["gpt-4o-mini:latest", "alpha-only:latest", "shared:latest", "beta-only:latest",
                                                   "gamma/x:latest"]
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
    assert models.health.is_down("gamma") and "no answer to GET /models within 0.1 s" in models.health.state("gamma").reason
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
    for _ in range(2):
        models.report("alpha", status=502)
    assert not models.health.is_down("alpha"), "one or two 5xx may be about the request"
    models.report("alpha", status=200)
    models.report("alpha", status=500)
    models.report("alpha", status=500)
    assert not models.health.is_down("alpha"), "a success in between resets the count"
    models.report("alpha", status=500)
    assert models.health.is_down("alpha") and models.resolve_now("shared").server.name == "beta"
    models.report("beta", error="Client disconnected.")
    models.report("beta", status=404)
    assert not models.health.is_down("beta")
    models.report("beta", error="[Errno 111] Connect call failed ('127.0.0.1', 1)")
    assert isinstance(models.resolve_now("shared"), RouteRefusal), "all of its servers are down: refused at once"
    assert models.due() == []
    clock.advance(1)
    assert models.due() == ["alpha", "beta"], "the probe is the model list, a second later"
    await asyncio.gather(*models.tick())
    assert models.resolve_now("shared").server.name == "alpha"
    models.report("alpha", status=400)  # any answer below 500: up
    await models.close()


async def test_a_reachable_server_without_a_list_is_healthy_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ollama_proxy")
    fetch = FakeFetch(default=ListUnavailable("GET http://default.test:8000/v1/models answered 404 'not found'"), alpha=[], beta=[], gamma=[])
    models = directory(fetch, Clock(), ttl=0, failed_retry=0)
    for _ in range(3):
        await models.listing()
        await models.settle()
    assert fetch.count("default") >= 3 and not models.health.is_down("default")
    fetch.answers["default"] = ["gpt-4o-mini"]
    await models.listing()
    await models.settle()
    lines = [r.getMessage() for r in caplog.records if "default" in r.getMessage()]
    assert lines == ["server default: cannot list its models: GET http://default.test:8000/v1/models answered 404 'not found'",
                     "server default: its model list is available again"]


async def test_resolution_of_client_names() -> None:
    catalog = Catalog.parse({
        "servers": {"alpha": {"base_url": "http://alpha.test/v1"}, "beta": {"base_url": "http://beta.test/v1"},
                    "gamma": {"base_url": "http://gamma.test/v1"}},
        "models": {"llama3.2": {"upstream": "meta-llama/Llama-3.2-3B-Instruct", "server": "alpha", "think_style": "none"},
                   "coder": {"upstream": "shared"}},
    }, environ={})
    fetch = FakeFetch(default=["gpt-4o-mini"], alpha=["shared"], beta=["qwen3:latest", "shared"], gamma=[])
    models = directory(fetch, Clock(), catalog)
    assert models.resolve_now("qwen3").server.name == "default", "before any list: the default server"
    pinned = await models.resolve("llama3.2")
    assert fetch.calls == [], "a catalog pin decides alone: nothing to wait for"
    assert (pinned.server.name, pinned.model_id, pinned.rule, pinned.think_style) == ("alpha", "meta-llama/Llama-3.2-3B-Instruct", "catalog", "none")
    listed = await models.resolve("qwen3")
    assert (listed.server.name, listed.model_id, listed.rule) == ("beta", "qwen3:latest", "listed"), "the name:tag form of a listed id"
    assert listed.think_style == "reasoning_effort", "the server's, which is the option's"
    alias = await models.resolve("coder:latest")
    assert (alias.server.name, alias.model_id, alias.rule, alias.entry.name) == ("alpha", "shared", "listed", "coder:latest")
    unknown = await models.resolve("mystery:latest")
    assert (unknown.server.name, unknown.model_id, unknown.rule) == ("default", "mystery", "default")
    assert models.upstream_id("gpt-4o-mini:latest") == "gpt-4o-mini"


async def test_find_over_every_list() -> None:
    fetch = FakeFetch(default=["gpt-4o-mini"], alpha=["shared"], beta=ConnectionError("refused"), gamma=[])
    models = directory(fetch, Clock())
    found, why = await models.find("shared")
    assert found.upstream == "shared" and why is None
    found, why = await models.find("nothing")
    assert found.upstream == "nothing" and why == "server beta: refused", "a server's list is unknown: defaults, flagged"
    fetch.answers["beta"] = ["b"]
    await models.probe("beta")
    assert await models.find("nothing") == (None, None)


# ---------------------------------------------------------------------------------------------
# Real loopback upstreams: the fetcher, and the harness the e2e tests use


def test_the_three_upstream_harness() -> None:
    with several() as servers:
        alpha = servers["alpha"]
        models = httpx.get(alpha.base_url + "/models", headers={"authorization": f"Bearer {TRIO[0].key}"}, trust_env=False, timeout=5)
        assert [m["id"] for m in models.json()["data"]] == list(TRIO[0].models)
        wrong = httpx.get(alpha.base_url + "/models", headers={"authorization": f"Bearer {TRIO[1].key}"}, trust_env=False, timeout=5)
        assert wrong.status_code == 401 and alpha.fake.authorizations() == [f"Bearer {TRIO[0].key}", f"Bearer {TRIO[1].key}"]
        alpha.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.get(alpha.base_url + "/models", trust_env=False, timeout=5)
        alpha.revive()
        assert httpx.get(alpha.base_url + "/models", headers={"authorization": f"Bearer {TRIO[0].key}"}, trust_env=False, timeout=5).status_code == 200
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
            servers_table = ServerTable.build(Server.default(default.base_url, "sk-default-0123456789"), catalog.servers, health=health)
            fetcher = HttpFetcher(timeout=5)
            models = ServersDirectory(servers_table, catalog, fetch=fetcher, clock=clock, first_wait=5, fetch_timeout=5)
            try:
                listing = await models.listing()
                names = [m.name for m in listing.models]
                assert {"shared-model:latest", "alpha-only:latest", "beta-only:latest", "gamma-only:latest", "gpt-4o-mini:latest"} <= set(names)
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
                servers["gamma"].fake.key = "sk-rotated-0123456789"  # a key the upstream no longer accepts: reachable, no list
                await models.probe("gamma")
                assert not health.is_down("gamma") and "answered 401" in models.lists()["gamma"].error
            finally:
                await models.close()
