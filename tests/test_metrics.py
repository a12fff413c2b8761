"""The Prometheus metrics (addon/metrics.py, addon/accounting.py, addon/status_listener.py): names,
labels and counts, parsed back by prometheus_client's own parser; then through a real mitmdump with
named keys, streams and failures, scraped on metrics_listen."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from addon.metrics import MAX_LEARNED_MODELS, Metrics, ModelLabels, route_label
from addon.status_listener import parse_listen
from harness import TEST_KEY
from harness.mitmdump import free_port, wait_for_port
from harness.upstream import UpstreamServer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def record(route: str, model: str | None = None, server: str | None = "default", key: str | None = None, usage=None):
    out: dict = {"method": "POST", "route": route}
    if model is not None:
        out["model"] = model
    if server is not None:
        out.update(server=server, upstream_route="chat/completions")
    if key is not None:
        out["key"] = key
    if usage is not None:
        out["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return out


def test_names_labels_and_counts_after_a_known_sequence() -> None:
    states = [("default", "up", 2), ("vllm", "down", 0)]
    metrics = Metrics(lambda: states, lambda: 3)
    metrics.stream_started("/api/chat", "default")
    metrics.finished(record("/api/chat", "llama3.2", key="alice", usage=(10, 5)), 200, False, 0.2, 0.05)
    metrics.stream_ended("/api/chat", "default")
    metrics.finished(record("/api/chat", "llama3.2:latest", key="alice", usage=(1, 2)), 200, False, 0.1)
    metrics.finished(record("/api/chat", "no-such-model", key="alice"), 404, True, 0.1)
    metrics.finished(record("/api/chat", "llama3.2", server=None, key="bob"), 401, True, 0.001)
    metrics.finished(record("/v1/models/gpt-4o", "gpt-4o", server=None), 200, False, 0.001)
    metrics.finished(record("/api/chat", "llama3.2"), None, True, 3.0)  # no answer at all
    metrics.finished(
        record("/api/chat", "llama3.2", key="alice", usage=(-5, -1)), 200, False, 0.1
    )  # a hostile upstream's
    metrics.stream_started("/v1/chat/completions", "default")  # still running
    found = samples(generate_latest(metrics.registry).decode())

    chat = {"route": "/api/chat", "model": "llama3.2:latest", "server": "default"}
    assert value(found, "ollama_proxy_requests_total", **chat, status="200", key="alice") == 3
    assert value(found, "ollama_proxy_requests_total", **chat, status="error", key="") == 1
    assert value(found, "ollama_proxy_requests_failed_total", **chat, key="") == 1
    assert value(found, "ollama_proxy_requests_failed_total", **chat, key="alice") == 0
    other = {"route": "/api/chat", "model": "other", "server": "default", "key": "alice"}
    assert value(found, "ollama_proxy_requests_total", **other, status="404") == 1  # an unknown name, refused
    assert value(found, "ollama_proxy_requests_failed_total", **other) == 1
    local = {"route": "/api/chat", "model": "llama3.2:latest", "server": "", "status": "401", "key": "bob"}
    assert value(found, "ollama_proxy_requests_total", **local) == 1
    assert (
        value(found, "ollama_proxy_requests_total", route="/v1/models/", model="other", server="", status="200", key="")
        == 1
    )
    tokens = {"model": "llama3.2:latest", "server": "default", "key": "alice"}
    assert value(found, "ollama_proxy_input_tokens_total", **tokens) == 11
    assert value(found, "ollama_proxy_output_tokens_total", **tokens) == 7
    assert value(found, "ollama_proxy_request_duration_seconds_count", route="/api/chat", server="default") == 5
    assert (
        value(found, "ollama_proxy_request_duration_seconds_bucket", route="/api/chat", server="default", le="0.1") == 3
    )
    assert value(found, "ollama_proxy_time_to_first_token_seconds_count", route="/api/chat", server="default") == 1
    assert value(found, "ollama_proxy_time_to_first_token_seconds_sum", route="/api/chat", server="default") == 0.05
    assert value(found, "ollama_proxy_streams_in_progress", route="/api/chat", server="default") == 0
    assert value(found, "ollama_proxy_streams_in_progress", route="/v1/chat/completions", server="default") == 1
    assert value(found, "ollama_proxy_server_up", server="default") == 1
    assert value(found, "ollama_proxy_server_up", server="vllm") == 0
    assert value(found, "ollama_proxy_server_outstanding_requests", server="default") == 2
    assert value(found, "ollama_proxy_client_keys") == 3
    assert any(name == "process_cpu_seconds_total" for name, _ in found)


def test_hostile_label_values_are_escaped_and_parsed_back() -> None:
    metrics = Metrics()
    hostile = 'we"ird\nname\\} x{y="1"} 99'
    metrics.finished(record("/api/chat", hostile, key="k"), 200, False, 0.1)
    text = generate_latest(metrics.registry).decode()
    assert "\nname" not in text.replace("\\n", "")  # the newline is escaped, no sample line is forged
    found = samples(text)
    labels = {"route": "/api/chat", "model": hostile + ":latest", "server": "default", "status": "200", "key": "k"}
    assert value(found, "ollama_proxy_requests_total", **labels) == 1
    assert len([k for k in found if k[0] == "ollama_proxy_requests_total"]) == 1


def test_labels_are_bounded() -> None:
    labels = ModelLabels(limit=3)
    labels.catalog = frozenset({"fast:latest"})
    assert labels.label("fast", False) == "fast:latest"  # the catalog's names, always
    assert labels.label("junk-1", False) == "other"  # never answered: not learned
    assert [labels.label(f"m{i}", True) for i in range(5)] == ["m0:latest", "m1:latest", "m2:latest", "other", "other"]
    assert labels.label("m1", False) == "m1:latest" and labels.label(None, True) == ""
    assert route_label("/api/chat") == "/api/chat" and route_label("/v1/models/x") == "/v1/models/"
    assert route_label("/v1/models/") == "other" and route_label("/etc/passwd") == "other"

    metrics = Metrics()
    for i in range(MAX_LEARNED_MODELS + 50):
        metrics.finished(record(f"/random/{i}", f"model-{i}"), 200, False, 0.01)
    found = samples(generate_latest(metrics.registry).decode())
    series = [k for k in found if k[0] == "ollama_proxy_requests_total"]
    assert len(series) == MAX_LEARNED_MODELS + 1  # the learned names, then "other"
    assert all(dict(labels)["route"] == "other" for _, labels in series)


def test_parse_listen() -> None:
    from mitmproxy.exceptions import OptionsError

    assert parse_listen("") is None and parse_listen("  ") is None
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", ":9464", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "h:p"):
        with pytest.raises(OptionsError, match="metrics_listen must be host:port"):
            parse_listen(bad)


# -- through a real mitmdump ------------------------------------------------------------------------

ALICE = "alice-metrics-key-0123456789"
BOB = "bob-metrics-key-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def metered(spawn, upstream: UpstreamServer, tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[keys.alice]\nkey_env = "ALICE_KEY"\nmodels = ["gpt-4o-mini", "fault:*", "we*"]\n\n'
        '[keys.bob]\nkey_env = "BOB_KEY"\nrequests_per_minute = 1\n'
    )
    port = free_port()
    dump = spawn(
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"model_catalog={catalog}",
        f"metrics_listen=127.0.0.1:{port}",
        environment={"ALICE_KEY": ALICE, "BOB_KEY": BOB},
    )
    wait_for_port(port, dump.process, 10)  # the metrics listener
    dump.metrics_url = f"http://127.0.0.1:{port}"
    return dump


def chat(dump, key: str | None, model: str, stream: bool = False, path: str = "/api/chat") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": HELLO, "stream": stream}
    return httpx.post(dump.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.e2e
def test_metrics_through_a_real_mitmdump(metered, upstream: UpstreamServer) -> None:
    whole = chat(metered, ALICE, "gpt-4o-mini")
    streamed = chat(metered, ALICE, "gpt-4o-mini", stream=True)
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert whole.status_code == 200 and streamed.status_code == 200 and lines[-1]["done"]
    usage_in = whole.json()["prompt_eval_count"] + lines[-1]["prompt_eval_count"]
    usage_out = whole.json()["eval_count"] + lines[-1]["eval_count"]
    assert chat(metered, ALICE, "gpt-5").status_code == 403
    assert chat(metered, ALICE, "gpt-5", path="/v1/chat/completions").status_code == 403
    assert chat(metered, None, "gpt-4o-mini").status_code == 401
    assert chat(metered, "wrong-key-0123456789", "gpt-4o-mini").status_code == 401
    assert chat(metered, BOB, "missing-model").status_code == 404  # the upstream's 404
    limited = chat(metered, BOB, "gpt-4o-mini")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    broken = chat(metered, ALICE, "fault:reset", stream=True)  # the stream breaks off after its head
    assert broken.status_code == 200 and "error" in broken.text.splitlines()[-1]
    hostile = 'we"ird\\name\nx'
    assert chat(metered, ALICE, hostile).status_code == 200  # the fake upstream echoes any model

    scraped = httpx.get(metered.metrics_url + "/metrics", headers={"accept": "text/plain"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = scraped.text
    for secret in (ALICE, BOB, TEST_KEY, "wrong-key-0123456789"):
        assert secret not in text
    found = samples(text)
    chat_ok = {"route": "/api/chat", "model": "gpt-4o-mini:latest", "server": "default", "key": "alice"}
    assert value(found, "ollama_proxy_requests_total", **chat_ok, status="200") == 2
    assert (
        value(found, "ollama_proxy_input_tokens_total", model="gpt-4o-mini:latest", server="default", key="alice")
        == usage_in
    )
    assert (
        value(found, "ollama_proxy_output_tokens_total", model="gpt-4o-mini:latest", server="default", key="alice")
        == usage_out
    )
    refused = {"model": "gpt-5:latest", "server": "", "key": "alice"}
    assert (
        value(found, "ollama_proxy_requests_total", route="/api/chat", **refused, status="403") == 0
    )  # never answered: other
    assert (
        value(
            found, "ollama_proxy_requests_total", route="/api/chat", model="other", server="", status="403", key="alice"
        )
        == 1
    )
    assert (
        value(
            found,
            "ollama_proxy_requests_total",
            route="/v1/chat/completions",
            model="other",
            server="",
            status="403",
            key="alice",
        )
        == 1
    )
    assert (
        value(found, "ollama_proxy_requests_total", route="/api/chat", model="", server="", status="401", key="") == 2
    )  # refused at the head
    assert (
        value(
            found,
            "ollama_proxy_requests_total",
            route="/api/chat",
            model="other",
            server="default",
            status="404",
            key="bob",
        )
        == 1
    )
    assert (
        value(found, "ollama_proxy_requests_total", route="/api/chat", model="", server="", status="429", key="bob")
        == 1
    )
    fault = {"route": "/api/chat", "model": "other", "server": "default", "key": "alice"}
    assert value(found, "ollama_proxy_requests_total", **fault, status="200") == 1
    assert value(found, "ollama_proxy_requests_failed_total", **fault) == 1  # a broken stream is a failure
    assert value(found, "ollama_proxy_requests_total", **{**chat_ok, "model": hostile + ":latest"}, status="200") == 1
    assert value(found, "ollama_proxy_requests_failed_total", **chat_ok) == 0
    failed = sum(v for (name, _), v in found.items() if name == "ollama_proxy_requests_failed_total")
    assert failed == 7  # 2 × 403, 2 × 401, 404, 429, the broken stream
    assert value(found, "ollama_proxy_time_to_first_token_seconds_count", route="/api/chat", server="default") == 2
    assert value(found, "ollama_proxy_request_duration_seconds_count", route="/api/chat", server="default") == 5
    assert value(found, "ollama_proxy_streams_in_progress", route="/api/chat", server="default") == 0
    assert value(found, "ollama_proxy_server_up", server="default") == 1
    assert value(found, "ollama_proxy_client_keys") == 2

    ready = httpx.get(metered.metrics_url + "/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "servers": {"default": "up"}}
    assert httpx.head(metered.metrics_url + "/ready").status_code == 200
    assert httpx.get(metered.metrics_url + "/").status_code == 404
    assert httpx.post(metered.metrics_url + "/metrics").status_code == 405
    on_ollama_port = httpx.get(metered.url + "/metrics", headers={"authorization": f"Bearer {ALICE}"})
    assert on_ollama_port.status_code == 404 and "ollama_proxy" not in on_ollama_port.text  # never on the Ollama port
    openmetrics = httpx.get(metered.metrics_url + "/metrics", headers={"accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert ALICE not in metered.log() and "key alice" in metered.log()  # the 403's warning names the key


@pytest.mark.e2e
def test_a_taken_metrics_port_stops_the_proxy(upstream: UpstreamServer) -> None:
    import subprocess

    from harness.mitmdump import MITMDUMP

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = ["-s", "addon/proxy.py", "--mode", "reverse:http://127.0.0.1:9", "--listen-host", "127.0.0.1"]
        args += [
            "--listen-port",
            "0",
            "--set",
            f"openai_base_url={upstream.base_url}",
            "--set",
            f"metrics_listen=127.0.0.1:{port}",
        ]
        from harness import ROOT

        done = subprocess.run([str(MITMDUMP), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"metrics_listen: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stdout + done.stderr


def test_readiness_follows_the_servers_health(tmp_path) -> None:
    from mitmproxy.test import taddons

    from addon.accounting import Accounting
    from addon.proxy import OllamaProxy

    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[servers.vllm]\nbase_url = "http://127.0.0.1:9/v1"\n')
    proxy = OllamaProxy()
    accounting = Accounting(proxy)
    with taddons.context(proxy, accounting) as tctx:
        assert accounting.readiness()[0] is False  # not running
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:9/v1", model_catalog=str(catalog))
        assert accounting.readiness()[0] is False  # configured, not yet running
        accounting.is_running = True
        assert accounting.readiness() == (True, {"servers": {"default": "up", "vllm": "up"}})
        proxy.health.mark_failed("default", "connection refused")
        assert accounting.readiness() == (True, {"servers": {"default": "down", "vllm": "up"}})
        proxy.health.mark_failed("vllm", "connection refused")
        assert accounting.readiness() == (False, {"servers": {"default": "down", "vllm": "down"}})
        found = samples(generate_latest(accounting.metrics.registry).decode())
        assert value(found, "ollama_proxy_server_up", server="vllm") == 0
        proxy.health.mark_ok("vllm")
        assert accounting.readiness()[0] is True
        assert proxy.on_end == accounting.ended


async def test_the_listener_answers(tmp_path) -> None:
    """/metrics, /ready (200 and 503), HEAD, 404, 405, and a malformed request, over a real socket."""
    import asyncio

    from addon.status_listener import StatusListener

    metrics = Metrics()
    ready = [True]
    listener = StatusListener(
        metrics.registry, lambda: (ready[0], {"servers": {"default": "up" if ready[0] else "down"}})
    )
    port = free_port()
    listener.bind("127.0.0.1", port)
    await listener.start()

    async def ask(raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        data = await reader.read()
        writer.close()
        return data

    try:
        answer = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and b"ollama_proxy_client_keys 0.0" in answer
        assert (await ask(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(
            b'{"ready": true, "servers": {"default": "up"}}\n'
        )
        ready[0] = False
        assert (await ask(b"GET /ready?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 503 ")
        head = await ask(b"HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and head.endswith(b"\r\n\r\n")
        assert (await ask(b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
        assert (await ask(b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await ask(b"\x16\x03\x01 not http\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await ask(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    finally:
        await listener.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def ready_status(metrics_url: str, want: int, seconds: float = 15) -> int:
    """/ready's status once it is `want` (HAProxy polls it likewise), or the last one seen."""
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline:
        status = httpx.get(metrics_url + "/ready", timeout=5).status_code
        if status == want:
            break
        time.sleep(0.2)
    return status


@pytest.mark.e2e
def test_readiness_asks_a_proxys_one_server_itself(spawn) -> None:
    """One server alone keeps no health in the proxy (it is never refused): /ready asks it itself,
    so a host whose only upstream cannot be reached is taken out by its load balancer, and back."""
    upstream_port = free_port()
    port = free_port()
    dump = spawn(
        "reverse",
        f"openai_base_url=http://127.0.0.1:{upstream_port}/v1",
        f"openai_api_key={TEST_KEY}",
        f"metrics_listen=127.0.0.1:{port}",
    )
    metrics_url = f"http://127.0.0.1:{port}"
    wait_for_port(port, dump.process, 10)  # the metrics listener
    assert ready_status(metrics_url, 503) == 503, "its one server cannot be reached: not ready"
    assert httpx.get(metrics_url + "/ready").json() == {"ready": False, "servers": {"default": "down"}}
    with UpstreamServer(port=upstream_port):
        assert ready_status(metrics_url, 200) == 200, "the server answers again: ready"
    assert TEST_KEY not in dump.log()
