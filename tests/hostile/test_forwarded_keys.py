"""§3 With forward_client_key, one client's key must never change another client's answers.

A client may send any bearer token; with `forward_client_key` it goes upstream as that client's
key. It is that client's secret only: it may be hidden in what the proxy writes about that
client's own flow (log line, flow views, saved flows), never in other clients' answers, and
never in an answer that does not contain it as a secret (the client knows its own key).
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from hostile.evil import EvilUpstream
from hostile.tools import HELLO

pytestmark = pytest.mark.e2e


def answers(url: str, key: str) -> dict[str, object]:
    """What one client gets on each route, reduced to what must not change."""
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    got: dict[str, object] = {}
    v1 = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
    got["v1"] = (v1.status_code, v1.json())
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "m", "messages": HELLO, "stream": True}
    ) as response:
        got["v1 stream"] = (response.status_code, b"".join(response.iter_bytes()))
    chat = client.post("/api/chat", json={"model": "m", "messages": HELLO, "stream": False})
    got["chat"] = (chat.status_code, chat.json().get("message"), chat.json().get("done"))
    with client.stream("POST", "/api/chat", json={"model": "m", "messages": HELLO}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    got["chat stream"] = (
        response.status_code,
        "".join(line.get("message", {}).get("content", "") for line in lines),
        lines[-1].get("done"),
    )
    embed = client.post("/api/embed", json={"model": "m", "input": ["a", "b"]})
    got["embed"] = (embed.status_code, embed.json().get("embeddings"))
    return got


@pytest.mark.parametrize("word", ["choices", "content", "assistant"])
def test_a_common_word_as_key_changes_no_other_answer(start, evil: EvilUpstream, word: str) -> None:
    dump = start("forward_client_key=true", key=None)
    baseline = answers(dump.url, "sk-user-b-0123456789")
    assert baseline["v1"][0] == 200 and baseline["chat"][1]["content"] == "fine"
    # Client A's request, with `Bearer <word>`, waits upstream while client B is served.
    held: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: held.append(
            httpx.post(
                dump.url + "/api/chat",
                json={"model": "evil:hang", "messages": HELLO, "stream": False},
                headers={"Authorization": f"Bearer {word}"},
                timeout=30,
            )
        )
    )
    waiting.start()
    deadline = time.monotonic() + 10
    while (
        not any(r.body and r.body.get("model") == "evil:hang" for r in evil.answered()) and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    during = answers(dump.url, "sk-user-b-0123456789")
    evil.release.set()
    waiting.join(30)
    for route, expected in baseline.items():
        assert during[route] == expected, (
            f"{route}: client A's key {word!r} changed client B's answer: {during[route]!r}"
        )
    # A's own answer is A's: not scrubbed of its own key either.
    assert held and held[0].status_code == 200 and held[0].json()["message"]["content"] == "late", held[0].text
    assert [
        r.headers.get("authorization") for r in evil.answered() if r.body and r.body.get("model") == "evil:hang"
    ] == [f"Bearer {word}"]
    # And B's log lines are B's: no "[redacted]" where A's key is a common word.
    log = dump.log()
    assert "[redacted]" not in log.replace("Bearer [redacted]", ""), log[-2000:]
