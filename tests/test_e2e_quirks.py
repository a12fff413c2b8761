"""Issue 20 end to end: quirks of the corpus (tests/fixtures/quirks) answered by the fake upstream
through a real mitmdump with the addon, on every family's route, streamed and whole; the bytes
the client gets are read by the family's real SDK (as in tests/test_quirks.py) and must give the
expected answer. A representative subset: the ones whose handling changed with the one pipeline."""

from __future__ import annotations

import httpx
import pytest

from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer, sse_events
from tests.test_quirks import QUIRKS, expected_for, read, sse_body

pytestmark = pytest.mark.e2e

SUBSET = [
    "arguments-object",
    "fragments-without-index",
    "parallel-interleaved",
    "nan-in-arguments",
    "reasoning-both-fields",
    "no-done",
    "crlf-line-ends",
]
ROUTES = {"chat": "/api/chat", "messages": "/v1/messages", "responses": "/v1/responses"}


def request(family: str, stream: bool) -> dict:
    hi = [{"role": "user", "content": "hi"}]
    if family == "chat":
        return {"model": "m", "messages": hi, "stream": stream}
    if family == "messages":
        return {"model": "m", "max_tokens": 100, "messages": hi, "stream": stream}
    return {"model": "m", "input": "hi", "stream": stream}


@pytest.mark.parametrize("name", SUBSET)
@pytest.mark.parametrize("family", list(ROUTES))
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_quirk_through_mitmdump(
    proxy: Mitmdump, upstream: UpstreamServer, name: str, family: str, stream: bool
) -> None:
    if stream:
        body = sse_body(name)
        pieces = (
            sse_events(body.decode()) if b"\r\n" not in body else [body[i : i + 40] for i in range(0, len(body), 40)]
        )
        upstream.fake.queue(200, pieces, {"content-type": "text/event-stream"})
    else:
        upstream.fake.queue(200, (QUIRKS / f"{name}.json").read_bytes(), {"content-type": "application/json"})
    answer = httpx.post(proxy.url + ROUTES[family], json=request(family, stream), timeout=20)
    assert answer.status_code == 200, answer.text
    assert read(family, answer.content, stream) == expected_for(name, family)
