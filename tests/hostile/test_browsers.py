"""§1 Browsers: a web page must not be able to spend the upstream key or read answers.

What real Ollama does (server/routes.go: gin-contrib/cors with `envconfig.AllowedOrigins()`, then
`allowedHostsMiddleware`), and what the proxy must do the same way:
- a request with an `Origin` that is not allowed gets 403 and goes nowhere; an allowed one gets
  `Access-Control-Allow-Origin: <origin>` and `Vary: Origin`; a preflight (`OPTIONS` with an
  allowed `Origin`) is answered 204 with the methods, headers and max age Ollama sends;
- on a loopback listener a `Host` that is not a loopback/private address or local name gets 403
  (DNS rebinding), unless configured.
"""

from __future__ import annotations

import pytest

from hostile.evil import EvilUpstream, Tarpit
from hostile.tools import HELLO, error_message, exchange, request_bytes

pytestmark = pytest.mark.e2e

CHAT = {"model": "m", "messages": HELLO, "stream": False}
EVIL_ORIGIN = "https://evil.example"


def simple_post(
    port: int,
    path: str,
    origin: str | None,
    host: str = "127.0.0.1",
    body: dict | None = None,
    content_type: str = "text/plain;charset=UTF-8",
):
    """What `fetch(url, {method: 'POST', body})` sends from a page: no preflight for text/plain."""
    headers = {"Content-Type": content_type}
    if origin is not None:
        headers["Origin"] = origin
    return exchange(port, request_bytes("POST", path, body or CHAT, headers, host=host))


def refused(answer, evil: EvilUpstream, sentinel: Tarpit, before: int) -> None:
    assert answer.status == 403, answer
    assert "origin" in error_message(answer.body).lower()
    assert answer.header("access-control-allow-origin") is None
    assert evil.answered() == [] and sentinel.connections == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", CHAT),
        ("/api/generate", {"model": "m", "prompt": "hi", "stream": False}),
        ("/api/embed", {"model": "m", "input": "hi"}),
        ("/v1/chat/completions", {"model": "m", "messages": HELLO}),
        ("/api/show", {"model": "m"}),
    ],
)
def test_foreign_origin_is_refused_and_nothing_goes_upstream(
    shared, evil: EvilUpstream, sentinel: Tarpit, path: str, body: dict
) -> None:
    before = sentinel.connections
    refused(simple_post(shared.port, path, EVIL_ORIGIN, body=body), evil, sentinel, before)


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example:11434",
        "https://localhost@evil.example",
        "chrome-extension://abcdef",
    ],
)
def test_lookalike_origins_are_refused(shared, evil: EvilUpstream, sentinel: Tarpit, origin: str) -> None:
    before = sentinel.connections
    refused(simple_post(shared.port, "/api/chat", origin), evil, sentinel, before)


def test_foreign_origin_cannot_read_local_answers(shared) -> None:
    """Ollama refuses a foreign origin on every route, including the ones answered locally."""
    for method, path in (("GET", "/api/tags"), ("GET", "/api/version"), ("GET", "/v1/models"), ("GET", "/api/ps")):
        answer = exchange(shared.port, request_bytes(method, path, None, {"Origin": EVIL_ORIGIN}))
        assert answer.status == 403, (path, answer)


def test_no_origin_is_not_a_browser(shared, evil: EvilUpstream) -> None:
    """Clients that are not browsers send no Origin: they are served (guard for the fix)."""
    answer = simple_post(shared.port, "/api/chat", None, content_type="application/json")
    assert answer.status == 200 and answer.header("access-control-allow-origin") is None
    assert len(evil.answered()) == 1


ALLOWED = [
    "http://localhost",
    "http://localhost:3000",
    "https://localhost:8443",
    "http://127.0.0.1",
    "http://127.0.0.1:5173",
    "https://127.0.0.1",
    "http://0.0.0.0:8080",
    "app://obsidian.md",
    "file://",
    "tauri://localhost",
    "vscode-webview://1a2b3c",
    "vscode-file://vscode-app",
]


@pytest.mark.parametrize("origin", ALLOWED)
def test_ollama_default_origins_get_cors_headers(shared, evil: EvilUpstream, origin: str) -> None:
    # The Host a browser sends for the proxy's URL (with its port): with a bare `127.0.0.1`, the
    # origins `http(s)://127.0.0.1` would equal `http(s)://<Host>`, which is no CORS request (no headers).
    answer = simple_post(shared.port, "/api/chat", origin, host=f"127.0.0.1:{shared.port}")
    assert answer.status == 200, answer
    assert answer.header("access-control-allow-origin") == origin
    assert "origin" in {part.strip().lower() for k, v in answer.headers if k == "vary" for part in v.split(",")}
    assert len(evil.answered()) == 1


def _preflight(port: int, path: str, origin: str):
    return exchange(
        port,
        request_bytes(
            "OPTIONS",
            path,
            None,
            {
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-stainless-retry-count",
            },
        ),
    )


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/api/tags", "/api/nothing"])
def test_preflight_is_answered_as_ollama_does(shared, evil: EvilUpstream, sentinel: Tarpit, path: str) -> None:
    before = sentinel.connections
    answer = _preflight(shared.port, path, "http://localhost:3000")
    assert answer.status == 204, answer
    assert answer.header("access-control-allow-origin") == "http://localhost:3000"
    methods = set(answer.header("access-control-allow-methods").split(","))
    assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
    allowed = {h.strip().lower() for h in answer.header("access-control-allow-headers").split(",")}
    assert {
        "authorization",
        "content-type",
        "user-agent",
        "accept",
        "x-requested-with",
        "openai-beta",
        "x-stainless-retry-count",
        "x-stainless-timeout",
    } <= allowed
    assert answer.header("access-control-max-age") == "43200"
    varies = {part.strip().lower() for k, v in answer.headers if k == "vary" for part in v.split(",")}
    assert {"origin", "access-control-request-method", "access-control-request-headers"} <= varies
    assert evil.answered() == [] and sentinel.connections == before


def test_preflight_from_a_foreign_origin_is_refused(shared, evil: EvilUpstream) -> None:
    answer = _preflight(shared.port, "/api/chat", EVIL_ORIGIN)
    assert answer.status == 403 and answer.header("access-control-allow-origin") is None
    assert evil.answered() == []


def test_allowed_origins_option_adds_origins(start, evil: EvilUpstream) -> None:
    dump = start("allowed_origins=https://webui.example.com,https://*.corp.example")
    for origin in ("https://webui.example.com", "https://chat.corp.example", "http://localhost:3000"):
        answer = simple_post(dump.port, "/api/chat", origin)
        assert answer.status == 200 and answer.header("access-control-allow-origin") == origin, (origin, answer)
    assert simple_post(dump.port, "/api/chat", EVIL_ORIGIN).status == 403
    assert simple_post(dump.port, "/api/chat", "https://webui.example.com.evil.example").status == 403
    preflight = _preflight(dump.port, "/api/chat", "https://webui.example.com")
    assert preflight.status == 204 and preflight.header("access-control-allow-origin") == "https://webui.example.com"


def test_allowed_origins_star_allows_every_origin(start) -> None:
    dump = start("allowed_origins=*")
    answer = simple_post(dump.port, "/api/chat", EVIL_ORIGIN)
    assert answer.status == 200 and answer.header("access-control-allow-origin") == "*"


def test_regular_mode_refuses_a_foreign_origin_for_ollama_hosts(start, evil: EvilUpstream) -> None:
    dump = start(mode="regular")
    raw = request_bytes(
        "POST",
        "http://ollama.internal:11434/api/chat",
        CHAT,
        {"Origin": EVIL_ORIGIN, "Content-Type": "text/plain"},
        host="ollama.internal:11434",
    )
    answer = exchange(dump.port, raw)
    assert answer.status == 403, answer
    assert evil.answered() == []


# ---------------------------------------------------------------------------------------------
# DNS rebinding: the Host header on a loopback listener


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "localhost.evil.example:{port}",
        "127.0.0.1.nip.io:{port}",
        "attacker.com:11434",
    ],
)
def test_rebinding_host_is_refused_on_loopback(shared, evil: EvilUpstream, sentinel: Tarpit, host: str) -> None:
    before = sentinel.connections
    for method, path, body in (("POST", "/api/chat", CHAT), ("GET", "/api/tags", None)):
        answer = exchange(shared.port, request_bytes(method, path, body, host=host.format(port=shared.port)))
        assert answer.status == 403, (path, answer)
        assert "host" in error_message(answer.body).lower()
    assert evil.answered() == [] and sentinel.connections == before


@pytest.mark.parametrize(
    "host",
    [
        "localhost:{port}",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "app.localhost:{port}",
        "myhost.local",
        "ollama.internal:{port}",
        "10.0.0.5:{port}",
        "192.168.1.20",
        "0.0.0.0:{port}",
    ],
)
def test_local_hosts_are_served_on_loopback(shared, evil: EvilUpstream, host: str) -> None:
    """Ollama's allowedHost: loopback, private and unspecified addresses, localhost, *.localhost, *.local, *.internal."""
    answer = exchange(shared.port, request_bytes("POST", "/api/chat", CHAT, host=host.format(port=shared.port)))
    assert answer.status == 200, answer


def test_allowed_hosts_option_adds_names(start, evil: EvilUpstream) -> None:
    dump = start("allowed_hosts=ollama.example.com,*.lab.example")
    for host in (f"ollama.example.com:{dump.port}", "gpu.lab.example"):
        assert exchange(dump.port, request_bytes("POST", "/api/chat", CHAT, host=host)).status == 200, host
    assert exchange(dump.port, request_bytes("POST", "/api/chat", CHAT, host="evil.example")).status == 403


def test_any_host_on_a_non_loopback_listener(start, evil: EvilUpstream) -> None:
    """Ollama checks Host only when it listens on loopback; on 0.0.0.0 names are the user's business."""
    dump = start(listen_host="0.0.0.0")
    assert exchange(dump.port, request_bytes("POST", "/api/chat", CHAT, host="ollama.example.com")).status == 200
