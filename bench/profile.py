"""Where does the proxy's time go? Samples mitmdump with py-spy under load, with and without the addon.

    .venv/bin/python bench/profile.py          # or: make bench-profile

py-spy (pinned, from PyPI) is installed into bench/.peers/tools on first use. For each of
  - plain mitmdump (no addon), and
  - mitmdump -s addon/proxy.py,
it samples the proxy for a few seconds of non-streaming load (50 connections) and of stream
relaying (10 streams x 2000 events), then writes bench/PROFILE.md: the share of samples spent
in the addon's own code, in the per-request log line, in JSON, and the top functions. The raw
stacks (py-spy "raw" = collapsed format, for flamegraph tools) stay in bench/out/profile-*.raw.
Everything is on 127.0.0.1 and every process is stopped at the end.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import client as cl
from bench.run import HOST, OUT, PEERS_DIR, Proc, addon_command, free_port, pinning, wait_port

ROOT = Path(__file__).resolve().parent.parent

PY_SPY = "py-spy==0.4.3"
SECONDS = 6


def _addon_code(frame: str) -> bool:
    """A frame of the addon's own work (not its stand-in for mitmproxy's hook dispatch, under every hook)."""
    return ("(addon/" in frame or "/addon/" in frame) and "addon/dispatch.py" not in frame


def _dispatch(frame: str) -> bool:
    return "AddonManager" in frame or "addon/dispatch.py" in frame


def ensure_py_spy() -> Path:
    venv = PEERS_DIR / "tools"
    exe = venv / "bin" / "py-spy"
    if not exe.exists():
        print(f"[profile] installing {PY_SPY} into {venv.relative_to(ROOT)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PY_SPY],
            check=True,
            timeout=600,
        )
    return exe


def load_stacks(path: Path) -> list[tuple[list[str], int]]:
    rows = []
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():  # py-spy occasionally writes a garbled frame name: skip it
            rows.append((stack.split(";"), int(n)))
    return rows


def _short(frame: str) -> str:
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*?(site-packages/|lib/python3\.\d+/)", "(", frame)


def summarize(name: str, rows: list[tuple[list[str], int]]) -> list[str]:
    total = sum(n for _, n in rows) or 1

    def share(pred) -> float:
        return 100 * sum(n for f, n in rows if any(pred(x) for x in f)) / total

    incl: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    for frames, n in rows:
        seen = set()
        for x in frames:
            k = _short(x)
            if k not in seen:
                incl[k] += n
                seen.add(k)
        own[_short(frames[-1])] += n
    out = [
        f"### {name}",
        "",
        f"{total} samples. Share of samples with, somewhere on the stack: "
        f"the addon's code {share(_addon_code):.1f} %, "
        f"logging {share(lambda x: 'logging/__init__' in x):.1f} %, "
        f"json {share(lambda x: '(json/' in x or '/json/' in x):.1f} %, "
        f"pydantic {share(lambda x: 'pydantic' in x):.1f} %, "
        f"mitmproxy's hook dispatch (AddonManager, and addon/dispatch.py's stand-in) {share(_dispatch):.1f} %, "
        f"socket writes {share(lambda x: '_SelectorSocketTransport.write' in x):.1f} %.",
        "",
        "| inclusive % | function |",
        "|---|---|",
    ]
    addon_frames = [(k, v) for k, v in incl.most_common() if _addon_code(k)][:12]
    for k, v in incl.most_common(40):
        if k.startswith(("<module>", "run (", "Runner.run", "BaseEventLoop.run", "mitmdump (")):
            continue
        out.append(f"| {100 * v / total:.1f} | `{k}` |")
    if addon_frames:
        out += ["", "The addon's functions (inclusive):", "", "| % | function |", "|---|---|"]
        out += [f"| {100 * v / total:.1f} | `{k}` |" for k, v in addon_frames]
    out += ["", "Self time, top 12:", "", "| % | function |", "|---|---|"]
    out += [f"| {100 * v / total:.1f} | `{k}` |" for k, v in own.most_common(12)]
    out.append("")
    return out


async def drive(kind: str, port: int, api: str, seconds: float) -> str:
    path = "/v1/chat/completions" if api == "openai" else "/api/chat"
    fmt = "sse" if api == "openai" else "ndjson"
    if kind == "nonstream":
        r = await cl.closed_loop(HOST, port, path, cl.chat_body(api, "bench", False), 50, seconds, warmup=0)
        return f"{r['rps']:.0f} req/s (Python client, profiler attached)"
    t_end = time.monotonic() + seconds
    eps = []
    while time.monotonic() < t_end:
        r = await cl.stream_throughput(HOST, port, path, cl.chat_body(api, "bench-n2000-d0", True), fmt, 2000, 10, 60)
        eps.append(r["events_per_s"])
    return f"{sum(eps) / len(eps):.0f} events/s (profiler attached)"


async def main_async() -> int:
    py_spy = ensure_py_spy()
    proxy_prefix, load_prefix, pin_desc = pinning()
    mitmdump = str(ROOT / ".venv" / "bin" / "mitmdump")
    addon = ROOT / "addon" / "proxy.py"
    up_port = free_port()
    lines = [
        "# Profile of the proxy under load",
        "",
        f"py-spy {PY_SPY.split('==')[1]} sampling at 250 Hz (`--nonblocking`), {SECONDS} s per case; {pin_desc}. "
        f"Made by `make bench-profile` (bench/profile.py) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average {' '.join(open('/proc/loadavg').read().split()[:3])} at start. Raw stacks in bench/out/profile-*.raw. "
        "Rates are with the profiler attached and the Python load client, so lower than in RESULTS.md.",
        "",
    ]
    up = Proc(
        "profile-upstream",
        [
            *load_prefix,
            sys.executable,
            str(ROOT / "bench" / "upstream.py"),
            "--port",
            str(up_port),
            "--max-seconds",
            "600",
        ],
    )
    try:
        if not wait_port(up_port, up, 15):
            print("[profile] upstream did not start", file=sys.stderr)
            return 1
        cases = []
        for kind in ("nonstream", "stream"):
            p = free_port()
            extra = ["--set", "stream_large_bodies=1"] if kind == "stream" else []
            cases.append(
                (
                    f"plain mitmdump, {kind}",
                    kind,
                    "openai",
                    p,
                    [
                        *proxy_prefix,
                        mitmdump,
                        "--mode",
                        f"reverse:http://{HOST}:{up_port}",
                        "--listen-host",
                        HOST,
                        "--listen-port",
                        str(p),
                        "--set",
                        "flow_detail=0",
                        *extra,
                    ],
                )
            )
            if addon.exists():
                p = free_port()
                cases.append(
                    (
                        f"addon, {kind}",
                        kind,
                        "ollama",
                        p,
                        [*proxy_prefix, *addon_command(mitmdump, addon, p, f"http://{HOST}:{up_port}/v1")],
                    )
                )
        for title, kind, api, port, cmd in cases:
            slug = re.sub(r"[^a-z]+", "-", title)
            proxy = Proc(f"profile-{slug}", cmd, cwd=OUT)
            try:
                if not wait_port(port, proxy, 30):
                    lines += [f"### {title}", "", f"did not start: {proxy.tail(5)}", ""]
                    continue
                await cl.closed_loop(
                    HOST,
                    port,
                    "/v1/chat/completions" if api == "openai" else "/api/chat",
                    cl.chat_body(api, "bench", False),
                    4,
                    1.0,
                    warmup=0,
                )
                raw = OUT / f"profile-{slug}.raw"
                spy = subprocess.Popen(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(proxy.pid),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--duration",
                        str(SECONDS),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                try:
                    await asyncio.sleep(0.3)
                    rate = await drive(kind, port, api, SECONDS - 0.8)
                    _, err = await asyncio.to_thread(spy.communicate, timeout=SECONDS + 30)
                finally:
                    if spy.poll() is None:
                        spy.kill()
                        spy.wait(5)
                if not raw.exists():
                    lines += [f"### {title}", "", f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}", ""]
                    continue
                lines += summarize(f"{title} — {rate}", load_stacks(raw))
                print(f"[profile] {title}: {rate}", flush=True)
            finally:
                proxy.stop()
    finally:
        up.stop()
    dest = ROOT / "bench" / "PROFILE.md"
    dest.write_text("\n".join(lines))
    print(f"[profile] wrote {dest.relative_to(ROOT)}", flush=True)
    return 0


def main() -> int:
    if not shutil.which("taskset"):
        print("[profile] note: taskset not found, processes are not pinned", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main_async())


if __name__ == "__main__":
    sys.exit(main())
