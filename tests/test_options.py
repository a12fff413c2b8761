"""Options: the upstream URL, host patterns and the reported version."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions

from addon.options import HostMatcher, Upstream, parse_version


def test_upstream_urls() -> None:
    assert Upstream.parse("https://api.openai.com/v1").url("chat/completions") == "https://api.openai.com:443/v1/chat/completions"
    assert Upstream.parse("http://127.0.0.1:8000/v1/").url("completions") == "http://127.0.0.1:8000/v1/completions"
    assert Upstream.parse("http://[::1]:9/openai").url("x") == "http://[::1]:9/openai/x"
    for bad in ("api.openai.com", "ftp://x/v1", "http://:80/v1", "http://h:notaport/v1"):
        with pytest.raises(exceptions.OptionsError):
            Upstream.parse(bad)


def test_host_patterns() -> None:
    default = HostMatcher("*:11434")
    assert default("localhost", 11434) and default("Ollama.Internal", 11434) and not default("localhost", 8080)
    listed = HostMatcher("localhost:11434, gpu-box, *.lan:8080")
    assert listed("gpu-box", 1234) and listed("a.lan", 8080) and not listed("a.lan", 11434) and listed("localhost", 11434)
    assert not HostMatcher("")("localhost", 11434)


def test_versions() -> None:
    assert parse_version("0.12.6") == "0.12.6"
    for bad in ("0.6.3", "v1.0.0", "1.0", "latest"):
        with pytest.raises(exceptions.OptionsError):
            parse_version(bad)
