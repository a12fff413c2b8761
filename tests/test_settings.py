"""Settings: the upstream URL, host patterns, the reported version, and what a change rebuilds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mitmproxy import exceptions

from addon.settings import (
    DEFAULT_OLLAMA_VERSION,
    MIN_OLLAMA_VERSION,
    OPTIONS,
    VIEWED_BODY_LIMIT,
    HostMatcher,
    Settings,
    body_view_limit,
    log_flows,
    parse_system_turns,
    parse_version,
)
from addon.upstreams.servers import Server


def test_upstream_urls() -> None:
    assert (
        Server.default("https://api.openai.com/v1", "").url("chat/completions")
        == "https://api.openai.com:443/v1/chat/completions"
    )
    assert Server.default("http://127.0.0.1:8000/v1/", "").url("completions") == "http://127.0.0.1:8000/v1/completions"
    assert Server.default("http://[::1]:9/openai", "").url("x") == "http://[::1]:9/openai/x"
    for bad in ("api.openai.com", "ftp://x/v1", "http://:80/v1", "http://h:notaport/v1"):
        with pytest.raises(exceptions.OptionsError, match="openai_base_url"):
            Server.default(bad, "")


def test_host_patterns() -> None:
    default = HostMatcher("*:11434")
    assert default("localhost", 11434) and default("Ollama.Internal", 11434) and not default("localhost", 8080)
    listed = HostMatcher("localhost:11434, gpu-box, *.lan:8080")
    assert (
        listed("gpu-box", 1234) and listed("a.lan", 8080) and not listed("a.lan", 11434) and listed("localhost", 11434)
    )
    assert not HostMatcher("")("localhost", 11434)


def test_versions() -> None:
    assert parse_version("0.12.6") == "0.12.6"
    for bad in ("0.6.3", "v1.0.0", "1.0", "latest"):
        with pytest.raises(exceptions.OptionsError):
            parse_version(bad)


def test_the_default_version_serves_what_the_agents_need() -> None:
    """Codex CLI refuses an Ollama older than 0.13.4; /v1/messages came in 0.14.0, and
    /v1/audio/transcriptions, the newest route the proxy serves, in 0.20.0."""
    version = tuple(int(p) for p in parse_version(DEFAULT_OLLAMA_VERSION).split("."))
    assert version >= (0, 20, 0) and version >= MIN_OLLAMA_VERSION


def test_system_turns() -> None:
    assert parse_system_turns("user") == "user" and parse_system_turns("system") == "system"
    with pytest.raises(exceptions.OptionsError, match="system_turns"):
        parse_system_turns("assistant")


def test_body_view_limit_auto_keeps_bodies_only_where_someone_looks() -> None:
    class Options(SimpleNamespace):
        def __contains__(self, name: str) -> bool:
            return hasattr(self, name)

    assert body_view_limit(Options(body_view_limit=-1)) == 0  # plain mitmdump
    assert body_view_limit(Options(body_view_limit=-1, save_stream_file="")) == 0
    assert body_view_limit(Options(body_view_limit=-1, save_stream_file="out.flow")) == VIEWED_BODY_LIMIT  # -w
    assert body_view_limit(Options(body_view_limit=-1, web_port=8081)) == VIEWED_BODY_LIMIT  # mitmweb
    assert body_view_limit(Options(body_view_limit=-1, console_layout="single")) == VIEWED_BODY_LIMIT  # mitmproxy
    assert body_view_limit(Options(body_view_limit=5, web_port=8081)) == 5


def test_flows_that_went_well_are_logged_as_mitmdump_prints_its_own() -> None:
    class Options(SimpleNamespace):
        def __contains__(self, name: str) -> bool:
            return hasattr(self, name)

    assert log_flows(Options(flow_detail=1))  # mitmdump's default
    assert log_flows(Options(flow_detail=3))
    assert not log_flows(Options(flow_detail=0))  # make run: quiet, failures only
    assert log_flows(Options())  # mitmweb, the console: no flow_detail


def test_a_change_rebuilds_only_what_it_feeds() -> None:
    """The model directory (and its cached model list) survives a change of another option."""

    class Options(SimpleNamespace):
        def __contains__(self, name: str) -> bool:
            return hasattr(self, name)

    defaults = {name: default for name, _, default, _ in OPTIONS}  # every option the addon declares
    options = Options(
        **{**defaults, "openai_base_url": "http://up/v1", "openai_api_key": "sk-unit", "body_view_limit": 0}
    )
    first = Settings.build(options)
    options.upstream_timeout = 5
    second = Settings.build(options, first, {"upstream_timeout"})
    assert second.models is first.models and second.server.upstream_timeout == 5
    assert second.models.table is second.servers and second.servers.health is first.servers.health
    options.models_ttl = 10
    third = Settings.build(options, second, {"models_ttl"})
    assert third.models is not first.models and third.models.ttl == 10
    assert third.servers.health is first.servers.health, "health survives every rebuild"
    assert (
        third.target("gpt-4o:latest").model == "gpt-4o"
        and third.target("x").server.url("chat/completions") == "http://up:80/v1/chat/completions"
    )
