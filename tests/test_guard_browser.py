"""addon/guard/browser.py: which origins and Host names are allowed, as Ollama decides it, and the
answers of the head's guards through the addon (end to end: tests/hostile/test_browsers.py)."""

from __future__ import annotations

import json

import pytest
from mitmproxy import exceptions
from mitmproxy import http as mhttp
from mitmproxy.test import taddons

from addon.guard.browser import ALLOW_HEADERS, OLLAMA_ORIGINS, Hosts, Origins, host_name
from addon.proxy import OllamaProxy
from harness.inproc import client_flow, run_request

DEFAULTS = Origins.parse("")


def test_ollama_default_origins() -> None:
    """envconfig.AllowedOrigins(): localhost, 127.0.0.1, 0.0.0.0 with any port and scheme, and the app schemes."""
    assert len(OLLAMA_ORIGINS) == 17
    for origin in (
        "http://localhost",
        "https://localhost:8443",
        "http://127.0.0.1:5173",
        "http://0.0.0.0",
        "https://0.0.0.0:1",
        "app://obsidian.md",
        "file://",
        "tauri://localhost",
        "vscode-webview://1a2b3c",
        "vscode-file://vscode-app",
        "HTTP://LOCALHOST:3000",
    ):
        assert DEFAULTS.allows(origin), origin


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example:11434",
        "https://localhost@evil.example",
        "http://localhost:3000@evil.example",
        "http://localhost:3000/evil",
        "chrome-extension://abcdef",
        "moz-extension://abcdef",
        "http://[::1]:3000",  # not among Ollama's defaults either
        "",
    ],
)
def test_foreign_and_lookalike_origins(origin: str) -> None:
    assert not DEFAULTS.allows(origin)


def test_allowed_origins_add_to_the_defaults() -> None:
    origins = Origins.parse(" https://webui.example.com , https://*.corp.example,")
    assert origins.allows("https://webui.example.com") and origins.allows("https://chat.corp.example")
    assert origins.allows("https://a.b.corp.example") and origins.allows("http://localhost:3000")
    assert not origins.allows("https://webui.example.com.evil.example")
    assert not origins.allows("https://evil.example/.corp.example")
    assert not origins.allows("https://x@evil.example#.corp.example")
    assert not origins.allows("http://chat.corp.example")
    assert not origins.allow_all


def test_star_allows_every_origin() -> None:
    origins = Origins.parse("*")
    assert origins.allow_all and origins.allows("https://evil.example") and origins.allows("null")


def test_one_wildcard_per_origin() -> None:
    with pytest.raises(exceptions.OptionsError, match="allowed_origins"):
        Origins.parse("https://*.*.example")


@pytest.mark.parametrize(
    "host",
    [
        "",
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.1.2.3",
        "[::1]",
        "::1",
        "0.0.0.0",
        "::",
        "10.0.0.5",
        "172.16.0.1",
        "192.168.1.20",
        "fd00::1",
        "app.localhost",
        "myhost.local",
        "ollama.internal",
        "::ffff:127.0.0.1",
    ],
)
def test_local_hosts(host: str) -> None:
    assert Hosts.parse("").allows(host)


@pytest.mark.parametrize(
    "host",
    ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "8.8.8.8", "172.32.0.1", "100.64.0.1", "local"],
)
def test_foreign_hosts(host: str) -> None:
    assert not Hosts.parse("").allows(host)


def test_this_machines_name_and_allowed_hosts() -> None:
    import socket

    assert Hosts.parse("").allows(socket.gethostname())
    hosts = Hosts.parse("ollama.example.com, *.lab.example")
    assert hosts.allows("ollama.example.com") and hosts.allows("gpu.lab.example") and hosts.allows("GPU.LAB.EXAMPLE")
    assert not hosts.allows("evil.example") and not hosts.allows("lab.example.evil")
    assert Hosts.parse("*").allows("evil.example")


def test_host_name_of_a_host_header() -> None:
    assert host_name("evil.example:11434") == "evil.example"
    assert host_name("evil.example") == "evil.example"
    assert host_name("[::1]:11434") == "[::1]"
    assert host_name("[::1]") == "[::1]"
    assert host_name("::1") == "::1"  # not a name with a port
    assert host_name("") == ""


# ---------------------------------------------------------------------------------------------
# Through the addon (mitmproxy's test helpers)


def _flow(method: str, path: str, headers: dict[str, str]) -> mhttp.HTTPFlow:
    """A browser's request: the headers it sends, no Content-Type, no body."""
    return client_flow(path, method=method, headers=headers, content_type=None)


def test_the_heads_guards_in_ollamas_order() -> None:
    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1", ollama_api_key="k3y-for-tests")
        # A foreign origin: 403 before the key check, no CORS header.
        answer = run_request(
            proxy, _flow("POST", "/api/chat", {"origin": "https://evil.example", "host": "127.0.0.1:11434"})
        )
        assert answer is not None and answer.status_code == 403 and "access-control-allow-origin" not in answer.headers
        assert json.loads(answer.content)["error"] == (
            "forbidden: origin 'https://evil.example' is not allowed (allowed_origins)"
        )
        # A preflight from an allowed origin: 204, before the key check (browsers send no key on it).
        preflight = run_request(
            proxy,
            _flow(
                "OPTIONS",
                "/api/chat",
                {"origin": "http://localhost:3000", "host": "127.0.0.1:11434", "access-control-request-method": "POST"},
            ),
        )
        assert preflight is not None and preflight.status_code == 204 and preflight.content == b""
        assert "content-length" not in preflight.headers and "content-type" not in preflight.headers
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert preflight.headers["access-control-allow-headers"] == ALLOW_HEADERS
        assert preflight.headers["access-control-max-age"] == "43200"
        # A rebinding Host: 403 naming the host (escaped: the client chose it).
        rebound = run_request(proxy, _flow("GET", "/api/tags", {"host": "evil.example\x1b[2J:11434"}))
        assert rebound is not None and rebound.status_code == 403
        assert (
            json.loads(rebound.content)["error"]
            == "forbidden: host 'evil.example\\x1b[2J' is not allowed (allowed_hosts)"
        )
        # An allowed origin without the key: the 401 carries the CORS headers, so the page can read it.
        unauthorized = run_request(
            proxy, _flow("GET", "/api/tags", {"origin": "http://localhost:3000", "host": "127.0.0.1"})
        )
        assert unauthorized is not None and unauthorized.status_code == 401
        assert unauthorized.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert unauthorized.headers["vary"] == "Origin"
        # Same origin (Origin is http://<Host>): no CORS request, no CORS headers.
        same = run_request(
            proxy,
            _flow(
                "GET",
                "/api/version",
                {
                    "origin": "http://127.0.0.1:11434",
                    "host": "127.0.0.1:11434",
                    "authorization": "Bearer k3y-for-tests",
                },
            ),
        )
        assert same is not None and same.status_code == 200 and "access-control-allow-origin" not in same.headers
        for flow_id in list(proxy.exchanges):
            del proxy.exchanges[flow_id]


def test_allowed_origins_star_answers_with_a_star() -> None:
    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1", allowed_origins="*")
        answer = run_request(
            proxy, _flow("GET", "/api/version", {"origin": "https://evil.example", "host": "127.0.0.1"})
        )
        assert answer is not None and answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*" and "vary" not in answer.headers
        preflight = run_request(
            proxy, _flow("OPTIONS", "/api/chat", {"origin": "https://evil.example", "host": "127.0.0.1"})
        )
        assert preflight is not None and preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*" and "vary" not in preflight.headers


def test_the_host_check_is_for_loopback_listeners_only() -> None:
    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1", listen_host="0.0.0.0")
        answer = run_request(proxy, _flow("GET", "/api/version", {"host": "ollama.example.com"}))
        assert answer is not None and answer.status_code == 200
        tctx.configure(proxy, listen_host="127.0.0.1")
        answer = run_request(proxy, _flow("GET", "/api/version", {"host": "ollama.example.com"}))
        assert answer is not None and answer.status_code == 403
        tctx.configure(proxy, allowed_hosts="ollama.example.com")
        answer = run_request(proxy, _flow("GET", "/api/version", {"host": "ollama.example.com"}))
        assert answer is not None and answer.status_code == 200


def test_keep_host_header_is_forced_on() -> None:
    """In reverse mode mitmproxy would put the reverse target's name in Host before requestheaders."""
    from mitmproxy.addons.proxyserver import Proxyserver

    proxy = OllamaProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1")
        assert tctx.options.keep_host_header is True
