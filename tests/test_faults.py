"""Upstream faults, end to end: the ollama SDK gets a clear error, and the next request succeeds.

A real mitmdump runs the addon in front of the loopback fake upstream (tests/upstream.py), which
is told to fail in every way issue #5 lists: unreachable, TLS failure, error statuses, HTML or
empty bodies, silence (upstream_timeout), broken or malformed streams, client disconnects.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import select
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from addon.guard import timeouts
from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "hello"}]


def chat(client: ollama.Client, model: str, stream: bool) -> list:
    """Run a chat to the end (a stream is read completely)."""
    result = client.chat(model=model, messages=HELLO, stream=stream)
    return list(result) if stream else [result]


def still_serves(client: ollama.Client) -> None:
    """After a fault the same proxy answers a normal request (streamed and not)."""
    assert chat(client, "m", False)[0].message.content == "echo: hello"
    parts = chat(client, "m", True)
    assert "".join(p.message.content for p in parts) == "echo: hello" and parts[-1].done


def expect_error(client: ollama.Client, model: str, stream: bool) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as caught:
        chat(client, model, stream)
    return caught.value


# ---------------------------------------------------------------------------------------------
# The upstream cannot be reached


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def tls_upstream(self_signed: tuple[str, str]) -> Iterator[UpstreamServer]:
    with UpstreamServer(tls=self_signed) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A host name too long for DNS: resolution fails locally, without any query leaving the machine.
UNKNOWN_HOST = ".".join(["a" * 60] * 4) + ".invalid"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("case", "needle"),
    [("refused", "connection refused"), ("unknown-host", "unknown host"), ("tls", "TLS handshake failed")],
)
def test_unreachable_upstream(spawn, tls_upstream: UpstreamServer, case: str, needle: str, stream: bool) -> None:
    base = {
        "refused": f"http://127.0.0.1:{closed_port()}/v1",
        "unknown-host": f"http://{UNKNOWN_HOST}:8080/v1",
        "tls": tls_upstream.base_url,
    }[case]
    dump = spawn("reverse", f"openai_base_url={base}", f"openai_api_key={TEST_KEY}")
    client = ollama.Client(host=dump.url, timeout=20)
    error = expect_error(client, "m", stream)
    assert error.status_code == 502
    assert error.error.startswith("cannot reach the upstream: ") and needle in error.error
    assert TEST_KEY not in error.error
    # The proxy keeps serving: local answers, and again the same clear error.
    assert client._client.get("/api/version").status_code == 200
    assert client.chat(model="m", messages=[]).done_reason == "load"
    assert expect_error(client, "m", stream).status_code == 502
    assert "Traceback" not in dump.log()


@pytest.mark.parametrize(
    ("path", "body", "message_of"),
    [
        ("/api/chat", {"model": "m", "messages": HELLO, "stream": False}, lambda d: d["error"]),
        ("/api/chat", {"model": "m", "messages": HELLO}, lambda d: d["error"]),
        ("/v1/chat/completions", {"model": "m", "messages": HELLO}, lambda d: d["error"]["message"]),
        ("/v1/chat/completions", {"model": "m", "messages": HELLO, "stream": True}, lambda d: d["error"]["message"]),
        ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": HELLO}, lambda d: d["error"]["message"]),
        ("/v1/responses", {"model": "m", "input": "hello"}, lambda d: d["error"]["message"]),
    ],
)
def test_mitmproxys_error_answers_take_the_routes_shape_and_cors(spawn, path: str, body: dict, message_of) -> None:
    """The 502 mitmproxy writes when the upstream cannot be reached: in the route's error shape, readable
    by an allowed web page (CORS), the connection closed after it."""
    dump = spawn("reverse", f"openai_base_url=http://127.0.0.1:{closed_port()}/v1", f"openai_api_key={TEST_KEY}")
    origin = "http://localhost:3000"
    response = httpx.post(dump.url + path, json=body, headers={"Origin": origin}, timeout=20)
    assert response.status_code == 502
    assert message_of(response.json()).startswith("cannot reach the upstream: connection refused")
    if path.startswith("/v1/messages"):
        assert response.json()["type"] == "error"
    assert response.headers["access-control-allow-origin"] == origin
    assert response.headers["connection"] == "close"
    assert response.headers["content-type"].startswith("application/json")
    assert TEST_KEY not in response.text


def test_tls_upstream_works_when_trusted(spawn, tls_upstream: UpstreamServer, self_signed: tuple[str, str]) -> None:
    """The TLS failure above is the certificate, not the test server: trusted, it answers."""
    dump = spawn(
        "reverse", f"openai_base_url={tls_upstream.base_url}", f"ssl_verify_upstream_trusted_ca={self_signed[0]}"
    )
    assert chat(ollama.Client(host=dump.url, timeout=20), "m", False)[0].message.content == "echo: hello"


# ---------------------------------------------------------------------------------------------
# The upstream answers with an error


@pytest.fixture
def client(proxy: Mitmdump) -> ollama.Client:
    return ollama.Client(host=proxy.url, timeout=20)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {TEST_KEY}. Find your key at https://x",
                    "code": "invalid_api_key",
                }
            },
            {},
            "the upstream rejected the API key (401): Incorrect API key provided: [redacted]",
        ),
        (
            401,
            {"error": {"message": "Incorrect API key provided: sk-test-***********cdef.", "code": "invalid_api_key"}},
            {},
            "the upstream rejected the API key (401): Incorrect API key provided: [redacted]",
        ),
        (
            403,
            {"error": {"message": "Project does not have access"}},
            {},
            "the upstream rejected the API key (403): Project does not have access",
        ),
        (404, {"error": {"message": "Not found: /v1/chat/completions"}}, {}, "Not found: /v1/chat/completions"),
        (
            429,
            {"error": {"message": "Rate limit reached for gpt-4o"}},
            {"retry-after": "17"},
            "Rate limit reached for gpt-4o",
        ),
        (
            500,
            {"error": {"message": "The server had an error while processing your request"}},
            {},
            "The server had an error",
        ),
        (
            502,
            "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>",
            {"content-type": "text/html"},
            "502 Bad Gateway",
        ),
        (
            503,
            "<html><body><h1>Service Unavailable</h1> try later</body></html>",
            {"content-type": "text/html"},
            "Service Unavailable try later",
        ),
        (503, "", {}, "upstream answered 503 Service Unavailable"),
        (500, "", {"content-type": "application/json"}, "upstream answered 500 Internal Server Error"),
    ],
)
def test_upstream_error_statuses(
    proxy: Mitmdump,
    client: ollama.Client,
    upstream: UpstreamServer,
    status: int,
    body,
    headers: dict,
    expected: str,
    stream: bool,
) -> None:
    payload = json.dumps(body) if isinstance(body, dict) else body
    upstream.fake.queue(
        status, payload, {"content-type": "application/json", **headers} if isinstance(body, dict) else headers
    )
    error = expect_error(client, "gpt-4o", stream)
    assert error.status_code == status
    assert error.error.startswith(expected), error.error
    assert TEST_KEY not in error.error and "cdef" not in error.error and "<" not in error.error
    still_serves(client)


def test_retry_after_is_passed_through(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    for stream in (False, True):
        upstream.fake.queue(
            429,
            json.dumps({"error": {"message": "slow down"}}),
            {"content-type": "application/json", "retry-after": "17"},
        )
        response = httpx.post(proxy.url + "/api/chat", json={"model": "m", "messages": HELLO, "stream": stream})
        assert (response.status_code, response.headers["retry-after"]) == (429, "17")
        assert response.json() == {"error": "slow down"}


def test_upstream_200_that_is_not_json(client: ollama.Client, upstream: UpstreamServer) -> None:
    upstream.fake.queue(200, "<html>maintenance</html>", {"content-type": "text/html"})
    error = expect_error(client, "m", False)
    assert error.status_code == 502 and "not JSON" in error.error
    still_serves(client)


# ---------------------------------------------------------------------------------------------
# The stream breaks


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("malformed-sse", "invalid stream event"),
        ("no-done", "ended before the answer was complete"),
        ("error-event", "upstream error: overloaded"),
        ("reset", "the upstream connection broke off"),
        ("close", "the upstream connection broke off"),
    ],
)
def test_broken_streams_end_with_an_error_line(
    proxy: Mitmdump, client: ollama.Client, upstream: UpstreamServer, fault: str, needle: str
) -> None:
    # Raw: the body is a complete chunked HTTP answer whose last line is the error.
    with httpx.stream("POST", proxy.url + "/api/chat", json={"model": f"fault:{fault}", "messages": HELLO}) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())  # no RemoteProtocolError: the body was properly ended
    lines = [json.loads(line) for line in raw.splitlines()]
    assert (needle in lines[-1]["error"] and "incomplete" in lines[-1]["error"]) or needle in lines[-1]["error"]
    assert all("error" not in line for line in lines[:-1]) and not any(line.get("done") for line in lines)
    # The SDK: the lines before, then a ResponseError saying what happened.
    parts = client.chat(model=f"fault:{fault}", messages=HELLO, stream=True)
    with pytest.raises(ollama.ResponseError) as caught:
        for _ in parts:
            pass
    assert needle in caught.value.error
    still_serves(client)


def raw_stream(sock: socket.socket, path: str, model: str) -> tuple[bytes, bytes]:
    """One streamed chat over a raw socket, read to the end of its chunked body: (head, chunked body)."""
    body = json.dumps({"model": model, "messages": HELLO, "stream": True}).encode()
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), len(body), body)
    )
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"\n\r\n0\r\n\r\n"):
        piece = sock.recv(65536)
        assert piece, f"the connection closed before the end of the answer: {data[-300:]!r}"
        data += piece
    head, _, chunked = data.partition(b"\r\n\r\n")
    return head.lower(), chunked


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_streams_that_end_well_keep_their_connection(proxy: Mitmdump, path: str) -> None:
    """No Connection: close up front: a client sends its next stream on the same connection."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        for _ in range(3):
            head, chunked = raw_stream(sock, path, "m")
            assert head.startswith(b"http/1.1 200") and b"connection: close" not in head
            assert b"echo:" in chunked and (b'"done":true' in chunked or b"data: [DONE]" in chunked)


@pytest.mark.parametrize(
    ("path", "fault"), [("/api/chat", "close"), ("/api/chat", "reset"), ("/v1/chat/completions", "reset")]
)
def test_a_broken_stream_ends_its_answer_and_then_its_connection(proxy: Mitmdump, path: str, fault: str) -> None:
    """After a break mitmproxy closes the client connection: the complete answer (its last line says
    why), then the end of the connection, and the next stream of that client on a new one."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        head, chunked = raw_stream(sock, path, f"fault:{fault}")
        assert head.startswith(b"http/1.1 200") and b"the upstream connection broke off" in chunked
        if timeouts.ENDS_CONNECTION_WITH_ANSWER:  # the end of the connection came with the end of the answer
            assert select.select([sock], [], [], 0)[0], "the connection was still open after the answer"
        assert sock.recv(1) == b""  # closed by the proxy, no byte after the end of the answer
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        head, chunked = raw_stream(sock, path, "m")
        assert head.startswith(b"http/1.1 200") and b"echo:" in chunked


@pytest.mark.parametrize(("path", "fault"), [("/api/chat", "reset"), ("/v1/chat/completions", "close")])
def test_a_broken_stream_to_a_tls_client_ends_cleanly(spawn, upstream: UpstreamServer, path: str, fault: str) -> None:
    """A client that speaks TLS to the proxy (mitmproxy terminates it on a reverse:https:// listener) gets the
    same end of the answer, as TLS records of its own session: never bytes in clear inside it."""
    proxy = spawn("reverse:https://127.0.0.1:9", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}")
    proxy.wait_ready()  # (a TLS client before mitmproxy's certificate store is loaded would stop it)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        body = json.dumps({"model": f"fault:{fault}", "messages": HELLO, "stream": True}).encode()
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(body), body)
        )
        data = b""
        while piece := sock.recv(65536):  # an SSLError here: bytes that were not TLS records
            data += piece
    head, _, chunked = data.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 200")
    assert b"the upstream connection broke off" in chunked and chunked.endswith(b"\r\n0\r\n\r\n")


def test_a_pooled_client_never_loses_its_next_request_after_a_broken_stream(proxy: Mitmdump) -> None:
    """httpx reuses a kept-alive connection unless it sees it closed: it must see that at once."""
    with httpx.Client(base_url=proxy.url, timeout=20) as client:
        for n in range(30):
            fault = ("reset", "close")[n % 2]
            with client.stream("POST", "/api/chat", json={"model": f"fault:{fault}", "messages": HELLO}) as response:
                assert b"the upstream connection broke off" in response.read()
            answer = client.post("/api/chat", json={"model": "m", "messages": HELLO, "stream": False})
            assert answer.status_code == 200 and answer.json()["message"]["content"] == "echo: hello"


def test_non_streamed_answer_cut_short(client: ollama.Client) -> None:
    error = expect_error(client, "fault:truncated-json", False)
    assert error.status_code == 502 and "broke off before the answer was complete" in error.error
    still_serves(client)


# ---------------------------------------------------------------------------------------------
# Timeouts


@pytest.fixture(scope="module")
def timeout_proxy(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    dump = Mitmdump(
        tmp_path_factory.mktemp("timeout"),
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        "upstream_timeout=1",
    )
    yield dump
    dump.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_that_never_answers(timeout_proxy: Mitmdump, upstream: UpstreamServer, stream: bool) -> None:
    client = ollama.Client(host=timeout_proxy.url, timeout=20)
    upstream.fake.queue(200, {"never": "sent"}, hang=15)
    started = time.monotonic()
    error = expect_error(client, "m", stream)
    assert error.status_code == 504
    assert error.error == "the upstream sent nothing for 1 s (upstream_timeout)"
    assert time.monotonic() - started < 10
    wait_for(lambda: upstream.fake.aborted == 1, "the upstream connection was closed")
    still_serves(client)


def test_upstream_that_never_accepts_the_connection(spawn) -> None:
    """A full listen backlog: the TCP connect itself hangs, and upstream_timeout ends it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the backlog: further connects hang
            dump = spawn("reverse", f"openai_base_url=http://127.0.0.1:{port}/v1", "upstream_timeout=1")
            client = ollama.Client(host=dump.url, timeout=20)
            for stream in (False, True):
                error = expect_error(client, "m", stream)
                assert error.status_code == 504
                assert error.error == "the upstream did not accept the connection within 1 s (upstream_timeout)"
            assert client._client.get("/api/version").status_code == 200
    assert "Traceback" not in dump.log()


def test_upstream_that_stalls_mid_stream(timeout_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    client = ollama.Client(host=timeout_proxy.url, timeout=20)
    upstream.fake.pause_after = 3  # the role chunk, "echo:", " a" — then silence
    parts = client.chat(model="m", messages=[{"role": "user", "content": "a b c"}], stream=True)
    received = []
    with pytest.raises(ollama.ResponseError) as caught:
        for part in parts:
            received.append(part.message.content)
    assert received == ["echo:", " a"]
    assert caught.value.error == "the upstream sent nothing for 1 s (upstream_timeout): the answer is incomplete"
    wait_for(lambda: upstream.fake.aborted == 1, "the upstream connection was closed")
    upstream.fake.pause_after = None
    still_serves(client)


def test_upstream_that_stalls_before_the_first_event(timeout_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    """Headers came (the client has its 200 and NDJSON headers), then nothing: the only line is the error."""
    upstream.fake.pause_after = 0
    parts = ollama.Client(host=timeout_proxy.url, timeout=20).chat(model="m", messages=HELLO, stream=True)
    with pytest.raises(ollama.ResponseError) as caught:
        next(iter(parts))
    assert caught.value.error == "the upstream sent nothing for 1 s (upstream_timeout): the answer is incomplete"
    wait_for(lambda: upstream.fake.aborted == 1, "the upstream connection was closed")


def test_upstream_that_stalls_in_the_middle_of_a_whole_answer(
    timeout_proxy: Mitmdump, upstream: UpstreamServer
) -> None:
    """A non-streamed answer whose body stops halfway: nothing was sent to the client yet, so a 504."""
    upstream.fake.queue(
        200, {"choices": [{"message": {"role": "assistant", "content": "x" * 200}, "finish_reason": "stop"}]}, stall=15
    )
    error = expect_error(ollama.Client(host=timeout_proxy.url, timeout=20), "m", False)
    assert error.status_code == 504 and error.error == "the upstream sent nothing for 1 s (upstream_timeout)"
    wait_for(lambda: upstream.fake.aborted == 1, "the upstream connection was closed")
    still_serves(ollama.Client(host=timeout_proxy.url, timeout=20))


def test_a_slow_but_steady_stream_is_not_cut(timeout_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    """upstream_timeout bounds silence, not the length of an answer: 6 events 0.4 s apart pass."""
    upstream.fake.event_delay = 0.4
    parts = list(
        ollama.Client(host=timeout_proxy.url, timeout=20).chat(
            model="m", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
    )
    assert "".join(p.message.content for p in parts) == "echo: a b c" and parts[-1].done


# ---------------------------------------------------------------------------------------------
# The client goes away


def test_client_disconnect_mid_stream_stops_the_upstream(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.pause_after = 2  # the upstream holds the stream after the first words
    with httpx.stream("POST", proxy.url + "/api/chat", json={"model": "m", "messages": HELLO}) as response:
        first = next(response.iter_lines())
        assert json.loads(first)["message"]["content"] == "echo:"
    # leaving the block closed the client connection while the upstream was still generating
    wait_for(lambda: upstream.fake.aborted == 1, "the proxy closed the upstream connection")
    assert upstream.fake.completed == 0
    upstream.fake.pause_after = None
    still_serves(ollama.Client(host=proxy.url, timeout=20))


def wait_for(condition, what: str, seconds: float = 8.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def test_logs_have_no_tracebacks(proxy: Mitmdump, timeout_proxy: Mitmdump) -> None:
    for dump in (proxy, timeout_proxy):
        log = dump.log()
        for needle in ("Traceback", "has crashed"):
            at = log.find(needle)
            assert at < 0, log[max(at - 1500, 0) : at + 2500]
        assert TEST_KEY not in log


# ---------------------------------------------------------------------------------------------
# The same on the OpenAI-compatible /v1 routes (passed through, not converted)


def test_v1_stream_that_is_slow_but_steady_is_not_cut(timeout_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.event_delay = 0.4
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    with httpx.stream("POST", timeout_proxy.url + "/v1/chat/completions", json=body, timeout=20) as response:
        raw = b"".join(response.iter_bytes())
    assert response.status_code == 200 and raw.rstrip().endswith(b"data: [DONE]")


def last_sse_event(raw: bytes) -> dict:
    events = [line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:")]
    return json.loads(events[-1])


def test_v1_stream_that_stalls_is_cut_and_the_client_sees_it(timeout_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.pause_after = 3
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    with httpx.stream("POST", timeout_proxy.url + "/v1/chat/completions", json=body, timeout=20) as response:
        raw = b"".join(response.iter_bytes())  # a properly ended body whose last event says why it is cut
    assert b"echo:" in raw and b"[DONE]" not in raw
    error = last_sse_event(raw)["error"]
    assert "upstream_timeout" in error["message"] and "incomplete" in error["message"]
    wait_for(lambda: upstream.fake.aborted == 1, "the upstream connection was closed")


@pytest.mark.parametrize("fault", ["reset", "close"])
def test_v1_broken_streams_end_with_an_error_event(proxy: Mitmdump, upstream: UpstreamServer, fault: str) -> None:
    body = {"model": f"fault:{fault}", "stream": True, "messages": HELLO}
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, timeout=20) as response:
        raw = b"".join(response.iter_bytes())  # no RemoteProtocolError: the body was properly ended
    assert response.status_code == 200 and b"[DONE]" not in raw
    assert "the upstream connection broke off" in last_sse_event(raw)["error"]["message"]
    # The openai SDK raises it as an API error, after the events that came before.
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model=f"fault:{fault}", messages=HELLO, stream=True):
            received.append(chunk)
    assert "the upstream connection broke off" in caught.value.message and not isinstance(
        caught.value, openai.APIConnectionError
    )
    assert received, "the events before the break reach the client"
    assert httpx.get(proxy.url + "/api/version").status_code == 200


def test_v1_request_the_upstream_never_answers(timeout_proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue(200, {"never": "sent"}, hang=15)
    response = httpx.post(
        timeout_proxy.url + "/v1/chat/completions", json={"model": "m", "messages": HELLO}, timeout=20
    )
    assert response.status_code == 504 and "upstream_timeout" in response.json()["error"]["message"]
    assert isinstance(response.json()["error"]["type"], str)  # OpenAI's error object, not Ollama's string
    wait_for(lambda: upstream.fake.aborted == 1, "the upstream connection was closed")
