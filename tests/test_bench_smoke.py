"""Smoke test of the benchmark harness: the fake upstream and the load client, in-process.

Checks shapes only; no timing is asserted.
"""

import json

from bench import client as bench_client
from bench.upstream import FakeOpenAI, stream_params


def test_stream_params_from_model_name():
    assert stream_params("bench-n200-d20", 5, 0.0) == (200, 0.02)
    assert stream_params("bench-n3-d0.5", 5, 0.0) == (3, 0.0005)
    assert stream_params("gpt-4o-mini", 5, 0.01) == (5, 0.01)


async def test_non_stream_and_stream_answers():
    async with FakeOpenAI(port=0) as up:
        c = bench_client.Conn("127.0.0.1", up.port)
        try:
            resp = await c.request("POST", "/v1/chat/completions", bench_client.chat_body("openai", "bench", False))
            assert resp.status == 200
            assert resp.headers[b"content-type"] == b"application/json"
            d = json.loads(resp.body)
            assert d["object"] == "chat.completion"
            assert d["choices"][0]["message"]["role"] == "assistant"
            assert d["choices"][0]["finish_reason"] == "stop"
            assert d["usage"]["total_tokens"] == 44

            # same keep-alive connection: a stream of 4 events, 1 ms apart
            tr = bench_client.StreamTracker("sse")
            raw: list[bytes] = []
            resp = await c.request(
                "POST",
                "/v1/chat/completions",
                bench_client.chat_body("openai", "bench-n4-d1", True),
                on_chunk=lambda data, t: (raw.append(data), tr.feed(data, t)),
            )
            assert resp.status == 200
            assert resp.headers[b"content-type"].startswith(b"text/event-stream")
            assert resp.headers[b"transfer-encoding"] == b"chunked"
            assert tr.done and tr.error is None
            assert len(tr.events) == 4
            for written, read in tr.events:
                assert 0 <= read - written < 5_000_000_000  # same monotonic clock
            events = [e[len(b"data: ") :] for e in b"".join(raw).split(b"\n\n") if e]
            assert events[-1] == b"[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
            assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
            assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks[1:5]).count("@") == 8
        finally:
            c.close()


async def test_stream_helper_counts_events():
    async with FakeOpenAI(port=0) as up:
        r = await bench_client.stream_throughput(
            "127.0.0.1",
            up.port,
            "/v1/chat/completions",
            bench_client.chat_body("openai", "bench-n50-d0", True),
            "sse",
            50,
            3,
            5,
        )
        assert r["errors"] == 0 and r["events"] == 150


async def test_models_listed_and_the_routing_microbenchmark():
    async with FakeOpenAI(port=0, models=("bench-b", "bench-shared")) as up:
        c = bench_client.Conn("127.0.0.1", up.port)
        try:
            resp = await c.request("GET", "/v1/models")
            assert [m["id"] for m in json.loads(resp.body)["data"]] == ["bench-b", "bench-shared"]
        finally:
            c.close()
    from bench.upstreams import routing_cost

    cost = routing_cost()
    assert set(cost) == {"one server", "three servers"} and all(0 < us < 1000 for us in cost.values())
