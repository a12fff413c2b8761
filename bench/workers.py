"""Throughput beyond one core: N proxy processes behind HAProxy (scripts/workers.py), N = 1, 2.

    make bench-workers          # writes bench/RESULTS-workers.md

Non-streaming /api/chat at concurrency 50 with wrk against: one plain `mitmdump -s addon/proxy.py`,
then HAProxy in front of 1 and of 2 workers; the fast fake upstream of bench/upstream.py answers.
No CPU pinning here: the workers need every core, so wrk and the upstream share them (the ratio
between rows is the figure; on a 2-core machine the load generator takes its share too).
Rounds are interleaved and the median is reported. Loopback only; every process is stopped.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, script_module

workers = script_module(ROOT / "scripts" / "workers.py")

PY = sys.executable
WRK_SCRIPT = ROOT / "bench" / "wrk_post.lua"
BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": False})
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def free_port(span: int = 1) -> int:
    """A free port whose next `span` ports are free too (the workers take them)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span >= 65000:
            continue
        try:
            for other in range(port + 1, port + span + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", other))
            return port
        except OSError:
            continue
    raise RuntimeError("no free range of ports")


def wrk(url: str) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", "-c50", f"-d{SECONDS}s", "--timeout", "10s", "--latency", "-s", str(WRK_SCRIPT), url],
        env={**os.environ, "BENCH_BODY": BODY},
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
    )
    line = next(line for line in out.stdout.splitlines() if line.startswith("BENCHJSON "))
    result = json.loads(line[len("BENCHJSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def main() -> int:
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [PY, str(ROOT / "bench" / "upstream.py"), "--port", str(upstream_port), "--max-seconds", "900"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    env_extra = [
        "--set",
        f"openai_base_url=http://127.0.0.1:{upstream_port}/v1",
        "--set",
        "openai_api_key=sk-bench-0123456789abcdef0123456789abcdef",
    ]
    setups: dict[str, list[subprocess.Popen]] = {}
    urls: dict[str, str] = {}
    folder = tempfile.mkdtemp(prefix="bench-workers-")
    try:
        workers.wait_for(upstream_port, [upstream])
        single = free_port()
        setups["one mitmdump, no balancer"] = [
            subprocess.Popen(
                [
                    str(workers.MITMDUMP),
                    "-s",
                    str(ROOT / "addon" / "proxy.py"),
                    "--mode",
                    f"reverse:http://127.0.0.1:{single}",
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    str(single),
                    "--set",
                    "flow_detail=0",
                    *env_extra,
                ],
                start_new_session=True,
                stdout=(Path(folder) / "single.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        ]
        workers.wait_for(single, setups["one mitmdump, no balancer"])
        urls["one mitmdump, no balancer"] = f"http://127.0.0.1:{single}/api/chat"
        for n in (1, 2):
            port = free_port(n + 1)
            name = f"HAProxy + {n} worker{'s' if n > 1 else ''}"
            sub = Path(folder) / str(n)
            sub.mkdir()
            setups[name] = workers.start(n, "127.0.0.1", port, env_extra, sub, log_files=True)
            urls[name] = f"http://127.0.0.1:{port}/api/chat"
        for url in urls.values():  # warm up
            wrk_quick = subprocess.run(["curl", "-s", "-o", "/dev/null", "-d", BODY, url], timeout=10)
            assert wrk_quick.returncode == 0
        results: dict[str, list[dict]] = {name: [] for name in urls}
        for _ in range(ROUNDS):
            for name, url in urls.items():
                results[name].append(wrk(url))
    finally:
        for processes in setups.values():
            workers.stop(processes)
        os.killpg(upstream.pid, signal.SIGTERM)
        upstream.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(r["rps"] for r in results["one mitmdump, no balancer"])
    rows = []
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p50 = statistics.median(r["p50"] for r in runs) / 1000
        p99 = statistics.median(r["p99"] for r in runs) / 1000
        errors = sum(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] for r in runs)
        rows.append(f"| {name} | {rps:,.0f} | {rps / base:.2f}× | {p50:.2f} / {p99:.2f} | {errors} |")
    load = os.getloadavg()
    report = f"""# Throughput beyond one core

Written by `bench/workers.py` (`make bench-workers`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.
Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, load average {load[0]:.2f} at the end.
Non-streaming `/api/chat`, wrk `-t1 -c50 -d{SECONDS}s`, {ROUNDS} interleaved rounds (medians), fake upstream `bench/upstream.py`;
no pinning: wrk and the upstream share the cores with the workers.

| setup | req/s | ×one mitmdump | p50 / p99 ms | errors |
|---|---|---|---|---|
{chr(10).join(rows)}

HAProxy 2.6 (`mode http`, `balance leastconn`, `http-reuse always`, health check `GET /api/version`
with 2 workers) in front of N `mitmdump -s addon/proxy.py` processes on 127.0.0.1, as `make run WORKERS=N`
starts them. wrk keeps its 50 connections alive: the warm connections HAProxy keeps to the workers
matter for clients that do not (bench/RESULTS-pool.md).
"""
    (ROOT / "bench" / "RESULTS-workers.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
