"""End to end: the official ollama SDK → a real mitmdump with the addon → a real HTTP upstream on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import ollama
import pytest
from mitmproxy import io

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer, recording

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(proxy: Mitmdump) -> ollama.Client:
    return ollama.Client(host=proxy.url, timeout=20)


def test_root_and_version_are_answered_locally(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    root = httpx.get(proxy.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert httpx.head(proxy.url + "/").status_code == 200
    version = httpx.get(proxy.url + "/api/version").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)
    assert upstream.fake.requests == []


def test_chat_non_streaming(client: ollama.Client, upstream: UpstreamServer) -> None:
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hello there"}])
    assert answer.model == "llama3.2"
    assert answer.message.role == "assistant"
    assert answer.message.content == "echo: hello there"
    assert answer.done is True and answer.done_reason == "stop"
    assert answer.prompt_eval_count == 7 and answer.eval_count == 3
    assert answer.total_duration > 0 and answer.eval_duration is not None


def test_chat_streaming(client: ollama.Client) -> None:
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert "".join(p.message.content for p in parts) == "echo: one two three"
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    final = parts[-1]
    assert final.done_reason == "stop" and final.prompt_eval_count == 7 and final.eval_count == 4
    assert final.total_duration >= final.prompt_eval_duration > 0


def test_generate_both_ways(client: ollama.Client) -> None:
    answer = client.generate(model="qwen3:8b", prompt="why is the sky blue", system="be brief")
    assert answer.response == "echo: why is the sky blue" and answer.done and answer.model == "qwen3:8b"
    parts = list(client.generate(model="qwen3:8b", prompt="a b", stream=True))
    assert "".join(p.response for p in parts) == "echo: a b"
    assert parts[-1].done and parts[-1].eval_count == 3


def test_generate_answers_carry_context_except_raw(client: ollama.Client, upstream: UpstreamServer) -> None:
    """Ollama's final generate answer has `context`; the proxy has no token ids and sends [] (on every
    stream line: the Vercel AI SDK's provider needs it). Not for raw prompts."""
    assert client.generate(model="m", prompt="hi").context == []
    parts = list(client.generate(model="m", prompt="a b", stream=True))
    assert all(p.context == [] for p in parts) and len(parts) > 1
    raw = client.generate(model="m", prompt="hi", raw=True)
    assert raw.response == "echo: hi" and raw.context is None
    assert upstream.fake.requests[-1].path == "/v1/completions"
    assert all(p.context is None for p in client.generate(model="m", prompt="hi", raw=True, stream=True))


def test_exact_upstream_request(client: ollama.Client, upstream: UpstreamServer) -> None:
    client.chat(
        model="llama3.2",
        messages=[{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}],
        options={
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 42,
            "stop": ["\n\n"],
            "num_predict": 64,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
        },
        format="json",
        stream=True,
    ).__next__()
    received = upstream.fake.requests[-1]
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert received.headers["content-type"] == "application/json"
    assert not any(h.startswith("proxy-") for h in received.headers)
    assert received.body == {
        "model": "llama3.2",
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 42,
        "stop": ["\n\n"],
        "max_tokens": 64,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.1,
        "response_format": {"type": "json_object"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}],
    }


def test_stream_defaults_to_true_and_is_ndjson(proxy: Mitmdump) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x y"}]}
    with httpx.stream("POST", proxy.url + "/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        raw = b"".join(response.iter_bytes())
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1]), "one object per line, no blank lines"
    objects = [json.loads(line) for line in lines[:-1]]
    assert objects[-1]["done"] is True and all(o["done"] is False for o in objects[:-1])
    assert all(o["created_at"].endswith("Z") and "." in o["created_at"] for o in objects)


def test_lines_arrive_while_the_upstream_is_still_sending(client: ollama.Client, upstream: UpstreamServer) -> None:
    upstream.fake.pause_after = 3  # role chunk, "echo:", " a" — then the upstream holds the rest
    parts = client.chat(model="m", messages=[{"role": "user", "content": "a b c d"}], stream=True)
    received = [next(parts).message.content, next(parts).message.content]
    assert received == ["echo:", " a"]
    assert upstream.fake.completed == 0, "the first lines came through while the upstream was still sending"
    upstream.fake.resume.set()
    rest = list(parts)
    assert "".join(p.message.content for p in rest) == " b c d" and rest[-1].done
    assert upstream.fake.completed == 1


def test_streamed_tool_calls_from_a_recording(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model="rec:chat-stream/tool-calls-parallel", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [c.function.arguments for c in calls] == [{"password": "mellon"}, {"password": "radiance"}]
    assert parts[-1].done and parts[-1].eval_count == 53


def test_unknown_model_is_404_like_ollama(client: ollama.Client) -> None:
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as error:
            result = client.chat(model="missing-model", messages=[{"role": "user", "content": "x"}], stream=stream)
            if stream:
                list(result)
        assert error.value.status_code == 404
        assert error.value.error == "model 'missing-model' not found"


@pytest.mark.parametrize(
    ("name", "status", "needle"),
    [
        ("errors/401-invalid-api-key", 401, "API key"),
        ("errors/429-rate-limit-requests-per-min", 429, "Rate limit reached"),
        ("errors/400-unsupported-parameter-stop", 400, "stop"),
    ],
)
def test_upstream_errors_keep_status_and_message(
    proxy: Mitmdump, upstream: UpstreamServer, name: str, status: int, needle: str
) -> None:
    exchange = recording(name)
    upstream.fake.queue(
        exchange["response"]["status"],
        json.dumps(exchange["response"]["body"]),
        {"content-type": "application/json", "retry-after": "20"},
    )
    response = httpx.post(
        proxy.url + "/api/chat", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert needle in response.json()["error"]
    assert response.headers["retry-after"] == "20"


def test_html_upstream_error_becomes_json(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue(
        502, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", {"content-type": "text/html"}
    )
    response = httpx.post(
        proxy.url + "/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    assert response.status_code == 502
    assert response.json() == {"error": "502 Bad Gateway"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "missing request body"),
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "model is required"),
        (b'{"model": 3, "messages": []}', "model must be a string"),
        (b'{"model": "m", "messages": "hi"}', "messages must be an array"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream must be a boolean",
        ),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x", "images": ["***"]}]}', "invalid image"),
    ],
)
def test_bad_requests_get_400_before_going_upstream(
    proxy: Mitmdump, upstream: UpstreamServer, body: bytes, message: str
) -> None:
    response = httpx.post(proxy.url + "/api/chat", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert upstream.fake.requests == []


def test_unknown_routes_and_methods_answer_like_ollama(proxy: Mitmdump) -> None:
    assert (r := httpx.get(proxy.url + "/api/nothing-here")).status_code == 404 and r.text == "404 page not found"
    assert httpx.get(proxy.url + "/api/chat").status_code == 405


def test_unmapped_options_are_logged_once(client: ollama.Client, proxy: Mitmdump, upstream: UpstreamServer) -> None:
    client.chat(model="warn-me", messages=[{"role": "user", "content": "x"}], options={"top_k": 5, "num_ctx": 4096})
    assert "top_k" not in upstream.fake.requests[-1].body
    time.sleep(0.2)
    warnings = [line for line in proxy.log().splitlines() if "warn-me" in line and "no OpenAI equivalent" in line]
    assert len(warnings) == 1 and "num_ctx, top_k" in warnings[0]


def test_passthrough_options(spawn, upstream: UpstreamServer) -> None:
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", "passthrough_options=true")
    ollama.Client(host=dump.url).chat(
        model="m", messages=[{"role": "user", "content": "x"}], options={"top_k": 5, "min_p": 0.1}
    )
    body = upstream.fake.requests[-1].body
    assert body["top_k"] == 5 and body["min_p"] == 0.1
    assert "authorization" not in upstream.fake.requests[-1].headers  # no key configured, none sent


def test_regular_mode_intercepts_ollama_hosts_only(spawn, upstream: UpstreamServer) -> None:
    dump = spawn("regular", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}")
    proxied = ollama.Client(host="http://ollama.internal:11434", proxy=dump.url, timeout=10)
    answer = proxied.chat(model="m", messages=[{"role": "user", "content": "via proxy"}])
    assert answer.message.content == "echo: via proxy"
    parts = list(proxied.generate(model="m", prompt="p q", stream=True))
    assert "".join(p.response for p in parts) == "echo: p q"
    # Traffic for another host passes through untouched: here, straight to the fake upstream.
    other = httpx.post(
        upstream.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "raw"}]},
        proxy=dump.url,
    )
    assert other.json()["object"] == "chat.completion"
    assert upstream.fake.requests[-1].path == "/v1/chat/completions"


def test_regular_mode_with_http_proxy_environment(
    spawn, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = spawn("regular", f"openai_base_url={upstream.base_url}", "ollama_hosts=localhost:11434,127.0.0.1:11434")
    monkeypatch.setenv("HTTP_PROXY", dump.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    answer = ollama.Client(host="http://127.0.0.1:11434", timeout=10).chat(
        model="m", messages=[{"role": "user", "content": "env"}]
    )
    assert answer.message.content == "echo: env"


def test_unreachable_upstream_gives_json_error(spawn, upstream: UpstreamServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    dump = spawn("reverse", f"openai_base_url=http://127.0.0.1:{closed_port}/v1")
    client = ollama.Client(host=dump.url, timeout=10)
    with pytest.raises(ollama.ResponseError) as error:
        client.chat(model="m", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 502
    assert "connection refused" in error.value.error
    assert client._client.get("/api/version").status_code == 200, "the proxy keeps serving"


def test_concurrent_streams_progress_independently(proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.pause_after = 2  # every stream is held after its first content event
    first_lines: dict[int, str] = {}
    results: dict[int, str] = {}
    all_started = threading.Barrier(9, timeout=20)

    def run(n: int) -> None:
        parts = ollama.Client(host=proxy.url, timeout=20).chat(
            model="m", messages=[{"role": "user", "content": f"n{n}"}], stream=True
        )
        first_lines[n] = next(parts).message.content
        all_started.wait()
        results[n] = first_lines[n] + "".join(p.message.content for p in parts)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    all_started.wait()  # all eight streams are open at once and each has already sent a line
    assert first_lines == dict.fromkeys(range(8), "echo:") and upstream.fake.completed == 0
    upstream.fake.resume.set()
    for thread in threads:
        thread.join(20)
    assert results == {n: f"echo: n{n}" for n in range(8)}


def test_key_is_not_kept_in_saved_flows(spawn, upstream: UpstreamServer, tmp_path) -> None:
    saved = tmp_path / "saved.flow"
    dump = spawn(
        "reverse", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", f"save_stream_file={saved}"
    )
    client = ollama.Client(host=dump.url)
    client.chat(model="m", messages=[{"role": "user", "content": "x"}])
    list(client.chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    dump.stop()
    data = saved.read_bytes()
    assert TEST_KEY.encode() not in data
    assert TEST_KEY not in dump.log()
    with saved.open("rb") as file:
        flows = list(io.FlowReader(file).stream())
    assert [f.request.path for f in flows] == ["/v1/chat/completions"] * 2
    for flow in flows:  # both sides of each exchange are kept in the saved flow
        assert json.loads(flow.metadata["ollama_request"])["model"] == "m"
        assert flow.metadata["upstream_response"] and flow.response.content
        assert flow.comment.startswith("POST /api/chat m")
    assert flows[1].metadata["upstream_response"].startswith(b"data: ")
    assert json.loads(flows[1].response.content.splitlines()[-1])["done"] is True


def logged_requests(dump) -> list[str]:
    return [line for line in dump.log().splitlines() if "/api/" in line and "→" in line]


@pytest.mark.parametrize("flow_detail", ["1", "0"])
def test_log_lines_without_prompt_or_key(spawn, upstream: UpstreamServer, flow_detail: str) -> None:
    """flow_detail=1 (mitmdump's default): every request logs its line, as mitmdump prints its own per
    flow. flow_detail=0 (make run, the harness's default): quiet as mitmdump's own output, but a failure
    still says why."""
    dump = spawn(
        "reverse", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", f"flow_detail={flow_detail}"
    )
    client = ollama.Client(host=dump.url)
    client.chat(model="logged", messages=[{"role": "user", "content": "secret prompt text"}])
    list(client.generate(model="logged", prompt="another secret", stream=True))
    with pytest.raises(ollama.ResponseError):
        client.chat(model="missing-model", messages=[{"role": "user", "content": "x"}])
    dump.stop()
    lines = logged_requests(dump)
    if flow_detail == "1":
        assert len(lines) == 3
        assert "POST /api/chat logged → /v1/chat/completions logged · 200 · 7+4 tokens" in lines[0]
        assert "POST /api/generate logged → /v1/chat/completions logged · 200 · 7+3 tokens" in lines[1]
    else:
        assert len(lines) == 1
    assert "404" in lines[-1] and "model 'missing-model' not found" in lines[-1]
    log = dump.log()
    assert "secret" not in log and TEST_KEY not in log


def test_log_lines_can_be_turned_down(spawn, upstream: UpstreamServer) -> None:
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", "termlog_verbosity=warn", "flow_detail=1")
    ollama.Client(host=dump.url).chat(model="quiet", messages=[{"role": "user", "content": "x"}])
    dump.stop()
    assert "quiet" not in dump.log()
