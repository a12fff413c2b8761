"""The cost of routing with several upstream servers (issue 15): three servers against one.

    make bench-upstreams        # writes bench/RESULTS-upstreams.md

Two setups of `mitmdump -s addon/proxy.py`, side by side, measured in interleaved rounds:

- **one server**: `openai_base_url` only (today's configuration). Requests name four models; the
  one server takes them all.
- **three servers**: the default server plus `[servers.b]` and `[servers.c]` in the catalog, each
  with its own key (by environment variable). Requests cycle over a model listed by the default
  server, one listed by b, one by c, and one listed by both b and c (the least busy of the two,
  the most work routing does per request). Every request is routed by the servers' lists, health
  and outstanding counts; every answer reports back to health.

Each setup answers non-streaming `/api/chat` and streamed `/api/chat` (20 events) at
concurrency 8, from the fast fake upstreams of bench/upstream.py (one process per server). The
figure is the **proxy's CPU time per request** (user + system of its process session, from
/proc), which other work on the machine moves much less than latency or requests per second.
With 2 CPUs or more the proxies run on the first and everything else (upstreams, this client)
on the second (taskset). Loopback only; every process is stopped; every loop is bounded.

Environment: BENCH_SECONDS (per phase and round, default 6), BENCH_ROUNDS (default 3).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import client as cl
from bench.run import HOST, Proc, addon_command, free_port, pinning, session_cpu_s, wait_port

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENCY = 8
EVENTS = 20
KEYS = {  # as long as real keys: the addon scans relayed text and log lines for every configured key
    "default": "sk-bench-default-" + "0123456789abcdef" * 3,
    "b": "sk-bench-b-" + "0123456789abcdef" * 3,
    "c": "sk-bench-c-" + "0123456789abcdef" * 3,
}
LISTS: dict[str, tuple[str, ...]] = {
    "default": ("bench-a", "gpt-4o-mini"),
    "b": ("bench-b", "bench-shared"),
    "c": ("bench-c", "bench-shared"),
}
MODELS = ("bench-a", "bench-b", "bench-c", "bench-shared")


def routing_cost() -> dict[str, float]:
    """Microseconds of the routing decision alone (`ServersDirectory.route`, in this process), per
    setup, over the request mix: the part of a request's cost that several servers change."""
    import timeit

    from addon.catalog.catalog import Catalog
    from addon.upstreams.directory import ServersDirectory
    from addon.upstreams.health import Health
    from addon.upstreams.listings import ServerList
    from addon.upstreams.servers import Server, ServerTable

    def directory(lists: dict[str, tuple[str, ...]]) -> ServersDirectory:
        specs = {name: {"base_url": f"http://{name}.bench/v1"} for name in lists if name != "default"}
        found = Catalog.parse({"servers": specs}, environ={})
        table = ServerTable.build(
            Server.default("http://default.bench/v1", KEYS["default"]), found.servers, None, Health(log=None)
        )
        models = ServersDirectory(table, found)
        for name, ids in lists.items():
            models._set_list(name, ServerList({i: {"id": i} for i in ids}, None, 0.0))
        return models

    out = {}
    for label, lists in (("one server", {"default": LISTS["default"]}), ("three servers", LISTS)):
        models = directory(lists)
        n = 20_000

        def mix(models: ServersDirectory = models) -> None:
            for model in MODELS:
                models.route(model)

        seconds = min(timeit.repeat(mix, number=n // len(MODELS), repeat=5))
        out[label] = seconds / n * 1e6
    return out


def catalog(ports: dict[str, int]) -> str:
    return "".join(
        f'[servers.{name}]\nbase_url = "http://{HOST}:{ports[name]}/v1"\napi_key_env = "BENCH_{name.upper()}_KEY"\n\n'
        for name in ("b", "c")
    )


async def closed_loop(port: int, stream: bool, seconds: float) -> tuple[int, int]:
    """(requests that succeeded, those that failed) in `seconds`, CONCURRENCY connections."""
    bodies = [cl.chat_body("ollama", model, stream) for model in MODELS]
    ok = failed = 0
    stop = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal ok, failed
        conn = cl.Conn(HOST, port)
        i = offset
        try:
            while time.monotonic() < stop:
                body = bodies[i % len(bodies)]
                i += 1
                if stream:
                    result = await cl.one_stream(conn, "/api/chat", body, "ndjson", EVENTS, 30)
                    good = result.ok
                else:
                    try:
                        response = await asyncio.wait_for(conn.request("POST", "/api/chat", body), 30)
                        good = response.status == 200
                    except (OSError, cl.HTTPError, asyncio.IncompleteReadError, TimeoutError):
                        conn.close()
                        good = False
                if good:
                    ok += 1
                else:
                    failed += 1
                    await asyncio.sleep(0.01)
        finally:
            conn.close()

    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    return ok, failed


async def measure(proc: Proc, port: int, stream: bool) -> dict:
    before = session_cpu_s(proc.pid)
    began = time.monotonic()
    ok, failed = await closed_loop(port, stream, SECONDS)
    wall = time.monotonic() - began
    cpu = (session_cpu_s(proc.pid) or 0) - (before or 0)
    return {"ok": ok, "failed": failed, "rps": ok / wall, "cpu_ms_per_request": 1000 * cpu / ok if ok else None}


def served(port: int) -> int:
    """The chat completions a fake upstream has answered (its GET /stats)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=10) as answer:
        return int(json.loads(answer.read())["chat_completions"])


def main() -> int:
    proxy_prefix, load_prefix, pin_desc = pinning()
    mitmdump = str(ROOT / ".venv" / "bin" / "mitmdump")
    folder = Path(tempfile.mkdtemp(prefix="bench-upstreams-"))
    processes: list[Proc] = []
    try:
        ports = {name: free_port() for name in LISTS}
        for name, port in ports.items():
            upstream = Proc(
                f"upstreams-{name}",
                [
                    *load_prefix,
                    sys.executable,
                    str(ROOT / "bench" / "upstream.py"),
                    "--port",
                    str(port),
                    "--events",
                    str(EVENTS),
                    "--models",
                    ",".join(LISTS[name]),
                    "--max-seconds",
                    "900",
                ],
            )
            processes.append(upstream)
            assert wait_port(port, upstream), upstream.tail()
        (folder / "servers.toml").write_text(catalog(ports))
        environment = {f"BENCH_{name.upper()}_KEY": key for name, key in KEYS.items()}
        setups: dict[str, tuple[Proc, int]] = {}
        for label, extra in (
            ("one server", []),
            ("three servers", ["--set", f"model_catalog={folder / 'servers.toml'}"]),
        ):
            port = free_port()
            proc = Proc(
                f"upstreams-proxy-{label.replace(' ', '-')}",
                [
                    *proxy_prefix,
                    *addon_command(
                        mitmdump,
                        ROOT / "addon" / "proxy.py",
                        port,
                        f"http://{HOST}:{ports['default']}/v1",
                        KEYS["default"],
                    ),
                    *extra,
                ],
                env=environment,
            )
            processes.append(proc)
            assert wait_port(port, proc), proc.tail()
            setups[label] = (proc, port)
        results: dict[tuple[str, str], list[dict]] = {}
        for _, port in setups.values():  # warm up: first lists, connections, caches
            asyncio.run(closed_loop(port, False, 1.0))
            asyncio.run(closed_loop(port, True, 1.0))
        for _ in range(ROUNDS):
            for phase, stream in (("non-streaming", False), ("streamed, 20 events", True)):
                for label, (proc, port) in setups.items():
                    results.setdefault((label, phase), []).append(asyncio.run(measure(proc, port, stream)))
        # Every server took requests (the proxies log no line per request at flow_detail=0: ask the upstreams).
        routed = {name: served(port) for name, port in ports.items()}
        assert all(routed.values()), f"every server took requests: {routed}"
    finally:
        for proc in reversed(processes):
            proc.stop()
    rows = []
    base: dict[str, float] = {}
    for (label, phase), runs in results.items():
        cpu = statistics.median(r["cpu_ms_per_request"] for r in runs if r["cpu_ms_per_request"] is not None)
        rps = statistics.median(r["rps"] for r in runs)
        failed = sum(r["failed"] for r in runs)
        base.setdefault(phase, cpu)
        spread = [round(r["cpu_ms_per_request"], 3) for r in runs if r["cpu_ms_per_request"] is not None]
        rows.append(f"| {phase} | {label} | {cpu:.3f} | {cpu / base[phase]:.3f}× | {spread} | {rps:,.0f} | {failed} |")
    micro = routing_cost()
    load = os.getloadavg()
    report = f"""# Routing with several upstream servers: three against one

Written by `bench/upstreams.py` (`make bench-upstreams`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.
Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, load average {load[0]:.2f} at the end.
`/api/chat` from a Python client at concurrency {CONCURRENCY}, {SECONDS:g} s per phase, {ROUNDS} interleaved rounds
(medians); fake upstreams `bench/upstream.py`, one process per server; {pin_desc}.

| phase | setup | proxy CPU ms / request | × one server | per round | req/s | failed |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

**one server**: `openai_base_url` only. **three servers**: the default server and `[servers.b]`,
`[servers.c]` with their own keys; requests cycle over a model each server lists and one that b
and c both list (routed to the less busy of the two), so every request goes through the
list-based rule, health and the outstanding-request count, and each answer reports to health.
Requests each server took in that setup (from the proxy's log): {", ".join(f"{k} {v:,}" for k, v in routed.items())}.
CPU time is the proxy's whole process session (user + system, /proc, 10 ms ticks).

The routing decision alone (`ServersDirectory.route` over the same request mix, timed in one
process, best of 5): {micro["one server"]:.1f} µs per request with one server, {micro["three servers"]:.1f} µs with three.
"""
    (ROOT / "bench" / "RESULTS-upstreams.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
