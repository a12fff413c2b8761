"""§4 An upstream that echoes the key must not get it anywhere the proxy writes.

The hostile upstream reflects the request's `Authorization: Bearer <upstream key>` in every way
`evil.py` lists (headers in three encodings, body, SSE error event, reason phrase, malformed status
line, a header line without a colon, cut-off headers, trailers, a 103 interim answer, a redirect).
The key must then appear — plain, JSON-escaped, URL-encoded, hex or base64 at any alignment — in
no byte the proxy emits: the client's answers (status line, headers, body, trailers), mitmdump's
output at every flow_detail, flows saved with `-w` (also an HTTP/2 client's flow still in flight
when mitmdump stops), and mitmweb's flow API. Upstream response headers reach clients only
through an allow-list.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness.mitmdump import MITMDUMP, free_port, wait_for_port
from hostile.evil import EvilUpstream
from hostile.tools import HELLO, UPSTREAM_KEY, Quiet, assert_no_leak, leaks, read_answer, request_bytes

pytestmark = pytest.mark.e2e

# (echo-trailers is in test_fail_closed.py: mitmproxy cannot read trailers at all, the client hangs)
ECHO_ACTS = [
    "echo-headers",
    "echo-body",
    "echo-error-event",
    "echo-reason",
    "echo-status-line",
    "echo-bad-header",
    "echo-cut-headers",
    "echo-early-hints",
    "echo-redirect",
]
ROUTES = [
    ("/api/chat", False),
    ("/api/chat", True),
    ("/api/generate", False),
    ("/api/embed", False),
    ("/v1/chat/completions", False),
    ("/v1/chat/completions", True),
    ("/v1/completions", True),
    ("/v1/embeddings", False),
]

# What a client may get among the upstream's response headers (and the proxy's own framing and CORS headers).
ALLOWED_RESPONSE_HEADERS = {
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "access-control-allow-origin",
    "vary",
    "www-authenticate",
}


def body_for(path: str, model: str, stream: bool) -> dict:
    if path.endswith(("embeddings", "embed")):
        return {"model": model, "input": "hi"}
    if path in ("/api/generate", "/v1/completions"):
        return {"model": model, "prompt": "hi", "stream": stream}
    return {"model": model, "messages": HELLO, "stream": stream}


def call(port: int, path: str, model: str, stream: bool, timeout: float = 3) -> bytes:
    """Every byte the client gets for one request (also when the answer never completes)."""
    received: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_bytes("POST", path, body_for(path, model, stream)))
        try:
            read_answer(sock, timeout, sink=received)
        except (TimeoutError, ConnectionError, OSError):
            received.append(b"<no complete answer>")
    return b"".join(received)


def on_every_route(port: int, act: str) -> dict[tuple[str, bool], bytes]:
    """The act on every route at once (so that answers that never complete cost one timeout, not eight)."""
    with ThreadPoolExecutor(len(ROUTES)) as pool:
        results = pool.map(lambda route: call(port, route[0], f"evil:{act}", route[1]), ROUTES)
    return dict(zip(ROUTES, results, strict=False))


def echo_traffic(port: int) -> dict[tuple[str, str, bool], bytes]:
    return {(act, *route): raw for act in ECHO_ACTS for route, raw in on_every_route(port, act).items()}


def hidden_everywhere(evil: EvilUpstream) -> None:
    """The upstream did get the key (so it had something to echo)."""
    sent = {r.headers.get("authorization") for r in evil.answered()}
    assert sent == {f"Bearer {UPSTREAM_KEY}"}, sent


# ---------------------------------------------------------------------------------------------
# What the client gets


@pytest.mark.parametrize("act", ECHO_ACTS)
def test_echoed_key_reaches_no_client(shared, evil: EvilUpstream, act: str) -> None:
    found = []
    for (path, stream), raw in on_every_route(shared.port, act).items():
        found += [f"{path} stream={stream}: {leak}" for leak in leaks(raw, UPSTREAM_KEY)]
    hidden_everywhere(evil)
    assert not found, "the client got the key:\n" + "\n".join(found)


@pytest.mark.parametrize(("path", "stream"), ROUTES)
def test_response_headers_are_allow_listed(shared, evil: EvilUpstream, path: str, stream: bool) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=15) as sock:
        sock.sendall(request_bytes("POST", path, body_for(path, "evil:echo-headers", stream)))
        answer, _ = read_answer(sock, 15)
    assert answer.status == 200, answer
    names = {name for name, _ in answer.headers}
    assert "x-innocent" not in names, "an allow-list, not a deny-list: harmless unknown headers are dropped too"
    assert names <= ALLOWED_RESPONSE_HEADERS, f"not allowed: {sorted(names - ALLOWED_RESPONSE_HEADERS)}"
    assert not any(name == "set-cookie" for name in names)


# ---------------------------------------------------------------------------------------------
# What mitmdump prints and saves


@pytest.fixture(scope="module")
def echo_runs(evil: EvilUpstream, sentinel, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The echo traffic through five mitmdumps at once, one per flow_detail (the first also saves
    its flows with -w): their output, the saved file, and the Authorization headers the upstream got."""
    folder = tmp_path_factory.mktemp("echo-runs")
    saved = folder / "echo.flow"
    dumps = {
        level: Quiet(
            folder,
            f"reverse:http://127.0.0.1:{sentinel.port}",
            f"openai_base_url={evil.base_url}",
            f"openai_api_key={UPSTREAM_KEY}",
            f"flow_detail={level}",
            *((f"save_stream_file={saved}", "store_streamed_bodies=true") if level == 0 else ()),
        )
        for level in range(5)
    }
    evil.reset()
    try:
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda dump: echo_traffic(dump.port), dumps.values()))
        time.sleep(0.3)
    finally:
        for dump in dumps.values():
            dump.stop()
    return {
        "logs": {level: dump.log() for level, dump in dumps.items()},
        "saved": saved.read_bytes(),
        "sent": {r.headers.get("authorization") for r in evil.answered()},
    }


@pytest.mark.parametrize("flow_detail", range(5))
def test_no_key_in_mitmdump_output(echo_runs: dict, flow_detail: int) -> None:
    assert echo_runs["sent"] == {f"Bearer {UPSTREAM_KEY}"}
    assert_no_leak(f"mitmdump's output at flow_detail={flow_detail}", echo_runs["logs"][flow_detail], UPSTREAM_KEY)


def test_no_key_in_saved_flows(echo_runs: dict) -> None:
    assert echo_runs["sent"] == {f"Bearer {UPSTREAM_KEY}"}
    assert len(echo_runs["saved"]) > 10_000
    assert_no_leak("the saved flows", echo_runs["saved"], UPSTREAM_KEY)


class H2Client:
    """A minimal HTTP/2 client over TLS that offers only h2 (httpx offers http/1.1 first, which mitmproxy picks)."""

    def __init__(self, port: int) -> None:
        import ssl

        import h2.config
        import h2.connection

        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        self.port = port
        self.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost"
        )
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def post(self, stream_id: int, path: str, body: dict) -> None:
        data = json.dumps(body).encode()
        self.conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":path", path),
                (":authority", f"127.0.0.1:{self.port}"),
                (":scheme", "https"),
                ("content-type", "application/json"),
                ("content-length", str(len(data))),
            ],
        )
        self.conn.send_data(stream_id, data, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())

    def answer(self, stream_id: int) -> tuple[int, bytes]:
        import h2.events

        status, body = 0, b""
        while True:
            for event in self.conn.receive_data(self.sock.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    return status, body
            self.sock.sendall(self.conn.data_to_send())


def test_no_key_in_an_http2_flow_saved_in_flight(start, evil: EvilUpstream, sentinel, tmp_path: Path) -> None:
    """An HTTP/2 client (TLS, ALPN h2) whose request still waits upstream when mitmdump stops."""
    saved = tmp_path / "inflight.flow"
    dump = start(f"save_stream_file={saved}", mode=f"reverse:https://127.0.0.1:{sentinel.port}")
    dump.wait_ready()
    client = H2Client(dump.port)
    client.post(1, "/api/chat", {"model": "m", "messages": HELLO, "stream": False})
    assert client.answer(1)[0] == 200
    client.post(3, "/api/chat", {"model": "evil:hang", "messages": HELLO, "stream": False})
    deadline = time.monotonic() + 10
    while (
        not any(r.body and r.body.get("model") == "evil:hang" for r in evil.answered()) and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    hidden_everywhere(evil)
    dump.stop()  # SIGTERM: mitmproxy's save addon writes the flows still in flight
    evil.release.set()
    assert saved.read_bytes().count(b"evil:hang") >= 1, "the in-flight flow was saved"
    assert_no_leak("the saved in-flight flow", saved.read_bytes(), UPSTREAM_KEY)


def _ignore(action) -> None:
    with contextlib.suppress(httpx.HTTPError):
        action()


# ---------------------------------------------------------------------------------------------
# mitmweb


def test_no_key_in_mitmweb(evil: EvilUpstream, sentinel, tmp_path: Path) -> None:
    web_port = free_port()
    web = Quiet(
        tmp_path,
        f"reverse:http://127.0.0.1:{sentinel.port}",
        f"openai_base_url={evil.base_url}",
        "web_password=hostile-web-pw",
        "web_open_browser=false",
        "store_streamed_bodies=true",
        program=MITMDUMP.parent / "mitmweb",
        extra=("--web-host", "127.0.0.1", "--web-port", str(web_port)),
        environment={"OPENAI_API_KEY": UPSTREAM_KEY},
    )
    try:
        wait_for_port(web_port, web.process)
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{web_port}", headers={"Authorization": "Bearer hostile-web-pw"}, timeout=20
        )
        echo_traffic(web.port)
        hidden_everywhere(evil)
        # A request in flight, looked at while it waits.
        thread = threading.Thread(
            target=lambda: _ignore(
                lambda: httpx.post(
                    web.url + "/api/chat", json={"model": "evil:hang", "messages": HELLO, "stream": False}, timeout=30
                )
            )
        )
        thread.start()
        seen: list[bytes] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            r.body and r.body.get("model") == "evil:hang" for r in evil.answered()
        ):
            time.sleep(0.05)
        seen.append(api.get("/flows").content)
        evil.release.set()
        thread.join(30)
        listing = api.get("/flows")
        assert listing.status_code == 200 and len(listing.json()) >= len(ECHO_ACTS) * len(ROUTES)
        seen += [listing.content, api.get("/flows/dump").content]
        for flow in listing.json():
            for part in ("request", "response"):
                if (flow.get(part) or {}).get("contentLength"):
                    for view in ("content.data", "content/auto.json", "content/raw.json"):
                        response = api.get(f"/flows/{flow['id']}/{part}/{view}")
                        if response.status_code == 200:
                            seen.append(response.content)
        events = api.get("/events")
        if events.status_code == 200:
            seen.append(events.content)
        found = [f"{leak}" for blob in seen for leak in leaks(blob, UPSTREAM_KEY)]
        assert not found, "mitmweb shows the key:\n" + "\n".join(found[:20])
    finally:
        web.stop()
    assert_no_leak("mitmweb's output", web.log(), UPSTREAM_KEY)
