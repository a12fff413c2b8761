"""mitmweb with the addon: a streamed chat shows up annotated, in the Ollama view, without the key; the flow
list shows each flow's comment (the client's route, model and server), not only the upstream URL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest
from tornado.websocket import websocket_connect

from harness import ROOT, TEST_KEY
from harness.mitmdump import free_port, wait_for_port
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

MITMWEB = Path(sys.executable).parent / "mitmweb"
PASSWORD = "web-test-password"
VLLM_KEY = "sk-vllm-test-key-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def mitmweb(upstream: UpstreamServer, tmp_path: Path):
    proxy_port, web_port = free_port(), free_port()
    log = open(tmp_path / "mitmweb.log", "wb")
    # Two servers (the same loopback upstream under two names), so that the flow list shows which
    # server each flow went to: llama3.2 is pinned to "vllm", the rest goes to the default server.
    (tmp_path / "models.toml").write_text(
        f'[servers.vllm]\nbase_url = "{upstream.base_url}"\napi_key_env = "VLLM_KEY"\n\n'
        '[models."llama3.2"]\nserver = "vllm"\nupstream = "meta-llama/Llama-3.2-3B-Instruct"\n'
    )
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
            "--set",
            f"model_catalog={tmp_path / 'models.toml'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "VLLM_KEY": VLLM_KEY},
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
        assert TEST_KEY not in log_text and VLLM_KEY not in log_text
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
    assert TEST_KEY not in str(flows) and VLLM_KEY not in str(flows)
    flow = next(f for f in flows if f["request"]["path"] == "/v1/chat/completions")
    assert flow["comment"].startswith(
        "POST /api/chat llama3.2 → vllm /v1/chat/completions meta-llama/Llama-3.2-3B-Instruct · 200"
    )
    view = api.get(f"/flows/{flow['id']}/response/content/auto.json").json()
    assert view["view_name"] == "Ollama NDJSON"
    assert "echo: show me" in view["text"]

    # The agents' routes: in the flow list their URL is the upstream's too; the comment tells them apart.
    agents = httpx.Client(base_url=proxy_url, timeout=30)
    said = {"role": "user", "content": "show me"}
    assert agents.post("/v1/messages", json={"model": "gpt-4o-mini", "max_tokens": 64, "messages": [said]}).is_success
    assert agents.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "show me"}).is_success
    assert "comment" in api.get("/options").json()["web_columns"]["value"], "the addon put the comment in the list"

    if CHROMIUM is None:
        message = "chromium is needed for the screenshot: apt-get install chromium (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    chromium = [
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
    ]
    page = f"{web_url}/?token={PASSWORD}#/flows/{flow['id']}/response"
    dom = subprocess.run([*chromium, "--dump-dom", page], check=True, capture_output=True, text=True, timeout=90)
    comments = re.findall(r'<td class="col-comment">([^<]*)</td>', dom.stdout)
    paths = re.findall(r'<td class="col-path">.*?(http://[^<]*)', dom.stdout)
    assert '<th class="col-comment' in dom.stdout, "the flow list has the comment column"
    assert len(comments) == len(paths) == 3 and all(p.endswith("/v1/chat/completions") for p in paths), dom.stdout
    for seen in (  # the client's route and model, then the server and the upstream model
        "POST /api/chat llama3.2 → vllm /v1/chat/completions meta-llama/Llama-3.2-3B-Instruct · 200",
        "POST /v1/messages gpt-4o-mini → default /v1/chat/completions gpt-4o-mini · 200",
        "POST /v1/responses gpt-4o-mini → default /v1/chat/completions gpt-4o-mini · 200",
    ):
        assert any(c.startswith(seen) for c in comments), (seen, comments)

    # The screenshot as a user sees the list after double-clicking the comment column's edge, which fits
    # it to the text (mitmweb's own control; the browser keeps the width): over Chromium's DevTools protocol.
    shot = tmp_path / "mitmweb.png"
    shot.write_bytes(asyncio.run(fitted_screenshot([c for c in chromium if c != "--virtual-time-budget=8000"], page)))
    assert shot.stat().st_size > 20_000, "a rendered page, not a blank one"
    if target := os.environ.get("MITMWEB_SCREENSHOT"):  # `make screenshot` refreshes docs/mitmweb.png
        shutil.copy(shot, target)


async def fitted_screenshot(chromium: list[str], page: str) -> bytes:
    """Open the page in headless Chromium, double-click the comment column's resize handle, and take a PNG."""
    port = free_port()
    process = subprocess.Popen(
        [*chromium, f"--remote-debugging-port={port}", page], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        target = None
        for _ in range(300):  # until the page's target is listed (at most 30 s)
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                target = next((t for t in targets if t["type"] == "page" and t["url"].startswith(page[:20])), None)
            except httpx.HTTPError:
                pass
            if target is not None:
                break
            await asyncio.sleep(0.1)
        assert target is not None, "Chromium's DevTools did not list the page"
        socket = await websocket_connect(target["webSocketDebuggerUrl"], max_message_size=64 << 20)
        ids = iter(range(1, 1_000_000))

        async def call(method: str, **params: object) -> dict:
            number = next(ids)
            socket.write_message(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                message = await socket.read_message()
                assert message is not None, "Chromium closed the DevTools connection"
                answer = json.loads(message)
                if answer.get("id") == number:
                    assert "error" not in answer, answer
                    return answer["result"]

        async def until(expression: str) -> None:
            for _ in range(300):  # at most 30 s
                result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                if result["result"].get("value") is True:
                    return
                await asyncio.sleep(0.1)
            pytest.fail(f"the page never had {expression}")

        await until("document.querySelectorAll('td.col-comment').length === 3")
        width = "document.querySelector('th.col-comment').getBoundingClientRect().width"
        await call(
            "Runtime.evaluate",
            expression="document.querySelector('th.col-comment .col-resize-handle')"
            ".dispatchEvent(new MouseEvent('dblclick', {bubbles: true}))",
        )
        await until(f"{width} > 300")
        await call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        shot = await call("Page.captureScreenshot", format="png")
        socket.close()
        return base64.b64decode(shot["data"])
    finally:
        process.terminate()
        process.wait(10)
