"""Several upstreams end to end (issue 15): a real mitmdump in front of four loopback upstreams — the
default server and `harness.upstream.TRIO` (alpha, beta, gamma) — each with its own key and model
list, `shared-model` served by alpha and beta.

Routing by catalog, by list, by pattern and by default; merged discovery; no key reaching another
server (each upstream's request log); a server killed in the middle of a run (its twin takes over
with at most one failed request, the others' models unaffected) and revived (back after a probe);
a hanging server that does not slow discovery; all of a model's servers down (a clear 503 at
once); configuration errors that name the server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import TRIO, FakeOpenAI, UpstreamServer, recording, servers_catalog, several

pytestmark = pytest.mark.e2e

PINS = """
[models."llama3.2"]
server = "alpha"
upstream = "meta-llama/Llama-3.2-3B-Instruct"

[models."pinned-beta"]
server = "beta"
upstream = "shared-model"
"""
HELLO = [{"role": "user", "content": "hello"}]
KEYS = {"default": TEST_KEY, **{spec.name: spec.key for spec in TRIO}}


class Fleet:
    """The four upstreams and the proxy in front of them."""

    def __init__(self, servers: dict[str, UpstreamServer], proxy: Mitmdump) -> None:
        self.servers = servers
        self.proxy = proxy

    def chat(self, model: str, **extra: object) -> httpx.Response:
        body = {"model": model, "messages": HELLO, "stream": False, **extra}
        return httpx.post(self.proxy.url + "/api/chat", json=body, timeout=20, trust_env=False)

    def served(self, name: str, path: str = "/v1/chat/completions") -> list[str]:
        """The models one upstream was asked for on a route, in order."""
        return [str(r.body.get("model")) for r in self.servers[name].fake.requests if r.path == path]


@contextmanager
def fleet(
    tmp_path: Path,
    extra: str = PINS,
    *settings: str,
    gate_gamma: threading.Event | None = None,
    tables: dict[str, str] | None = None,
) -> Iterator[Fleet]:
    with ExitStack() as stack:
        trio = stack.enter_context(several())
        if gate_gamma is not None:
            trio["gamma"].fake.models_gate = gate_gamma
        default = stack.enter_context(UpstreamServer(FakeOpenAI(key=TEST_KEY, name="default")))
        default.fake.models = [
            {"id": m, "object": "model", "created": 1690000000} for m in ("gpt-4o-mini", "default-only")
        ]
        text, environment = servers_catalog(trio, extra=extra, settings=tables)
        catalog = tmp_path / "models.toml"
        catalog.write_text(text)
        proxy = Mitmdump(
            tmp_path,
            "reverse",
            f"openai_base_url={default.base_url}",
            f"openai_api_key={TEST_KEY}",
            f"model_catalog={catalog}",
            "flow_detail=1",  # every request logs its line: the tests read which server each went to
            *settings,
            environment=environment,
        )
        stack.callback(proxy.stop)
        if gate_gamma is None:  # every server's first list is in (what routing by list reads)
            httpx.get(proxy.url + "/api/tags", timeout=20, trust_env=False).raise_for_status()
        yield Fleet({"default": default, **trio}, proxy)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fleet for the tests that change nothing."""
    with fleet(tmp_path_factory.mktemp("upstreams")) as running:
        yield running


# ---------------------------------------------------------------------------------------------
# Routing


def test_routing_by_catalog_list_pattern_and_default(shared: Fleet) -> None:
    cases = [  # client name → (server, upstream id, rule)
        ("llama3.2", "alpha", "meta-llama/Llama-3.2-3B-Instruct"),  # catalog pin
        ("pinned-beta", "beta", "shared-model"),  # catalog pin beats alpha's list (alpha is first)
        ("beta-only", "beta", "beta-only"),  # listed
        ("gamma-only:latest", "gamma", "gamma-only"),  # listed, by its name:tag form
        ("gamma/unlisted", "gamma", "gamma/unlisted"),  # gamma's pattern
        ("shared-model", "alpha", "shared-model"),  # listed twice: the first of the healthy, least busy
        ("default-only", "default", "default-only"),  # the default server's list
        ("nobody-lists-this", "default", "nobody-lists-this"),  # no rule: the default server
    ]
    for model, server, upstream_id in cases:
        answer = shared.chat(model)
        assert answer.status_code == 200, (model, answer.text)
        assert answer.json()["model"] == model and answer.json()["message"]["content"] == "echo: hello"
        assert shared.served(server)[-1] == upstream_id, f"{model} goes to {server}"
    log = shared.proxy.log()
    assert "POST /api/chat llama3.2 → alpha /v1/chat/completions meta-llama/Llama-3.2-3B-Instruct · 200" in log
    assert "POST /api/chat gamma/unlisted → gamma /v1/chat/completions gamma/unlisted · 200" in log
    assert "POST /api/chat nobody-lists-this → default /v1/chat/completions nobody-lists-this · 200" in log


def test_every_route_follows_the_routing(shared: Fleet) -> None:
    url = shared.proxy.url
    client = ollama.Client(host=url, timeout=20)
    assert client.generate(model="beta-only", prompt="hi").response == "echo: hi"
    assert shared.served("beta")[-1] == "beta-only"
    assert len(client.embed(model="gamma/embedder", input=["a", "b"]).embeddings) == 2
    assert shared.served("gamma", "/v1/embeddings")[-1] == "gamma/embedder"
    assert len(client.embeddings(model="llama3.2", prompt="a").embedding) == 4
    assert shared.served("alpha", "/v1/embeddings")[-1] == "meta-llama/Llama-3.2-3B-Instruct"
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="ollama", max_retries=0, timeout=20)
    assert sdk.chat.completions.create(model="gamma-only", messages=HELLO).model == "gamma-only"
    assert shared.served("gamma")[-1] == "gamma-only"
    streamed = sdk.chat.completions.create(model="pinned-beta", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "echo: hello"
    assert shared.served("beta")[-1] == "shared-model"
    assert sdk.completions.create(model="alpha-only", prompt="x").model == "alpha-only"
    assert shared.served("alpha", "/v1/completions")[-1] == "alpha-only"
    assert sdk.embeddings.create(model="beta-only", input="x").model
    assert shared.served("beta", "/v1/embeddings")[-1] == "beta-only"


def test_merged_discovery(shared: Fleet) -> None:
    client = ollama.Client(host=shared.proxy.url, timeout=20)
    names = [m.model for m in client.list().models]
    assert names == [
        "llama3.2:latest",  # the catalog first
        "pinned-beta:latest",
        "default-only:latest",  # then each server's list, in configuration order (newest first within one)
        "gpt-4o-mini:latest",
        "alpha-only:latest",
        "meta-llama/Llama-3.2-3B-Instruct:latest",
        "shared-model:latest",  # alpha's (and beta's: listed once)
        "beta-only:latest",
        "gamma-only:latest",
    ]
    sdk = openai.OpenAI(base_url=shared.proxy.url + "/v1", api_key="ollama", max_retries=0, timeout=20)
    assert [m.id for m in sdk.models.list().data] == names
    assert sdk.models.retrieve("gamma-only").id == "gamma-only"
    assert "FROM beta-only" in client.show("beta-only").modelfile
    assert client.pull("gamma-only").status == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("nobody-serves-this")
    assert missing.value.status_code == 404
    ps = httpx.get(shared.proxy.url + "/api/ps", timeout=20, trust_env=False).json()
    assert [m["name"] for m in ps["models"]] == names
    assert [(s["name"], s["status"]) for s in ps["servers"]] == [
        ("default", "up"),
        ("alpha", "up"),
        ("beta", "up"),
        ("gamma", "up"),
    ]
    root = httpx.get(shared.proxy.url + "/", timeout=20, trust_env=False)
    assert root.text == "Ollama is running"


def test_no_key_ever_reaches_another_server(shared: Fleet) -> None:
    for model in ("llama3.2", "beta-only", "gamma/x", "default-only"):
        assert shared.chat(model).status_code == 200
    for name, server in shared.servers.items():
        sent = set(server.fake.authorizations())
        assert sent == {f"Bearer {KEYS[name]}"}, f"{name} received only its own key (model lists included)"
    log = shared.proxy.log()
    assert not any(key in log for key in KEYS.values()), "no key in the log"


# ---------------------------------------------------------------------------------------------
# Health and failover


def streamed_chat(url: str, model: str) -> bool:
    """One streamed /api/chat: whether it ended well (its last line `done`, no error line)."""
    body = {"model": model, "messages": HELLO, "stream": True}
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=20, trust_env=False) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    return response.status_code == 200 and bool(lines) and lines[-1].get("done") is True and "error" not in lines[-1]


def test_a_server_killed_mid_run_its_twin_takes_over_and_it_comes_back(tmp_path: Path) -> None:
    with fleet(tmp_path) as running:
        alpha = running.servers["alpha"]
        for server in running.servers.values():
            server.fake.event_delay = 0.03  # each streamed answer takes a while: the kill lands mid-stream
        results: list[bool] = []

        def run() -> None:
            for _ in range(40):
                results.append(streamed_chat(running.proxy.url, "shared-model"))

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while len(results) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_after = len(results)
        alpha.kill()  # in the middle of the run (most likely in the middle of a stream)
        others = [running.chat(m).status_code for m in ("beta-only", "gamma-only", "default-only") for _ in range(5)]
        worker.join(60)
        assert not worker.is_alive() and len(results) == 40
        failures = [i for i, ok in enumerate(results) if not ok]
        assert killed_after >= 3 and len(failures) <= 1, f"at most one failed request, got {results}"
        assert others == [200] * 15, "the other servers' models are unaffected"
        assert running.served("alpha").count("shared-model") >= killed_after
        assert running.served("beta").count("shared-model") >= 40 - killed_after - 1, "the twin took over"
        # A model only the dead server has: refused at once, with Retry-After.
        began = time.monotonic()
        refused = running.chat("alpha-only")
        assert time.monotonic() - began < 1 and refused.status_code == 503
        assert refused.json()["error"].startswith("model 'alpha-only': the only server for it, alpha, is down")
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        sdk = httpx.post(
            running.proxy.url + "/v1/chat/completions",
            json={"model": "llama3.2", "messages": HELLO},
            timeout=20,
            trust_env=False,
        )
        assert sdk.status_code == 503 and "its catalog entry's server, alpha, is down" in sdk.json()["error"]["message"]
        ps = httpx.get(running.proxy.url + "/api/ps", timeout=20, trust_env=False).json()
        assert "alpha-only:latest" not in [m["name"] for m in ps["models"]]
        assert [s["status"] for s in ps["servers"] if s["name"] == "alpha"] == ["down"]
        # Revived: back after its next probe (1, 2, 5, then every 10 s).
        alpha.revive()
        deadline = time.monotonic() + 20
        while running.chat("alpha-only").status_code != 200:
            assert time.monotonic() < deadline, "alpha is back after a probe"
            time.sleep(0.5)
        assert running.chat("shared-model").status_code == 200 and running.served("alpha")[-1] == "shared-model"
        log = running.proxy.log()
        assert "server alpha is down: " in log and "server alpha is up again" in log
        assert (
            "servers: default up · alpha down for " in log
            and "servers: default up · alpha up · beta up · gamma up" in log
        )


def test_all_of_a_models_servers_down_is_a_clear_503_at_once(tmp_path: Path) -> None:
    with fleet(tmp_path) as running:
        running.servers["alpha"].kill()
        running.servers["beta"].kill()
        first = running.chat("shared-model")  # the outage is not seen yet: this one may fail (502) or be refused
        assert first.status_code in (502, 503)
        if first.status_code == 502:  # it found alpha dead; beta is not known to be down yet
            second = running.chat("shared-model")
            assert second.status_code in (502, 503)
        began = time.monotonic()
        refused = running.chat("shared-model", stream=True)
        assert time.monotonic() - began < 1
        assert refused.status_code == 503 and refused.headers["retry-after"]
        message = refused.json()["error"]
        assert message.startswith("model 'shared-model': every server that serves it is down: alpha (")
        assert "; beta (" in message and message.endswith("the proxy retries them in the background")
        assert running.chat("gamma-only").status_code == 200 and running.chat("default-only").status_code == 200
        assert httpx.head(running.proxy.url + "/", timeout=20, trust_env=False).status_code == 200


def test_upstream_timeout_per_server(tmp_path: Path) -> None:
    with fleet(tmp_path, PINS, tables={"gamma": "upstream_timeout = 1"}) as running:
        running.servers["gamma"].fake.queue(200, "{}", {"content-type": "application/json"}, hang=30)
        began = time.monotonic()
        timed_out = running.chat("gamma-only")
        assert timed_out.status_code == 504 and time.monotonic() - began < 4
        assert timed_out.json()["error"] == "the upstream sent nothing for 1 s (upstream_timeout)"
        deadline = time.monotonic() + 5
        while running.servers["gamma"].fake.aborted != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.servers["gamma"].fake.aborted == 1, "the upstream request was stopped"
        running.servers["beta"].fake.queue(200, recording("chat/plain-text")["response"]["body"], hang=2)
        began = time.monotonic()
        slow = running.chat("beta-only")
        assert time.monotonic() - began >= 2 and slow.status_code == 200, "beta keeps the option's 300 s"
        assert "server gamma is down" not in running.proxy.log(), "one answer that outlasts its timeout: suspect only"


def test_a_hanging_server_does_not_slow_discovery(tmp_path: Path) -> None:
    gate = threading.Event()  # gamma's GET /models hangs until set
    try:
        with fleet(tmp_path, PINS, gate_gamma=gate) as running:
            url = running.proxy.url
            began = time.monotonic()
            first = httpx.get(url + "/api/tags", timeout=20, trust_env=False)
            assert time.monotonic() - began < 3, "the first listing waits at most 2 s for a server's first list"
            names = [m["name"] for m in first.json()["models"]]
            assert "beta-only:latest" in names and "gamma-only:latest" not in names
            for _ in range(3):
                began = time.monotonic()
                again = httpx.get(url + "/v1/models", timeout=20, trust_env=False)
                assert time.monotonic() - began < 0.5 and again.status_code == 200
                began = time.monotonic()
                assert running.chat("beta-only").status_code == 200 and time.monotonic() - began < 0.5
            log = running.proxy.log()
            assert "server gamma is down" not in log, "a slow list is no outage before its fetch_timeout (10 s)"
    finally:
        gate.set()


# ---------------------------------------------------------------------------------------------
# Configuration errors at start


@pytest.mark.parametrize(
    ("table", "environment", "expected"),
    [
        ('base_url = "http://127.0.0.1:9/v1"\nbase_ulr = "x"\n', {}, "[servers.vllm]: unknown key 'base_ulr'"),
        (
            'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "NOT_SET_FOR_THIS_TEST"\n',
            {},
            "[servers.vllm]: api_key_env names the environment variable NOT_SET_FOR_THIS_TEST, which is not set",
        ),
        (
            'base_url = "http://127.0.0.1:9/v1"\napi_key = "sk-in-the-file-0123"\n',
            {},
            "[servers.vllm]: api_key is refused: a key never goes in the file",
        ),
    ],
)
def test_configuration_errors_name_the_server(
    tmp_path: Path, table: str, environment: dict[str, str], expected: str
) -> None:
    path = tmp_path / "models.toml"
    path.write_text("[servers.vllm]\n" + table)
    try:
        dump = Mitmdump(tmp_path, "reverse", "openai_base_url=http://127.0.0.1:9/v1", f"model_catalog={path}")
    except (RuntimeError, pytest.fail.Exception) as e:  # it exited before it was listening (with its log)
        log = str(e)
    else:  # it was listening for a moment: mitmdump exits after an error logged during start-up
        assert dump.process.wait(15) != 0
        log = dump.log()
        dump._log.close()  # the logged error is what this test expects: no failure from stop()
        dump.stop()
    assert expected in log
    assert "sk-in-the-file-0123" not in log
