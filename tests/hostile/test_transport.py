"""Issue 21 §2: whatever the transport, an unauthenticated or oversized body is never buffered.

- A TLS handshake on a plain `reverse:http://` listener gets Ollama's answer (Go's HTTP server
  reads it as a malformed request): a plain-text `400 Bad Request`, and the connection closed.
- On a `reverse:https://` listener (TLS on purpose), the early 401/413 is written inside TLS
  before the body is read, as on plain HTTP; an HTTP/2 stream that must be refused is reset.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading

import pytest

from hostile.evil import MB, EvilUpstream
from hostile.tools import CLIENT_KEY, HELLO, closes_after, peak_rss_mb, reset_peak

pytestmark = pytest.mark.e2e


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def tls_socket(port: int) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")


def head(path: str, length: int, key: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", "Content-Type: application/json", f"Content-Length: {length}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_all(sock: socket.socket, most: int = 1 << 16) -> bytes:
    data = b""
    try:
        while len(data) < most and (piece := sock.recv(65536)):
            data += piece
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        pass
    return data


def test_a_tls_handshake_on_the_plain_listener_gets_a_plain_400(shared, evil: EvilUpstream, sentinel) -> None:
    reached = sentinel.connections
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(client_hello())
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
        assert b"plain HTTP" in answer
        assert closes_after(sock, 5)
    with pytest.raises((ssl.SSLError, ConnectionError)):  # a real TLS client fails at once, nothing hangs
        tls_socket(shared.port).close()
    assert evil.answered() == [] and sentinel.connections == reached


@pytest.mark.hostile_heavy
def test_keyless_tls_bodies_on_the_plain_listener_are_never_buffered(start, evil: EvilUpstream) -> None:
    """The review's case: 3 keyless clients × 200 MB over TLS to a reverse:http listener (before: +1.2 GB)."""
    dump = start(f"ollama_api_key={CLIENT_KEY}")
    reset_peak(dump.process.pid)
    before = peak_rss_mb(dump.process.pid)

    def send() -> None:
        try:
            with tls_socket(dump.port) as sock:
                sock.sendall(head("/api/chat", 200 * MB))
                for _ in range(200):
                    sock.sendall(b" " * MB)
        except (OSError, ssl.SSLError):
            pass  # refused: what must happen

    clients = [threading.Thread(target=send) for _ in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert peak_rss_mb(dump.process.pid) - before < 64
    assert evil.answered() == []


@pytest.fixture
def tls_listener(start, sentinel):
    dump = start(f"ollama_api_key={CLIENT_KEY}", mode=f"reverse:https://127.0.0.1:{sentinel.port}")
    dump.wait_ready()
    return dump


def test_early_answers_are_written_inside_tls(tls_listener, evil: EvilUpstream, sentinel) -> None:
    """A reverse:https listener: no key → 401 right after the head, as TLS records, before any body byte."""
    reached = sentinel.connections
    for path in ("/api/chat", "/v1/chat/completions"):
        with tls_socket(tls_listener.port) as sock:
            sock.sendall(head(path, 100 * MB))
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"unauthorized" in answer
    body = json.dumps({"model": "m", "messages": HELLO, "stream": False}).encode()
    with tls_socket(tls_listener.port) as sock:  # with the key: served, over TLS
        sock.sendall(head("/api/chat", len(body), CLIENT_KEY) + body)
        answer = read_all(sock, 1)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert sentinel.connections == reached


@pytest.mark.hostile_heavy
def test_keyless_bodies_over_tls_are_never_buffered(tls_listener, evil: EvilUpstream) -> None:
    pid = tls_listener.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    refused: list[bytes] = []

    def send() -> None:
        try:
            with tls_socket(tls_listener.port) as sock:
                sock.sendall(head("/api/chat", 200 * MB))
                for _ in range(200):
                    sock.sendall(b" " * MB)
        except (OSError, ssl.SSLError):
            pass
        finally:
            refused.append(b"")

    clients = [threading.Thread(target=send) for _ in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert len(refused) == 3
    assert peak_rss_mb(pid) - before < 64
    assert evil.answered() == []


def test_a_keyless_http2_stream_with_a_body_is_reset(tls_listener, evil: EvilUpstream) -> None:
    """HTTP/2 (TLS only): no HTTP/1 answer can be written before the body, so the stream is reset, unread."""
    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", tls_listener.port), timeout=10), server_hostname="localhost"
    ) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":path", "/api/chat"),
                (":authority", "localhost"),
                (":scheme", "https"),
                ("content-type", "application/json"),
                ("content-length", str(100 * MB)),
            ],
        )
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset | h2.events.ResponseReceived) and event.stream_id == 1:
                    ended = True
            sock.sendall(conn.data_to_send())
        assert ended, "the stream was neither answered nor reset"
    assert evil.answered() == []
