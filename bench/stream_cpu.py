"""The proxy's CPU time per streamed event, plain mitmdump against copies of the addon, in one run.

    .venv/bin/python bench/stream_cpu.py [--rounds 7] [--events 3000] [--streams 10] NAME=ADDON ...

ADDON is `plain` (mitmdump with stream_large_bodies=1, OpenAI in and out, as `make bench`'s row 2),
a path to an addon's proxy.py (measured on /api/chat) or `openai:` and such a path (measured on
/v1/chat/completions). The first setup is the one the others are divided by. Every setup is
started side by side (the proxies on one CPU, the upstream and this client on the other, as
bench/run.py pins them) and measured in interleaved rounds: each round streams `streams` ×
`events` content events through every setup in turn and reads the proxy's CPU time from /proc;
the figure is the median over rounds. Only CPU per event is reported: unlike wall-clock figures it
holds up when other work shares the machine. To switch a piece of the addon off for a trial, copy
`addon/` elsewhere, edit the copy and name its proxy.py here (`make bench`: BENCH_ADDON, BENCH_BASE).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import client as cl  # noqa: E402
from bench.run import HOST, Proc, addon_command, free_port, pinning, session_cpu_s, wait_port  # noqa: E402

MITMDUMP = str(ROOT / ".venv" / "bin" / "mitmdump")


async def measure(rounds: int, events: int, streams: int, setups: list[tuple[str, str]]) -> int:
    proxy_prefix, load_prefix, pin_desc = pinning()
    up_port = free_port()
    upstream = Proc(
        "cpu-upstream",
        [
            *load_prefix,
            sys.executable,
            str(ROOT / "bench" / "upstream.py"),
            "--port",
            str(up_port),
            "--max-seconds",
            "900",
        ],
    )
    running: list[tuple[str, Proc, int, str, str]] = []
    try:
        if not wait_port(up_port, upstream, 15):
            print(f"the fake upstream did not start:\n{upstream.tail()}", file=sys.stderr)
            return 1
        base = f"http://{HOST}:{up_port}/v1"
        for name, spec in setups:
            port = free_port()
            if spec == "plain":
                cmd = [MITMDUMP, "--mode", f"reverse:http://{HOST}:{up_port}", "--listen-host", HOST]
                cmd += ["--listen-port", str(port), "--set", "flow_detail=0", "--set", "stream_large_bodies=1"]
                api = "openai"
            else:
                api, _, path = spec.partition(":") if spec.startswith("openai:") else ("ollama", "", spec)
                cmd = addon_command(MITMDUMP, Path(path).resolve(), port, base)
            proc = Proc(f"cpu-{name}", [*proxy_prefix, *cmd])
            if not wait_port(port, proc, 30):
                print(f"{name} did not start:\n{proc.tail()}", file=sys.stderr)
                return 1
            path = "/api/chat" if api == "ollama" else "/v1/chat/completions"
            running.append((name, proc, port, api, path))

        def fmt(api: str) -> str:
            return "ndjson" if api == "ollama" else "sse"

        for _, _, port, api, path in running:  # warm-up
            await cl.stream_throughput(HOST, port, path, cl.chat_body(api, "bench-n300-d0", True), fmt(api), 300, 5, 60)
        cpu: dict[str, list[float]] = {name: [] for name, *_ in running}
        load_before = open("/proc/loadavg").read().split()[:3]
        for _ in range(rounds):
            for name, proc, port, api, path in running:
                sid = os.getsid(proc.pid)
                before = session_cpu_s(sid)
                body = cl.chat_body(api, f"bench-n{events}-d0", True)
                got = await cl.stream_throughput(HOST, port, path, body, fmt(api), events, streams, 120)
                after = session_cpu_s(sid)
                if got["errors"] or before is None or after is None or not got["events"]:
                    print(f"{name}: {got}", file=sys.stderr)
                    return 1
                cpu[name].append((after - before) / got["events"] * 1e6)
        load_after = open("/proc/loadavg").read().split()[:3]
        print(f"{rounds} interleaved rounds of {streams} streams x {events} events; {pin_desc}")
        print(f"load average {' '.join(load_before)} before, {' '.join(load_after)} after")
        first = statistics.median(cpu[running[0][0]])
        print("| setup | CPU µs per event (median) | × first | rounds |\n|---|---|---|---|")
        for name, values in cpu.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.1f} | {median / first:.2f} | {' '.join(f'{v:.1f}' for v in values)} |")
        return 0
    finally:
        for _, proc, *_ in running:
            proc.stop()
        upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("setups", nargs="+", metavar="NAME=ADDON")
    args = parser.parse_args()
    setups = [tuple(s.split("=", 1)) for s in args.setups]
    if any(len(s) != 2 for s in setups):
        parser.error("each setup is NAME=ADDON")
    return asyncio.run(measure(args.rounds, args.events, args.streams, [(n, a) for n, a in setups]))


if __name__ == "__main__":
    sys.exit(main())
