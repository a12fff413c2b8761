"""mitmweb with the addon: a streamed chat shows up annotated, in the Ollama view, without the key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest

from harness import ROOT, TEST_KEY
from harness.mitmdump import free_port, wait_for_port
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

MITMWEB = Path(sys.executable).parent / "mitmweb"
PASSWORD = "web-test-password"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def mitmweb(upstream: UpstreamServer, tmp_path: Path):
    proxy_port, web_port = free_port(), free_port()
    log = open(tmp_path / "mitmweb.log", "wb")
    process = subprocess.Popen(
        [
            str(MITMWEB),
            "-s",
            str(ROOT / "addon" / "proxy.py"),
            "--mode",
            f"reverse:http://127.0.0.1:{proxy_port}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(proxy_port),
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(web_port),
            "--set",
            "web_open_browser=false",
            "--set",
            f"web_password={PASSWORD}",
            "--set",
            f"openai_base_url={upstream.base_url}",
            "--set",
            f"openai_api_key={TEST_KEY}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        wait_for_port(proxy_port, process)
        wait_for_port(web_port, process)
        yield f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{web_port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        log_text = (tmp_path / "mitmweb.log").read_text(errors="replace")
        assert TEST_KEY not in log_text
        assert "Addon error" not in log_text and "Traceback" not in log_text, log_text[-3000:]


def test_streamed_chat_in_mitmweb(mitmweb, tmp_path: Path) -> None:
    proxy_url, web_url = mitmweb
    parts = list(
        ollama.Client(host=proxy_url).chat(
            model="llama3.2", messages=[{"role": "user", "content": "show me"}], stream=True
        )
    )
    assert parts[-1].done

    api = httpx.Client(base_url=web_url, headers={"Authorization": f"Bearer {PASSWORD}"})
    assert httpx.get(web_url + "/flows").status_code == 403, "the web UI needs the password"
    flows = api.get("/flows").json()
    assert TEST_KEY not in str(flows)
    flow = next(f for f in flows if f["request"]["path"] == "/v1/chat/completions")
    assert flow["comment"].startswith("POST /api/chat llama3.2 → /v1/chat/completions llama3.2 · 200")
    view = api.get(f"/flows/{flow['id']}/response/content/auto.json").json()
    assert view["view_name"] == "Ollama NDJSON"
    assert "echo: show me" in view["text"]

    if CHROMIUM is None:
        message = "chromium is needed for the screenshot: apt-get install chromium (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    shot = tmp_path / "mitmweb.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--hide-scrollbars",
            "--window-size=1400,900",
            "--virtual-time-budget=8000",
            f"--screenshot={shot}",
            f"{web_url}/?token={PASSWORD}#/flows/{flow['id']}/response",
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    assert shot.stat().st_size > 20_000, "a rendered page, not a blank one"
    if target := os.environ.get("MITMWEB_SCREENSHOT"):  # `make screenshot` refreshes docs/mitmweb.png
        shutil.copy(shot, target)
