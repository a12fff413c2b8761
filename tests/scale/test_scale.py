"""Scale-out (`make test-scale`, root only): three proxy hosts behind HAProxy, each in a network
namespace of its own (harness/scale.py). Under a bounded load, a host killed loses only the
requests it had in flight and HAProxy stops sending to it once its readiness check fails; started
again, it gets traffic again; the throughput of two hosts against one is measured and printed,
not asserted (the machine's cores are shared)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.scale import CHECK_INTERVAL_MS, HOSTS, ScaleNet, read_results

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("haproxy") is None,
    reason="needs root (network namespaces), iproute2 and haproxy",
)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleNet]:
    scale = ScaleNet(tmp_path_factory.mktemp("scale"))
    try:
        scale.start()
        scale.wait_status(list(HOSTS), "UP", 90)  # HAProxy's own checks say when every host can serve
        yield scale
    finally:
        scale.close()


def report(text: str) -> None:
    print(f"\n[test-scale] {text}", flush=True)


def requests_by_key(text: str, key: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ollama_proxy_requests_total" and s.labels.get("key") == key
    )


def test_a_host_killed_then_back(net: ScaleNet, tmp_path: Path) -> None:
    out = tmp_path / "kill.jsonl"
    load = net.load(seconds=16, concurrency=6, stream=True, out=out)  # streams of ~1 s each
    time.sleep(4)
    killed_at = time.time()
    net.kill_host("h2")
    detected = net.wait_status(["h2"], "DOWN", 20)
    sessions_when_down = net.stats()["h2"].sessions
    time.sleep(3)
    sessions_while_down = net.stats()["h2"].sessions
    net.start_host("h2")
    back = net.wait_status(["h2"], "UP", 60)
    up_at = time.time()
    assert load.wait(60) == 0, net.logs()
    results = read_results(out)
    failed = [r for r in results if r["error"]]
    in_flight = [r for r in results if r["start"] < killed_at < r["end"]]
    report(
        f"{len(results)} streamed requests; h2 killed with {len(in_flight)} requests in flight on all hosts, "
        f"{len(failed)} failed; HAProxy marked it DOWN {detected:.2f} s after the kill (check every "
        f"{CHECK_INTERVAL_MS} ms, down after 2 failures); started again, UP after {back:.2f} s"
    )
    assert len(results) > 20 and results, "the load ran"
    for r in failed:  # only requests that were in flight on the killed host when it died
        assert r["start"] < killed_at < r["end"] and r["served"] in ("h2", ""), r
    assert all(not r["error"] for r in results if r["end"] < killed_at)
    assert sessions_while_down == sessions_when_down, "HAProxy sent requests to a host it knew was down"
    assert {r["served"] for r in results if r["end"] < killed_at} == set(HOSTS)
    after = [r for r in results if r["start"] > up_at]
    assert any(r["served"] == "h2" for r in after), "the host that came back got no traffic"
    assert not any(r["error"] for r in after)
    # Who used what, from each host's own metrics: the one key, on every host (h2's count restarted with it)
    for name in HOSTS:
        assert requests_by_key(net.scrape(name), "team") > 0, name


def measure(net: ScaleNet, out: Path, seconds: float = 6, concurrency: int = 8) -> tuple[float, set[str]]:
    load = net.load(seconds=seconds, concurrency=concurrency, stream=False, out=out)
    assert load.wait(seconds + 60) == 0, net.logs()
    results = read_results(out)
    assert results and not any(r["error"] for r in results), [r for r in results if r["error"]][:3]
    span = max(float(r["end"]) for r in results) - min(float(r["start"]) for r in results)
    return len(results) / span, {str(r["served"]) for r in results}


def test_throughput_two_hosts_against_one(net: ScaleNet, tmp_path: Path) -> None:
    net.wait_status(list(HOSTS), "UP", 60)
    net.command("disable server proxies/h2")
    net.command("disable server proxies/h3")
    net.wait_status(["h2", "h3"], "MAINT", 10)
    one, served_one = measure(net, tmp_path / "one.jsonl")
    net.command("enable server proxies/h2")
    net.wait_status(["h2"], "UP", 30)
    two, served_two = measure(net, tmp_path / "two.jsonl")
    net.command("enable server proxies/h3")
    report(
        f"throughput (8 clients, whole answers, {os.cpu_count()} cores shared with everything else): "
        f"1 host {one:.0f} req/s, 2 hosts {two:.0f} req/s ({two / one:.2f}×)"
    )
    assert served_one == {"h1"} and served_two == {"h1", "h2"}
