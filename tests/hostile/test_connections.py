"""Issue 21 §5: connections that hold a descriptor without making a request.

The proxy raises its soft limit of open descriptors to the hard one at start (as Go programs, and
so Ollama, do), and closes a client connection that does not finish a request head within
`client_header_timeout` seconds (from its opening, and from the answer to its previous request).
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hostile.evil import EvilUpstream
from hostile.tools import HELLO, closes_after, read_answer, request_bytes

pytestmark = pytest.mark.e2e

HALF_HEAD = b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit in /proc")


def closed_now(sock: socket.socket) -> bool:
    """Whether the peer has closed the connection (select() cannot take descriptors above 1,024)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@contextlib.contextmanager
def soft_limit(value: int) -> Iterator[None]:
    """The soft descriptor limit processes started inside inherit (this process's is back after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(value, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_open_files_limit_is_raised_at_start(start) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        pytest.skip("the hard limit is 1,024: nothing to raise")
    with soft_limit(1024):
        dump = start()
    assert httpx.get(dump.url + "/api/version", timeout=10).status_code == 200  # (started)
    soft_now, hard_now = open_files_limit(dump.process.pid)
    assert (soft_now, hard_now) == (hard, hard)


@pytest.mark.hostile_heavy
def test_many_half_sent_requests_do_not_block_other_clients(start) -> None:
    """1,100 connections that never finish their head, from one process, at a soft limit of 1,024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip("the hard limit is too low for 1,100 connections")
    with soft_limit(1024):
        dump = start("client_header_timeout=5")
    stalled: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", dump.port), timeout=10)
            sock.sendall(HALF_HEAD)
            stalled.append(sock)
        answer = httpx.get(dump.url + "/api/version", timeout=10)
        assert answer.status_code == 200
        # and client_header_timeout ends them all (the proxy closes each one)
        deadline = time.monotonic() + 60
        open_ones = list(stalled)
        while open_ones and time.monotonic() < deadline:
            open_ones = [sock for sock in open_ones if not closed_now(sock)]
            time.sleep(0.5)
        assert not open_ones, f"{len(open_ones)} of 1,100 stalled connections are still open"
    finally:
        for sock in stalled:
            sock.close()


def test_connections_without_a_complete_head_are_closed(start, evil: EvilUpstream) -> None:
    dump = start("client_header_timeout=2")
    with (
        socket.create_connection(("127.0.0.1", dump.port), timeout=10) as silent,
        socket.create_connection(("127.0.0.1", dump.port), timeout=10) as half,
        socket.create_connection(("127.0.0.1", dump.port), timeout=10) as kept_alive,
    ):
        half.sendall(HALF_HEAD)
        kept_alive.sendall(request_bytes("GET", "/api/version"))
        answer, _ = read_answer(kept_alive, 10)
        assert answer.status == 200
        for name, sock in (("silent", silent), ("half-sent head", half), ("idle kept-alive", kept_alive)):
            assert closes_after(sock, 15), f"the {name} connection was not closed"


def test_a_request_in_flight_is_not_timed_out(start, evil: EvilUpstream) -> None:
    """The timeout is for the head: a request whose answer takes longer is answered, then the connection idles."""
    dump = start("client_header_timeout=1")
    body = json.dumps({"model": "evil:hang", "messages": HELLO, "stream": False})
    with socket.create_connection(("127.0.0.1", dump.port), timeout=10) as sock:
        sock.sendall(request_bytes("POST", "/api/chat", body.encode()))
        assert not closes_after(sock, 3), "a connection with a request in flight was closed"
        evil.release.set()
        answer, _ = read_answer(sock, 10)
        assert answer.status == 200, answer
        assert closes_after(sock, 15)
    assert httpx.get(dump.url + "/api/version", timeout=10).status_code == 200
