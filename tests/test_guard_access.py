"""Access control: loopback by default, the client key (ollama_api_key), forwarding the client's key."""

from __future__ import annotations

import http.client
import json
import time

import httpx
import ollama
import pytest

from addon.guard.access import bearer_of, key_matches
from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

CLIENT_KEY = "ollama-client-key-5f3b2a1c"
HELLO = [{"role": "user", "content": "hello"}]


def test_bearer_parsing() -> None:
    assert bearer_of("Bearer abc") == "abc"
    assert bearer_of("bearer   abc ") == "abc"
    assert bearer_of("Bearer ") == "" and bearer_of("Bearer") == ""
    assert bearer_of("Basic dXNlcjpwYXNz") is None and bearer_of("") is None


def test_key_comparison() -> None:
    assert key_matches("k1", "k1")
    assert not key_matches("k2", "k1") and not key_matches("", "k1") and not key_matches(None, "k1")
    assert not key_matches("k1 ", "k1") and not key_matches("é", "k1")
    assert key_matches("\udcff", "\udcff")  # undecodable header bytes do not raise


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.e2e
def test_listens_on_loopback_only_by_default(spawn, upstream: UpstreamServer) -> None:
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", listen_host=None)
    deadline = time.monotonic() + 10  # mitmproxy may listen before the script is loaded; the addon then listens again
    while listening_addresses(dump.port) != {"0100007F"} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listening_addresses(dump.port) == {"0100007F"}  # 127.0.0.1, nothing else
    assert httpx.get(dump.url + "/api/version").status_code == 200


@pytest.mark.e2e
def test_all_interfaces_when_asked(spawn, upstream: UpstreamServer) -> None:
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", listen_host="0.0.0.0")
    assert listening_addresses(dump.port) == {"00000000"}


@pytest.fixture(scope="module")
def locked(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Mitmdump:
    dump = Mitmdump(
        tmp_path_factory.mktemp("locked"),
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"ollama_api_key={CLIENT_KEY}",
    )
    yield dump
    dump.stop()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "unauthorized: this proxy requires an API key"),
        ({"Authorization": "Bearer wrong-key"}, "unauthorized: invalid API key"),
        ({"Authorization": f"Bearer {CLIENT_KEY}x"}, "unauthorized: invalid API key"),
        ({"Authorization": f"Basic {CLIENT_KEY}"}, "unauthorized: this proxy requires an API key"),
        ({"Authorization": CLIENT_KEY}, "unauthorized: this proxy requires an API key"),
    ],
)
def test_a_configured_key_is_required(locked: Mitmdump, upstream: UpstreamServer, headers: dict, message: str) -> None:
    client = ollama.Client(host=locked.url, headers=headers, timeout=10)
    for call in (
        lambda: client.chat(model="m", messages=HELLO),
        lambda: list(client.chat(model="m", messages=HELLO, stream=True)),
        lambda: client.generate(model="m", prompt="x"),
        lambda: client._client.get("/api/version").raise_for_status(),
    ):
        with pytest.raises((ollama.ResponseError, httpx.HTTPStatusError)) as caught:
            call()
        error = caught.value
        if isinstance(error, ollama.ResponseError):
            assert error.status_code == 401 and error.error.startswith(message)
            assert "wrong-key" not in error.error and CLIENT_KEY not in error.error
        else:
            assert error.response.status_code == 401 and error.response.json()["error"].startswith(message)
    assert upstream.fake.requests == [], "nothing went upstream"


def raw_post(url: str, path: str, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    """http.client, which (unlike httpx) sends Copilot's `Authorization: Bearer ` with its trailing space."""
    parts = httpx.URL(url)
    connection = http.client.HTTPConnection(parts.host, parts.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.e2e
def test_copilot_empty_bearer_is_refused_when_a_key_is_set(locked: Mitmdump, upstream: UpstreamServer) -> None:
    status, answer = raw_post(
        locked.url, "/api/chat", {"model": "m", "messages": HELLO, "stream": False}, {"Authorization": "Bearer "}
    )
    assert status == 401 and answer["error"].startswith("unauthorized: this proxy requires an API key")
    assert upstream.fake.requests == []


@pytest.mark.e2e
def test_the_right_key_is_served(locked: Mitmdump, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", CLIENT_KEY)  # how ollama-python users set it
    client = ollama.Client(host=locked.url, timeout=10)
    assert client.chat(model="m", messages=HELLO).message.content == "echo: hello"
    assert "".join(p.response for p in client.generate(model="m", prompt="a b", stream=True)) == "echo: a b"
    # Upstream gets the configured upstream key, never the client's.
    assert {r.headers["authorization"] for r in upstream.fake.requests} == {f"Bearer {TEST_KEY}"}
    log = locked.log()
    assert CLIENT_KEY not in log and TEST_KEY not in log


@pytest.mark.e2e
def test_copilot_empty_bearer_is_accepted_without_a_key(proxy: Mitmdump) -> None:
    status, answer = raw_post(
        proxy.url, "/api/chat", {"model": "m", "messages": HELLO, "stream": False}, {"Authorization": "Bearer "}
    )
    assert status == 200 and answer["message"]["content"] == "echo: hello"


@pytest.mark.e2e
def test_forward_client_key(spawn, upstream: UpstreamServer, tmp_path) -> None:
    saved = tmp_path / "flows.flow"
    dump = spawn(
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        "forward_client_key=true",
        f"save_stream_file={saved}",
    )
    own = "sk-user-own-key-998877"
    client = ollama.Client(host=dump.url, headers={"Authorization": f"Bearer {own}"}, timeout=10)
    assert client.chat(model="m", messages=HELLO).message.content == "echo: hello"
    assert list(client.chat(model="m", messages=HELLO, stream=True))[-1].done
    assert [r.headers.get("authorization") for r in upstream.fake.requests] == [f"Bearer {own}"] * 2
    # A client without a key is forwarded without one: the configured key is not spent for it.
    ollama.Client(host=dump.url, timeout=10).chat(model="m", messages=HELLO)
    assert "authorization" not in upstream.fake.requests[-1].headers
    # An upstream that rejects the forwarded key: the client is told, the key is not shown.
    upstream.fake.queue(
        401,
        json.dumps({"error": {"message": f"Incorrect API key provided: {own}"}}),
        {"content-type": "application/json"},
    )
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="m", messages=HELLO)
    assert (
        caught.value.status_code == 401
        and own not in caught.value.error
        and "rejected the API key" in caught.value.error
    )
    time.sleep(0.2)
    dump.stop()
    assert own.encode() not in saved.read_bytes() and TEST_KEY.encode() not in saved.read_bytes()
    assert own not in dump.log()


@pytest.mark.e2e
def test_forward_client_key_with_a_proxy_key(spawn, upstream: UpstreamServer) -> None:
    """Both options: the client's key must be the proxy key, and it is what goes upstream."""
    dump = spawn(
        "reverse", f"openai_base_url={upstream.base_url}", f"ollama_api_key={CLIENT_KEY}", "forward_client_key=true"
    )
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=dump.url, headers={"Authorization": "Bearer other"}).chat(model="m", messages=HELLO)
    ollama.Client(host=dump.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}).chat(model="m", messages=HELLO)
    assert [r.headers.get("authorization") for r in upstream.fake.requests] == [f"Bearer {CLIENT_KEY}"]


@pytest.mark.e2e
def test_regular_mode_checks_ollama_hosts_only(spawn, upstream: UpstreamServer) -> None:
    dump = spawn("regular", f"openai_base_url={upstream.base_url}", f"ollama_api_key={CLIENT_KEY}")
    denied = ollama.Client(host="http://ollama.internal:11434", proxy=dump.url, timeout=10)
    with pytest.raises(ollama.ResponseError) as caught:
        denied.chat(model="m", messages=HELLO)
    assert caught.value.status_code == 401
    allowed = ollama.Client(
        host="http://ollama.internal:11434",
        proxy=dump.url,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )
    assert allowed.chat(model="m", messages=HELLO).message.content == "echo: hello"
    # Other hosts pass through untouched, their own Authorization header included.
    httpx.post(
        upstream.base_url + "/chat/completions",
        json={"model": "m", "messages": HELLO},
        proxy=dump.url,
        headers={"Authorization": "Bearer for-that-host"},
    )
    assert upstream.fake.requests[-1].headers["authorization"] == "Bearer for-that-host"


def test_the_comparison_is_constant_time() -> None:
    import inspect

    from addon.guard import access

    assert "hmac.compare_digest(" in inspect.getsource(access.key_matches)


def test_gate_in_the_addon_chain() -> None:
    """Through mitmproxy's test helpers: 401 before routing, and the client's key leaves the flow at once."""
    from mitmproxy.test import taddons

    from addon.proxy import OllamaProxy
    from harness.inproc import client_flow

    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1", ollama_api_key=CLIENT_KEY)
        for header, status in ((f"Bearer {CLIENT_KEY}", None), ("Bearer nope", 401), (None, 401)):
            headers = {"authorization": header} if header else {}
            flow = client_flow("/api/chat", {"model": "m", "messages": HELLO}, headers=headers)
            proxy.requestheaders(flow)
            assert CLIENT_KEY not in str(flow.request.headers)
            proxy.request(flow)
            if status is None:
                assert flow.response is None and flow.request.path == "/v1/chat/completions"
            else:
                assert flow.response.status_code == 401 and "error" in json.loads(flow.response.content)
            proxy.response(flow)
        assert proxy.exchanges == {}


def test_a_refusal_speaks_the_family_of_its_route() -> None:
    """The key check answers in the error shape of the route's API family (endpoint.error)."""
    from mitmproxy.test import taddons

    from addon.proxy import OllamaProxy
    from harness.inproc import client_flow, run_request

    proxy = OllamaProxy()
    with taddons.context(proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1", ollama_api_key=CLIENT_KEY)
        answers = {}
        for path in ("/api/chat", "/v1/chat/completions"):
            flow = client_flow(path, b"{}")
            run_request(proxy, flow)
            assert flow.response is not None and flow.response.status_code == 401
            assert flow.response.headers["www-authenticate"] == 'Bearer realm="ollama"'
            answers[path] = json.loads(flow.response.content)
    assert answers["/api/chat"]["error"].startswith("unauthorized: this proxy requires an API key")
    assert answers["/v1/chat/completions"]["error"]["message"].startswith("unauthorized: this proxy requires")


@pytest.mark.e2e
def test_a_probe_of_a_path_no_route_serves_gets_ollamas_404_key_or_not(
    locked: Mitmdump, upstream: UpstreamServer
) -> None:
    """Claude Code sends a keyless `HEAD /api/hello` at every start: Ollama answers 404 (it has no such route),
    so does the proxy, before the key check, and logs it as no failure; every route still wants the key."""
    start = len(locked.log())
    probe = httpx.head(f"{locked.url}/api/hello", timeout=10)
    assert (probe.status_code, probe.content) == (404, b"")
    other = httpx.post(f"{locked.url}/api/nothing", json={"model": "m"}, timeout=10)
    assert (other.status_code, other.text) == (404, "404 page not found")
    assert httpx.head(f"{locked.url}/api/tags", timeout=10).status_code == 401, "a route: the key first"
    assert httpx.get(f"{locked.url}/api/status", timeout=10).status_code == 401
    log = locked.log()[start:]
    assert "POST /api/nothing · 404" in log, "a failure is logged (flow_detail 0: failures only)"
    assert "/api/hello" not in log, "the probe is no failure: quiet"
    assert upstream.fake.requests == []
