"""make run WORKERS=N: N proxy processes behind HAProxy answer as one Ollama endpoint."""

from __future__ import annotations

import os
import shutil
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
