"""The hostile upstream does what it claims (without any proxy): a passing hostile test is not vacuous."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from hostile.evil import BOMB_SIZE, EvilUpstream, Tarpit, expanded_size, gzip_bomb
from hostile.tools import UPSTREAM_KEY, encodings, exchange, leaks, request_bytes, strict_json

AUTH = {"Authorization": f"Bearer {UPSTREAM_KEY}"}


def post(evil: EvilUpstream, act: str, path: str = "/v1/chat/completions", stream: bool = False):
    body = {"model": f"evil:{act}", "stream": stream, "input": "x", "messages": [{"role": "user", "content": "x"}]}
    return exchange(evil.port, request_bytes("POST", path, body, AUTH), timeout=10)


def raw_answer(evil: EvilUpstream, act: str) -> bytes:
    """Every byte the upstream sends for one request (interim answers and trailers included)."""
    with socket.create_connection(("127.0.0.1", evil.port), timeout=5) as sock:
        sock.sendall(request_bytes("POST", "/v1/chat/completions", {"model": f"evil:{act}"}, AUTH))
        data = b""
        sock.settimeout(0.5)
        try:
            while piece := sock.recv(65536):
                data += piece
        except TimeoutError:
            pass
    return data


@pytest.mark.parametrize(
    "act", ["echo-headers", "echo-body", "echo-reason", "echo-trailers", "echo-early-hints", "echo-redirect"]
)
def test_echo_acts_show_the_key(evil: EvilUpstream, act: str) -> None:
    assert leaks(raw_answer(evil, act), UPSTREAM_KEY)
    assert evil.answered()[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_echo_headers_in_every_encoding(evil: EvilUpstream) -> None:
    found = "\n".join(leaks(post(evil, "echo-headers").head, UPSTREAM_KEY))
    for encoding in ("plain", "url-encoded", "base64@"):
        assert f"as {encoding}" in found


@pytest.mark.parametrize("act", ["echo-status-line", "echo-bad-header", "echo-cut-headers"])
def test_malformed_answers_show_the_key(evil: EvilUpstream, act: str) -> None:
    assert UPSTREAM_KEY.encode() in raw_answer(evil, act)


def test_the_gzip_bomb_is_small_and_expands_to_300_mb() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 600_000
    assert expanded_size(bomb, BOMB_SIZE + 1_000_000) > BOMB_SIZE


def test_numbers_are_what_they_say(evil: EvilUpstream) -> None:
    text = post(evil, "emb-nan", "/v1/embeddings").body
    with pytest.raises(ValueError):
        strict_json(text)
    assert json.loads(text)["data"][0]["embedding"][1] != json.loads(text)["data"][0]["embedding"][1]  # NaN
    assert b"1e400" in post(evil, "usage-huge").body
    assert b'"prompt_tokens": [12]' in post(evil, "usage-list").body
    assert post(evil, "empty-object").body == b"{}"


def test_streams(evil: EvilUpstream) -> None:
    with httpx.stream(
        "POST", evil.base_url + "/chat/completions", json={"model": "evil:no-blank-line", "stream": True}
    ) as response:
        head = next(response.iter_raw())
    assert head.startswith(b"data: ") and b"\n\n" not in head


def test_encodings_are_distinct() -> None:
    patterns = encodings(UPSTREAM_KEY)
    assert {"plain", "url-encoded", "base64@0", "base64@1", "base64@2", "hex"} <= set(patterns)
    assert all(len(p) >= 20 for p in patterns.values())


def test_tarpit_counts_and_stays_silent() -> None:
    with Tarpit() as tarpit:
        with socket.create_connection(("127.0.0.1", tarpit.port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with pytest.raises(TimeoutError):
                sock.recv(1)
        assert tarpit.connections == 1 and b"GET /" in tarpit.received
