"""make run WORKERS=N: N proxy processes behind HAProxy answer as one Ollama endpoint."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import ollama
import pytest

from harness import ROOT, script_module
from harness.mitmdump import free_block
from harness.upstream import UpstreamServer

workers = script_module(ROOT / "scripts" / "workers.py")

pytestmark = pytest.mark.e2e


def test_two_workers_behind_haproxy(upstream: UpstreamServer, tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        message = "haproxy is needed: apt-get install haproxy (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    port = free_block(3)  # HAProxy's port, and the two workers' next to it
    # flow_detail=1 (after the workers' own 0): every request logs its line, counted below per worker
    arguments = ["--set", f"openai_base_url={upstream.base_url}", "--set", "flow_detail=1"]
    processes = workers.start(2, "127.0.0.1", port, arguments, tmp_path, log_files=True)
    try:
        client = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=20)
        answers = [
            client.chat(model="m", messages=[{"role": "user", "content": f"n{n}"}]).message.content for n in range(6)
        ]
        streamed = "".join(
            p.message.content for p in client.chat(model="m", messages=[{"role": "user", "content": "s"}], stream=True)
        )
    finally:
        workers.stop(processes)
    assert answers == [f"echo: n{n}" for n in range(6)] and streamed == "echo: s"
    assert all(p.poll() is not None for p in processes), "every worker and HAProxy stopped"
    served = [(tmp_path / f"worker-{n}.log").read_text().count("POST /api/chat m") for n in (1, 2)]
    assert sum(served) == 7 and min(served) > 0, f"both workers answered: {served}"


def test_workers_that_ask_for_a_client_key_stay_in_service(upstream: UpstreamServer, tmp_path: Path) -> None:
    """HAProxy's keyless health check gets 401 from a worker with ollama_api_key: alive, not down."""
    if shutil.which("haproxy") is None:
        message = "haproxy is needed: apt-get install haproxy (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    port = free_block(3)
    arguments = ["--set", f"openai_base_url={upstream.base_url}", "--set", "ollama_api_key=k-team-0123"]
    processes = workers.start(2, "127.0.0.1", port, arguments, tmp_path, log_files=True)
    try:
        time.sleep(7.5)  # past HAProxy's default fall (3 checks, 2 s apart): a failing check has marked it down
        client = ollama.Client(
            host=f"http://127.0.0.1:{port}", timeout=20, headers={"Authorization": "Bearer k-team-0123"}
        )
        answer = client.chat(model="m", messages=[{"role": "user", "content": "k"}]).message.content
    finally:
        workers.stop(processes)
    assert answer == "echo: k"


def test_each_worker_gets_a_metrics_port_of_its_own() -> None:
    extra = ["--set", "metrics_listen=127.0.0.1:9464", "--set", "flow_detail=1"]
    assert workers.per_worker(extra, 1) == (extra, 9464, "127.0.0.1")
    third = ["--set", "metrics_listen=127.0.0.1:9466", "--set", "flow_detail=1"]
    assert workers.per_worker(extra, 3) == (third, 9466, "127.0.0.1")
    assert workers.per_worker(["--set", "metrics_listen=[::1]:9464"], 2) == (
        ["--set", "metrics_listen=[::1]:9465"],
        9465,
        "::1",
    )
    assert workers.per_worker(["--set", "flow_detail=1"], 2) == (["--set", "flow_detail=1"], None, "127.0.0.1")


def test_workers_metrics_and_readiness_checks(upstream: UpstreamServer, tmp_path: Path) -> None:
    """With metrics_listen, each worker counts its own requests on its own port, and HAProxy checks /ready there."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    if shutil.which("haproxy") is None:
        message = "haproxy is needed: apt-get install haproxy (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    port = free_block(5)  # HAProxy's, the two workers', then the two workers' metrics ports
    metrics = port + 3
    arguments = ["--set", f"openai_base_url={upstream.base_url}", "--set", f"metrics_listen=127.0.0.1:{metrics}"]
    processes = workers.start(2, "127.0.0.1", port, arguments, tmp_path, log_files=True)
    try:
        client = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=20)
        for n in range(6):
            client.chat(model="m", messages=[{"role": "user", "content": f"n{n}"}])
        counts = []
        for worker_metrics in (metrics, metrics + 1):
            text = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics").text
            counts.append(
                sum(
                    s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name == "ollama_proxy_requests_total" and s.labels["route"] == "/api/chat"
                )
            )
    finally:
        workers.stop(processes)
    assert sum(counts) == 6 and min(counts) > 0, counts
    config = (tmp_path / "haproxy.cfg").read_text()
    assert "option httpchk GET /ready" in config and f"check inter 2s port {metrics + 1}" in config
