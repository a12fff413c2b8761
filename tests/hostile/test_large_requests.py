"""Issue 21 §4: the largest request the defaults admit neither stalls the other clients nor costs
unbounded memory.

A body over 1 MB is parsed, validated, translated and serialized in one worker thread
(`addon/offload.py`); the event loop answers other clients meanwhile. Checked without a clock:
while the proxy works on the worst shape the default `request_body_limit` (16 MB) admits —
half a million tiny messages, seconds of CPU — another client's requests keep being answered
(counted between the moment the large body was sent and its answer); the peak RSS it costs is
read from /proc.
"""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from hostile.evil import MB, EvilUpstream
from hostile.tools import peak_rss_mb, read_answer, request_bytes, reset_peak

pytestmark = [pytest.mark.e2e, pytest.mark.hostile_heavy]


def tiny_messages(size: int) -> bytes:
    message = {"role": "user", "content": "hi"}
    count = size // len(json.dumps(message))
    return json.dumps({"model": "m", "stream": False, "messages": [message] * count}).encode()


def test_the_worst_shape_under_the_default_limit_does_not_stall_other_clients(start, evil: EvilUpstream) -> None:
    dump = start()
    body = tiny_messages(15 * MB)
    assert len(body) < 16 * MB
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    sent = threading.Event()
    answered: list[int] = []
    served_meanwhile: list[int] = []

    def large() -> None:
        with socket.create_connection(("127.0.0.1", dump.port), timeout=120) as sock:
            sock.sendall(request_bytes("POST", "/api/chat", body))
            sent.set()
            answer, _ = read_answer(sock, 120)
            answered.append(answer.status)

    worker = threading.Thread(target=large)
    worker.start()
    sent.wait(60)
    with httpx.Client(base_url=dump.url, timeout=60) as client:
        while worker.is_alive():
            if client.get("/api/version").status_code == 200 and worker.is_alive():
                served_meanwhile.append(1)
    worker.join()
    assert answered == [200]
    # (measured: about 200 with the worker, 4 to 6 without it: those at the edges of the work)
    assert len(served_meanwhile) >= 50, f"only {len(served_meanwhile)} other requests were answered meanwhile"
    growth = peak_rss_mb(pid) - before
    assert growth < 1024, f"peak RSS grew by {growth:.0f} MB for one 16 MB request"


def test_a_request_over_the_default_limit_is_refused(shared, evil: EvilUpstream) -> None:
    answer = httpx.post(shared.url + "/api/chat", content=tiny_messages(17 * MB), timeout=60)
    assert answer.status_code == 413
    assert "16.0m" in answer.json()["error"]
