"""The collector's recorder: what a saved flow holds, and that no key can ever reach one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import pytest
from mitmproxy import io

from collector import recorder
from collector.recorder import SCENARIO_HEADER
from collector.scenarios import expected, live_scenarios, run
from harness import ROOT, TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e


def read(path: Path):
    with path.open("rb") as file:
        return list(io.FlowReader(file).stream())


def test_recorded_flows_hold_both_sides_and_no_key(upstream: UpstreamServer, tmp_path: Path) -> None:
    out = tmp_path / "flows"
    dump = Mitmdump(
        tmp_path,
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"record_dir={out}",
        scripts=[ROOT / "collector" / "recorder.py"],
    )
    try:
        scenarios = {s.name: s for s in live_scenarios("m", "e")}
        results = {}
        for name in ("chat", "chat-stream", "chat-unknown-model", "generate-raw", "messages-stream", "responses"):
            headers = {SCENARIO_HEADER: name, "Authorization": "Bearer client-secret"}
            client = ollama.Client(host=dump.url, headers=headers)
            with httpx.Client(base_url=dump.url, headers=headers, timeout=20) as http:
                results[name] = run(client, scenarios[name], http)
    finally:
        dump.stop()
    assert sorted(p.name for p in out.iterdir()) == [
        "chat-stream.flow",
        "chat-unknown-model.flow",
        "chat.flow",
        "generate-raw.flow",
        "messages-stream.flow",
        "responses.flow",
    ]
    for path in out.iterdir():
        data = path.read_bytes()
        assert TEST_KEY.encode() not in data and b"client-secret" not in data
        (flow,) = read(path)
        assert "authorization" not in flow.request.headers
        scenario = scenarios[flow.metadata["scenario"]]
        assert (
            expected(scenario, flow.metadata["ollama_status"], flow.metadata["ollama_response"])
            == results[scenario.name]
        )
    (stream,) = read(out / "chat-stream.flow")
    assert stream.response.content.startswith(b"data: ") and b"[DONE]" in stream.response.content
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert json.loads(stream.request.content)["stream"] is True
    (missing,) = read(out / "chat-unknown-model.flow")
    assert missing.response.status_code == 404 and missing.metadata["ollama_status"] == 404
    (raw,) = read(out / "generate-raw.flow")
    assert raw.request.path == "/v1/completions"
    (messages,) = read(out / "messages-stream.flow")
    assert messages.request.path == "/v1/chat/completions" and messages.metadata["ollama"]["route"] == "/v1/messages"
    assert messages.metadata["ollama_response"].startswith(b"event: message_start")
    assert [name for name, _ in results["messages-stream"]][-1] == "message_stop"
    assert results["responses"]["output"][0]["content"][0]["text"] == "echo: Name three fruits."


def test_a_key_anywhere_in_the_flow_stops_the_write() -> None:
    from mitmproxy.test import tflow

    flow = tflow.tflow(resp=True)
    flow.metadata["ollama"] = {"upstream_status": 200}
    flow.metadata["upstream_response"] = b"the key sk-live-123 leaked into a body"
    with pytest.raises(recorder.KeyLeak):
        recorder.redact(flow, ["sk-live-123"])
    flow.metadata["upstream_response"] = b"clean"
    assert recorder.redact(flow, ["sk-live-123"]).response.content == b"clean"


def test_make_record_keeps_the_key_off_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21 §6: any local user reads a command line in `ps`; the key goes in mitmdump's environment."""
    from collector import collect as collect_module

    seen: dict = {}

    class Started(Exception):
        pass

    class Capture:
        def __init__(self, tmp: Path, mode: str, *settings: str, **kwargs: object) -> None:
            seen.update(settings=settings, **kwargs)
            raise Started

    monkeypatch.setattr(collect_module, "Mitmdump", Capture)
    with pytest.raises(Started):
        collect_module.collect("unused", [], "http://127.0.0.1:9/v1", "sk-record-secret-1234", {})
    assert not any("sk-record-secret" in setting for setting in seen["settings"])
    assert seen["environment"] == {"OPENAI_API_KEY": "sk-record-secret-1234"}


def test_the_recorder_redacts_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-5678")
    assert recorder.upstream_keys("") == ["sk-env-secret-5678"]
    assert recorder.upstream_keys("sk-option") == ["sk-option", "sk-env-secret-5678"]
