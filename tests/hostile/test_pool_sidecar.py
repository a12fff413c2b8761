"""Issue 21 §9: the pool sidecar (HAProxy, `upstream_pool`) serves the proxy and nobody else.

Its loopback port is open to every local process (mitmproxy connects over TCP only): a request
without the sidecar's token gets 403 and never reaches the upstream (nobody relays through it or
borrows the proxy's client certificate); a connection that sends no complete request head is
closed; and a request the upstream read but never answered is not sent a second time.
"""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest

from harness.mitmdump import LOCAL_MODEL_POOL
from hostile.evil import EvilUpstream
from hostile.tools import HELLO, UPSTREAM_KEY, read_answer, request_bytes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not LOCAL_MODEL_POOL, reason="HAProxy is not installed (CI installs it)"),
]


def pool_port(dump) -> int:
    deadline = time.monotonic() + 20
    while not (found := re.search(r"served through HAProxy on 127\.0\.0\.1:(\d+)", dump.log())):
        assert time.monotonic() < deadline, dump.log()
        time.sleep(0.05)
    return int(found.group(1))


def chat(dump, model: str) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "stream": False}
    return httpx.post(dump.url + "/api/chat", json=body, timeout=20, trust_env=False)


def test_no_other_local_process_can_use_the_pool(start, evil: EvilUpstream) -> None:
    dump = start("upstream_pool=all")
    port = pool_port(dump)
    assert chat(dump, "plain").status_code == 200  # the proxy itself goes through it
    before = len(evil.answered())
    host = evil.base_url.split("/")[2]
    body = {"model": "plain", "messages": HELLO}
    for headers in ({}, {"Authorization": f"Bearer {UPSTREAM_KEY}", "x-ollama-pool": "a guess"}):
        with socket.create_connection(("127.0.0.1", port), timeout=8) as sock:
            sock.sendall(request_bytes("POST", "/v1/chat/completions", body, headers=headers, host=host))
            answer, _ = read_answer(sock, 8)
        assert answer.status == 403, answer
    assert len(evil.answered()) == before, "nothing reached the upstream"


def test_a_request_the_upstream_read_is_not_sent_twice(start, evil: EvilUpstream) -> None:
    dump = start("upstream_pool=all")
    pool_port(dump)
    assert chat(dump, "plain").status_code == 200  # a warm upstream connection, which the next request reuses
    assert chat(dump, "evil:close-silently").status_code == 502
    sent = [r for r in evil.answered() if r.body.get("model") == "evil:close-silently"]
    assert len(sent) == 1, f"the upstream got the POST {len(sent)} times"


@pytest.mark.hostile_heavy
def test_a_connection_without_a_request_head_is_closed(start) -> None:
    """HAProxy's `timeout http-request` (10 s): no local process holds a slot without a request."""
    dump = start("upstream_pool=all")
    port = pool_port(dump)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        received = b""
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
        else:
            pytest.fail("the connection stayed open for 25 s")
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received
