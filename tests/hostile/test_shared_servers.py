"""Issue 21 §8: one client cannot mark a shared server down for everyone.

Two loopback upstreams serve `shared-model` (alpha and beta). One client's requests that alpha
answers 500, and ones that outlast alpha's `upstream_timeout`, leave alpha up (`/api/ps`) and
serving the others' requests; only a server that cannot be reached goes down (the check that the
test can fail: alpha killed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import FakeOpenAI, UpstreamServer, servers_catalog, several

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "hello"}]


class Shared:
    def __init__(self, servers: dict[str, UpstreamServer], proxy: Mitmdump) -> None:
        self.servers, self.proxy = servers, proxy

    def chat(self, model: str) -> httpx.Response:
        body = {"model": model, "messages": HELLO, "stream": False}
        return httpx.post(self.proxy.url + "/api/chat", json=body, timeout=20, trust_env=False)

    def status(self, name: str) -> str:
        ps = httpx.get(self.proxy.url + "/api/ps", timeout=20, trust_env=False).json()
        return next(s["status"] for s in ps["servers"] if s["name"] == name)

    def chats_to(self, name: str) -> int:
        return sum(1 for r in self.servers[name].fake.requests if r.path == "/v1/chat/completions")


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Shared]:
    with ExitStack() as stack:
        trio = stack.enter_context(several())
        default = stack.enter_context(UpstreamServer(FakeOpenAI(key=TEST_KEY, name="default")))
        text, environment = servers_catalog(trio, settings={"alpha": "upstream_timeout = 1"})
        catalog = tmp_path / "models.toml"
        catalog.write_text(text)
        proxy = Mitmdump(
            tmp_path,
            "reverse",
            f"openai_base_url={default.base_url}",
            f"openai_api_key={TEST_KEY}",
            f"model_catalog={catalog}",
            environment=environment,
        )
        stack.callback(proxy.stop)
        httpx.get(proxy.url + "/api/tags", timeout=20, trust_env=False).raise_for_status()  # every first list
        yield Shared({"default": default, **trio}, proxy)


def test_one_clients_500s_and_long_generations_leave_a_shared_server_up(shared: Shared) -> None:
    alpha = shared.servers["alpha"].fake
    for _ in range(6):  # two rounds of three in a row: each round asks alpha itself, which answers
        alpha.queue(500, {"error": {"message": "this request made the model fail", "type": "server_error"}})
        assert shared.chat("alpha-only").status_code == 500
        assert shared.status("alpha") == "up"
    for _ in range(3):  # generations that outlast alpha's upstream_timeout (1 s)
        alpha.queue(200, {}, hang=4)
        assert shared.chat("alpha-only").status_code == 504
    assert shared.status("alpha") == "up"
    before = shared.chats_to("alpha")
    answer = shared.chat("shared-model")  # another client: alpha (listed first) still serves it
    assert answer.status_code == 200 and shared.chats_to("alpha") == before + 1
    assert "server alpha is down" not in shared.proxy.log()


def test_a_server_that_cannot_be_reached_goes_down_at_once(shared: Shared) -> None:
    shared.servers["alpha"].kill()
    try:
        assert shared.chat("alpha-only").status_code == 502
        assert shared.status("alpha") == "down"
        before = shared.chats_to("beta")
        assert shared.chat("shared-model").status_code == 200 and shared.chats_to("beta") == before + 1
    finally:
        shared.servers["alpha"].revive()
