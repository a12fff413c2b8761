"""Several upstreams, the pure part (addon/upstreams/servers.py): configuration, health, routing and
merged model lists.

No test sleeps: time is a fake clock, except the bounded waits of a hanging server (tens of ms).
"""

from __future__ import annotations

import logging
import tomllib

import pytest
from mitmproxy.exceptions import OptionsError

from addon.catalog.catalog import Catalog
from addon.mitm_internals import FailureKind
from addon.upstreams.health import Health, Passive, passive_verdict
from addon.upstreams.listings import ServerList, listed_by, merge_listings, next_list
from addon.upstreams.servers import Defaults, RouteRefusal, Server, ServerTable, parse_servers
from harness.servers import ENV, ISSUE_EXAMPLE, Clock, lists, server, table

# ---------------------------------------------------------------------------------------------
# Configuration


def test_the_issue_example_parses_and_inherits_the_global_options() -> None:
    catalog = Catalog.parse(tomllib.loads(ISSUE_EXAMPLE), "models.toml", ENV)
    assert list(catalog.servers) == ["vllm", "openrouter"]
    assert (
        catalog.get("llama3.2").server == "vllm"
        and catalog.get("llama3.2").upstream == "meta-llama/Llama-3.2-3B-Instruct"
    )
    defaults = Defaults(think_style="none", passthrough_options=False, upstream_timeout=120, forward_client_key=True)
    servers = ServerTable.build(
        Server.default("https://api.openai.com/v1", "sk-oai-cccccccccccc", defaults), catalog.servers, defaults
    )
    assert servers.names == ("default", "vllm", "openrouter")
    vllm, openrouter = servers["vllm"], servers["openrouter"]
    assert (vllm.think_style, vllm.passthrough_options, vllm.upstream_timeout, vllm.forward_client_key) == (
        "chat_template_kwargs",
        True,
        120,
        True,
    )
    assert (openrouter.think_style, openrouter.upstream_timeout) == ("none", 600), "unset keys inherit the options"
    assert (
        vllm.models == ("meta-llama/*", "Qwen/*")
        and vllm.serves_pattern("Qwen/Qwen3-8B")
        and not vllm.serves_pattern("qwen/x")
    )
    assert vllm.url("chat/completions") == "http://gpu1:8000/v1/chat/completions"
    assert openrouter.url("models") == "https://openrouter.ai:443/api/v1/models"


def test_keys_are_per_server_and_never_shown() -> None:
    catalog = Catalog.parse(tomllib.loads(ISSUE_EXAMPLE), "models.toml", ENV)
    servers = ServerTable.build(Server.default("https://api.openai.com/v1", "sk-oai-cccccccccccc"), catalog.servers)
    assert servers["vllm"].authorization == "Bearer sk-vllm-aaaaaaaaaaaa"
    assert servers["openrouter"].authorization == "Bearer sk-or-bbbbbbbbbbbb"
    assert servers.default.authorization == "Bearer sk-oai-cccccccccccc"
    assert servers["vllm"].key_source == "$VLLM_KEY" and servers.default.key_source == "openai_api_key"
    assert servers.secrets() == {
        "servers.default": "sk-oai-cccccccccccc",
        "servers.vllm": "sk-vllm-aaaaaaaaaaaa",
        "servers.openrouter": "sk-or-bbbbbbbbbbbb",
    }
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
        (
            {"vllm": {"base_url": "http://a/v1", "base_ulr": "x"}},
            r"\[servers.vllm\]: unknown key 'base_ulr' \(known: base_url, ",
        ),
        (
            {"vllm": {"base_url": "http://a/v1", "api_key": "a-key-written-in-the-file"}},
            r"\[servers.vllm\]: api_key is refused: a key never goes in the file",
        ),
        (
            {"vllm": {"base_url": "http://a/v1", "api_key_env": "sk-live-123"}},
            r"\[servers.vllm\]: api_key_env must be the NAME of an environment variable",
        ),
        (
            {"vllm": {"base_url": "http://a/v1", "api_key_env": "NOT_SET_ANYWHERE"}},
            r"\[servers.vllm\]: api_key_env names the environment variable NOT_SET_ANYWHERE, which is not set",
        ),
        ({"vllm": {"base_url": "http://a/v1", "api_key_env": "EMPTY"}}, r"\[servers.vllm\]: .*EMPTY, which is empty"),
        ({"vllm": {"api_key_env": "VLLM_KEY"}}, r"\[servers.vllm\]: base_url is required"),
        ({"vllm": {"base_url": "gpu1:8000"}}, r"\[servers.vllm\]: base_url must be an http\(s\) URL"),
        ({"vllm": {"base_url": "http://gpu1:http/v1"}}, r"\[servers.vllm\]: base_url has an invalid port"),
        ({"vllm": {"base_url": "http://a/v1", "think_style": "loud"}}, r"\[servers.vllm\]: think_style must be one of"),
        (
            {"vllm": {"base_url": "http://a/v1", "passthrough_options": "yes"}},
            r"\[servers.vllm\]: passthrough_options must be true or false",
        ),
        (
            {"vllm": {"base_url": "http://a/v1", "upstream_timeout": True}},
            r"\[servers.vllm\]: upstream_timeout must be an integer",
        ),
        (
            {"vllm": {"base_url": "http://a/v1", "upstream_timeout": -1}},
            r"\[servers.vllm\]: upstream_timeout must be 0",
        ),
        ({"vllm": {"base_url": "http://a/v1", "models": "meta-llama/*"}}, r"\[servers.vllm\]: models must be a list"),
        (
            {"vllm": {"base_url": "http://a/v1", "models": ["ok/*", ""]}},
            r"\[servers.vllm\]: models must be a list of non-empty",
        ),
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
    with pytest.raises(
        OptionsError,
        match=r"""\[models."x"\]: server 'vlm' is not configured \(known: default, vllm; add a \[servers.vlm\] table\)""",
    ):
        Catalog.parse(data, "models.toml", {})
    assert Catalog.parse({"models": {"x": {"server": "default"}}}).get("x").server == "default"
    with pytest.raises(OptionsError, match=r"server must be a string"):
        Catalog.parse({"models": {"x": {"server": 1}}})
    with pytest.raises(OptionsError, match=r"'servers' must be a table"):
        Catalog.parse({"servers": ["a"]})
    with pytest.raises(
        OptionsError,
        match=r"unknown top-level keys \['server'\] \(expected \[models.\"name\"\], \[servers.NAME\] and \[keys.NAME\] tables\)",
    ):
        Catalog.parse({"server": {}})
    assert parse_servers({}) == {} and Catalog.parse({}).servers == {}


def test_catalog_file_with_servers(tmp_path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(ISSUE_EXAMPLE)
    catalog = Catalog.load(str(path), ENV)
    assert catalog.servers["vllm"].base_url.host == "gpu1"
    with pytest.raises(
        OptionsError, match=r"\[servers.vllm\]: api_key_env names the environment variable VLLM_KEY, which is not set"
    ):
        Catalog.load(str(path), {})


# ---------------------------------------------------------------------------------------------
# Health


def test_health_state_machine(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = Health(clock, retry_after=30, suspect_limit=3)
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
    assert health.mark_failed("a", "connection refused") is False and not health.is_healthy("a"), (
        "a failed trial is down again"
    )
    assert health.mark_ok("a") is True and health.state("a").status == "up"
    assert health.mark_ok("a") is False
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "server a is down: connection refused; requests go to its twins, if any, until it answers again",
        "server a is up again (down for 35 s: connection refused)",
    ], "one line per change of state"


def test_suspect_failures_ask_for_a_probe_and_never_mark_down() -> None:
    health = Health(Clock(), suspect_limit=3, log=None)
    assert not health.suspect("a") and not health.suspect("a")
    assert health.state("a").suspicions == 2 and health.is_healthy("a")
    health.mark_ok("a")  # a success in between starts the count again
    assert not health.suspect("a") and not health.suspect("a")
    assert health.suspect("a") is True, "the third in a row: time to probe"
    assert health.state("a").suspicions == 0 and health.is_healthy("a"), "a probe decides, not the count"
    assert not health.suspect("a"), "the count starts again"


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
    ("status", "failure", "expired", "cut", "expected"),
    [
        (None, FailureKind.REFUSED, "", False, Passive.DOWN),
        (None, FailureKind.UNKNOWN_HOST, "", False, Passive.DOWN),
        (None, FailureKind.TLS, "", False, Passive.DOWN),
        (None, None, "connect", False, Passive.DOWN),
        (None, None, "handshake", False, Passive.DOWN),
        (None, FailureKind.SERVER_CLOSED, "open", False, Passive.SUSPECT),  # one long generation
        (None, FailureKind.SERVER_CLOSED, "", False, Passive.BROKEN),
        (None, FailureKind.BROKE_OFF, "", False, Passive.BROKEN),
        (None, FailureKind.RESET, "", False, Passive.BROKEN),
        (None, FailureKind.BAD_STATUS_LINE, "", False, Passive.SUSPECT),
        (None, FailureKind.OTHER, "", False, Passive.SUSPECT),
        (None, FailureKind.CLIENT_GONE, "", False, Passive.NOTHING),
        (None, FailureKind.KILLED, "", False, Passive.NOTHING),
        (None, FailureKind.BODY_SIZE_LIMIT, "", False, Passive.NOTHING),
        (None, FailureKind.SERVER_CLOSED, "", True, Passive.NOTHING),  # the proxy cut it (a limit)
        (500, None, "", False, Passive.SUSPECT),
        (503, None, "", False, Passive.SUSPECT),
        (501, None, "", False, Passive.OK),
        (429, None, "", False, Passive.OK),
        (404, None, "", False, Passive.OK),
        (200, None, "", False, Passive.OK),
        (None, None, "", False, Passive.NOTHING),
    ],
)
def test_passive_verdicts(
    status: int | None, failure: FailureKind | None, expired: str, cut: bool, expected: Passive
) -> None:
    assert passive_verdict(status, failure, expired=expired, cut=cut)[0] is expected


def test_status_line() -> None:
    clock = Clock()
    health = Health(clock, log=None)
    health.begin("default", "f1")
    health.mark_failed("vllm", "connection refused")
    clock.advance(12)
    assert (
        health.status_line(["default", "vllm"])
        == "servers: default up (1 running) · vllm down for 12 s (connection refused)"
    )


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
    assert refusal.message.startswith(
        "model 'llama3.2': its catalog entry's server, alpha, is down (connection refused, for 0 s)"
    )
    assert isinstance(servers.route("alpha/x", None, {}), RouteRefusal), "the only server its pattern names"
    servers.health.mark_failed("default", "timed out")
    refusal = servers.route("gpt-4o-mini", None, {})
    assert isinstance(refusal, RouteRefusal) and refusal.rule == "default"
    assert refusal.message.startswith("model 'gpt-4o-mini': the default server is down (timed out")


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
        (
            "default",
            ServerList({"gpt-4o-mini": {"created": 1}, "old": {"created": 0}, "new": {"created": 5}}, None, 1.0),
        ),
        ("alpha", ServerList({"new": {"created": 9}, "alpha-only": {}}, None, 1.0)),
        ("beta", ServerList(None, "cannot connect", None)),
    ]
    merged = merge_listings(catalog.models.values(), per_server)
    assert [m.name for m in merged.models] == [
        "mini:latest",
        "pinned:latest",
        "new:latest",
        "gpt-4o-mini:latest",
        "old:latest",
        "alpha-only:latest",
    ]
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
    assert listed_by({"x": failed, "y": ServerList(), "z": again}) == {
        "x": frozenset({"a", "b"}),
        "z": frozenset({"c"}),
    }
    merged = merge_listings([], [("x", failed)])
    assert (
        [m.name for m in merged.models] == ["a:latest", "b:latest"]
        and merged.error is None
        and merged.errors == {"x": "connection refused"}
    )
