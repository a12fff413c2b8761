"""Issue 21 §6: an answer whose body the proxy rewrote (a scrubbed echoed key, a decoded
Content-Encoding, a converted answer) says its own length: its framing headers (Content-Length,
Content-Encoding, Transfer-Encoding) describe the bytes the client gets, on every route, in every
encoding the upstream may choose. A wrong Content-Length makes the client wait for bytes that never
come (too long) or read the rest as the next answer (too short)."""

from __future__ import annotations

import json
import socket

import pytest

from hostile.evil import EvilUpstream
from hostile.test_echoed_secrets import ROUTES, body_for
from hostile.tools import UPSTREAM_KEY, leaks, read_answer, request_bytes

pytestmark = pytest.mark.e2e

ACTS = ["echo-body", "echo-body-gzip", "echo-body-br", "echo-body-zstd", "echo-body-deflate", "echo-body-chunked"]


def two_requests(port: int, path: str, act: str, stream: bool) -> tuple[object, bytes, object | None]:
    """The act's answer, what followed it on the connection, and then a plain request's answer on the same one."""
    with socket.create_connection(("127.0.0.1", port), timeout=8) as sock:
        sock.sendall(request_bytes("POST", path, body_for(path, f"evil:{act}", stream)))
        answer, rest = read_answer(sock, 8)
        if (answer.header("connection") or "").lower() == "close":
            return answer, rest, None
        sock.sendall(request_bytes("POST", path, body_for(path, "plain", stream)))
        second, _ = read_answer(sock, 8, rest)
        return answer, rest, second


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize(("path", "stream"), ROUTES)
def test_a_rewritten_body_is_framed_as_it_is(shared, evil: EvilUpstream, act: str, path: str, stream: bool) -> None:
    answer, rest, second = two_requests(shared.port, path, act, stream)
    assert answer.status == 200, answer
    assert not leaks(answer.raw, UPSTREAM_KEY)
    assert answer.header("content-encoding") in (None, "identity"), "the proxy sends what it decoded, decoded"
    if (length := answer.header("content-length")) is not None:
        assert answer.header("transfer-encoding") is None
        assert int(length) == len(answer.body)
    assert rest == b"", "nothing after the answer's last byte"
    if not stream:
        json.loads(answer.body)  # the whole answer, readable
    if second is not None:
        assert second.status == 200 and not leaks(second.raw, UPSTREAM_KEY), second
