"""Offline replay: a real mitmdump with `--server-replay` of the recorded upstream flows, the ollama SDK
as client and no upstream at all. Every scenario must come out exactly as it was recorded."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import pytest
from mitmproxy import io

from addon.guard import secrets as redact
from collector.scenarios import MANIFEST, expected, run, scenarios_of
from harness.mitmdump import Mitmdump, free_port

pytestmark = pytest.mark.e2e

FLOWS = Path(__file__).parent.parent / "flows"
FOLDERS = sorted(p.parent for p in FLOWS.glob(f"*/{MANIFEST}"))


def recorded(folder: Path) -> list:
    flows = []
    for path in sorted(folder.glob("*.flow")):
        with path.open("rb") as file:
            flows.extend(io.FlowReader(file).stream())
    return flows


def with_context(scenario, status: int, want):
    """The expected answer with the `context: []` the proxy now sends on generate answers.

    flows/llama-server/ was recorded before the proxy sent `context` on a non-raw generate (on the
    whole answer, and on every line of a stream). The recordings stay as they were made; a recorded
    answer that lacks the field gains it here (a flow recorded since already has it and is unchanged).
    """
    if scenario.route != "generate" or status != 200 or scenario.request.get("raw"):
        return want

    def completed(answer):
        if not isinstance(answer, dict) or "error" in answer or "context" in answer:
            return answer
        if answer.get("done") is not True:
            return {**answer, "context": []}
        fields = list(answer.items())
        at = next((i + 1 for i, (k, _) in enumerate(fields) if k == "done_reason"), len(fields))
        return dict([*fields[:at], ("context", []), *fields[at:]])  # after done_reason, as Ollama orders it

    return [completed(a) for a in want] if isinstance(want, list) else completed(want)


def test_there_are_recordings() -> None:
    assert len(FOLDERS) >= 1 and all(recorded(f) for f in FOLDERS)


@pytest.fixture(scope="module", params=FOLDERS, ids=lambda p: p.name)
def replay(request, tmp_path_factory):
    folder: Path = request.param
    tmp = tmp_path_factory.mktemp(f"replay-{folder.name}")
    combined = tmp / "all.flow"
    combined.write_bytes(b"".join(p.read_bytes() for p in sorted(folder.glob("*.flow"))))
    first = recorded(folder)[0].request
    nowhere = f"{first.scheme}://127.0.0.1:{free_port()}/v1"  # nothing listens: only replayed answers exist
    dump = Mitmdump(
        tmp,
        "reverse",
        f"openai_base_url={nowhere}",
        "server_replay_reuse=true",
        "server_replay_ignore_host=true",
        "server_replay_ignore_port=true",
        "server_replay_extra=forward",
        extra_args=["--server-replay", str(combined)],
    )
    yield folder, dump
    dump.stop()


def test_replayed_answers_equal_the_recorded_ones(replay) -> None:
    folder, dump = replay
    scenarios = scenarios_of(json.loads((folder / MANIFEST).read_text()))
    flows = recorded(folder)
    assert len(flows) == len(list(folder.glob("*.flow")))
    client = ollama.Client(host=dump.url, timeout=20)
    http = httpx.Client(base_url=dump.url, timeout=20)
    checked = 0
    for flow in flows:
        scenario = scenarios[flow.metadata["scenario"]]
        want = expected(scenario, flow.metadata["ollama_status"], flow.metadata["ollama_response"])
        if isinstance(want, dict) and want.get("status") in (401, 403) and isinstance(want.get("error"), str):
            want = {**want, "error": redact.scrub_keylike(want["error"])}  # the proxy hides (masked) keys
        want = with_context(scenario, flow.metadata["ollama_status"], want)
        assert run(client, scenario, http) == want, scenario.name
        checked += 1
    assert checked == len(flows)


def test_replayed_streams_are_ndjson(replay) -> None:
    folder, dump = replay
    streamed = [
        f
        for f in recorded(folder)
        if json.loads(f.metadata["ollama_request"]).get("stream")
        and f.metadata["ollama_status"] == 200
        and f.metadata["ollama"]["route"].startswith("/api/")
    ]
    assert streamed
    for flow in streamed:
        route = flow.metadata["ollama"]["route"]
        response = httpx.post(dump.url + route, content=flow.metadata["ollama_request"], timeout=20)
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = response.content.split(b"\n")
        assert lines[-1] == b"" and all(lines[:-1])
        objects = [json.loads(line) for line in lines[:-1]]
        assert objects[-1].get("done") is True or "error" in objects[-1]


def test_replayed_agent_streams_are_their_apis_events(replay) -> None:
    """/v1/messages and /v1/responses streams come out as Anthropic and Responses SSE, ending as they should."""
    folder, dump = replay
    streamed = [
        f
        for f in recorded(folder)
        if json.loads(f.metadata["ollama_request"]).get("stream")
        and f.metadata["ollama_status"] == 200
        and f.metadata["ollama"]["route"] in ("/v1/messages", "/v1/responses")
    ]
    assert streamed
    for flow in streamed:
        route = flow.metadata["ollama"]["route"]
        response = httpx.post(dump.url + route, content=flow.metadata["ollama_request"], timeout=20)
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
        last = {
            "/v1/messages": ("message_stop", "error"),
            "/v1/responses": ("response.completed", "response.incomplete"),
        }
        assert names[-1] in last[route], (flow.metadata["scenario"], names[-3:])


def test_no_key_in_any_saved_flow() -> None:
    for path in FLOWS.rglob("*.flow"):
        data = path.read_bytes()
        assert b"Bearer sk-" not in data and b"authorization" not in data.lower(), path
