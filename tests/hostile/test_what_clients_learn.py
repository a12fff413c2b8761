"""Issue 21 §6: clients learn server names only, never an upstream's address, port or base URL.

Whatever happens to an upstream (refused, unknown host, unreachable, down for the health check),
the 502/503 texts on every family's routes and `/api/ps` name the server and a fixed reason; the
operator's log keeps mitmproxy's own text with the address.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from harness.mitmdump import free_port
from hostile.evil import EvilUpstream
from hostile.tools import HELLO

pytestmark = pytest.mark.e2e

ADDRESSES = re.compile(r"127\.0\.0\.1|no-such-host|\binvalid\b|:\d{2,5}\b|https?://")


def shows_no_address(text: str) -> None:
    found = ADDRESSES.search(text)
    assert found is None, f"an address reached the client: {text[:400]!r}"


def requests(url: str) -> list[tuple[str, httpx.Response]]:
    done = []
    for path, body in [
        ("/api/chat", {"model": "m", "messages": HELLO, "stream": False}),
        ("/api/chat", {"model": "m", "messages": HELLO}),
        ("/api/generate", {"model": "m", "prompt": "hi", "stream": False}),
        ("/api/embed", {"model": "m", "input": "hi"}),
        ("/v1/chat/completions", {"model": "m", "messages": HELLO}),
        ("/v1/chat/completions", {"model": "m", "messages": HELLO, "stream": True}),
        ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": HELLO}),
        ("/v1/responses", {"model": "m", "input": "hi"}),
    ]:
        done.append((path, httpx.post(url + path, json=body, timeout=30)))
    return done


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:{closed}/v1", "http://no-such-host.invalid:8000/v1"])
def test_an_unreachable_upstream_is_not_named_to_clients(start, base_url: str) -> None:
    dump = start(base_url=base_url.format(closed=free_port()))
    for _ in range(2):  # the first failure, then what the health of the server says
        for path, answer in requests(dump.url):
            assert answer.status_code in (502, 503), (path, answer.text[:300])
            shows_no_address(answer.text)
    shows_no_address(httpx.get(dump.url + "/api/ps", timeout=10).text)
    assert "connect" in dump.log() or "Name or service" in dump.log() or "unknown" in dump.log()


def test_several_servers_are_named_by_name_only(start, evil: EvilUpstream, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        f'[servers.gpu1]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\n'
        '[servers.gpu2]\nbase_url = "http://no-such-host.invalid:8000/v1"\n'
        '[models."a"]\nserver = "gpu1"\n[models."b"]\nserver = "gpu2"\n'
    )
    dump = start(f"model_catalog={catalog}", base_url=f"http://127.0.0.1:{free_port()}/v1")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answers = [
            httpx.post(dump.url + "/api/chat", json={"model": name, "messages": HELLO, "stream": False}, timeout=30)
            for name in ("a", "b", "m")
        ]
        seen += answers
        if all(a.status_code == 503 for a in answers):
            break
        time.sleep(0.2)
    assert any(a.status_code == 503 for a in seen), "no server was ever reported down"
    for answer in seen:
        shows_no_address(answer.text)
    ps = httpx.get(dump.url + "/api/ps", timeout=10)
    names = {server["name"] for server in ps.json()["servers"]}
    assert names == {"default", "gpu1", "gpu2"}
    shows_no_address(ps.text)
    assert any("gpu1" in a.text for a in seen)  # the name is what the client learns
