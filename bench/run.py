"""`make bench`: the proxy against the floor, plain mitmdump and its peers, in one run.

Everything is on 127.0.0.1. Every process this script starts is in its own session and is
killed (SIGTERM, then SIGKILL) in a `finally`. All loops are bounded in count and time.

Environment knobs
  BENCH_QUICK=1       < 1 minute: shorter runs, fewer streams (results go to bench/out/)
  BENCH_PEERS=0       skip installing and measuring the PyPI peers
  BENCH_ONLY=a,b      only these setups (keys: direct, mitmdump, mitmdump-empty, mitmdump-fast, addon, addon-v1,
                      addon-mitmdispatch, addon-base, addon-v1-base, oai2ollama, ollama-openai-proxy)
  BENCH_NO_WRK=1      use the Python load generator even if wrk is installed
  BENCH_ADDON=path    measure another copy of the addon (e.g. a patched checkout's addon/proxy.py)
  BENCH_BASE=path     also measure this copy of the addon, in rows of its own (keys addon-base,
                      addon-v1-base): a before/after comparison in one run
  BENCH_BASE_COMMIT=c the same for the addon as it is at git commit c (default `main`, extracted with
                      git archive into bench/out/base-<sha>/; skipped when it is this checkout's addon;
                      empty: no such rows)
  BENCH_ADDON_ARGS=.. extra mitmdump arguments for the addon rows, e.g. "--set body_view_limit=0"
  BENCH_WAIT_QUIET=N  first wait up to N seconds for the 1-minute load average to drop below 1
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import client as cl

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PEERS_DIR = BENCH / ".peers"

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
HOST = "127.0.0.1"
# A dummy upstream key as long as real ones (the fake upstream ignores it): a proxy's cost may
# depend on it, e.g. scanning relayed text for configured secrets (keys under 4 characters are
# not treated as secrets by the addon).
API_KEY = "sk-bench-" + "0123456789abcdef" * 3

PEER_SPECS = {
    "oai2ollama": "oai2ollama==1.2.8.4",
    "ollama-openai-proxy": "ollama-openai-proxy==0.7.0",
}


@dataclass
class Cfg:
    wrk_seconds: float
    warmup_seconds: float
    relay_events: int
    relay_delay_ms: float
    relay_streams: int
    ttft_requests: int
    tput_events: int
    tput_streams: int
    tput_rounds: int  # the events/s phase's rounds (short ones: more of them, so the median holds)
    held_levels: tuple[int, ...]
    held_events: int
    held_delay_ms: float
    held_ramp_s: float
    stream_timeout: float
    rounds: int


FULL = Cfg(
    wrk_seconds=3,
    warmup_seconds=1,
    relay_events=60,
    relay_delay_ms=20,
    relay_streams=1,
    ttft_requests=15,
    tput_events=1000,
    tput_streams=20,
    tput_rounds=7,
    held_levels=(100, 500, 1000),
    held_events=24,
    held_delay_ms=250,
    held_ramp_s=1.0,
    stream_timeout=60,
    rounds=3,
)
QUICKCFG = Cfg(
    wrk_seconds=1,
    warmup_seconds=0.3,
    relay_events=25,
    relay_delay_ms=10,
    relay_streams=1,
    ttft_requests=10,
    tput_events=300,
    tput_streams=10,
    tput_rounds=3,
    held_levels=(100,),
    held_events=5,
    held_delay_ms=100,
    held_ramp_s=0.3,
    stream_timeout=20,
    rounds=1,
)
CFG = QUICKCFG if QUICK else FULL


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Proc:
    """A child process in its own session; stop() kills exactly that session."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        OUT.joinpath("logs").mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cmd = cmd
        self.log_path = OUT / "logs" / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)
        else:  # the leader exited; make sure nothing it left in its session survives
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log.close()

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_port(port: int, proc: Proc | None, timeout: float = 30) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc is not None and not proc.alive():
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def session_rss_kb(sid: int) -> int:
    """Sum of VmRSS (kB) of every process in session `sid` (the proxy and any children)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            if int(rest[3]) != sid:
                continue
            with open(f"/proc/{d}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            continue
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def session_cpu_s(sid: int | None) -> float | None:
    """CPU time (user + system, seconds) used so far by every process in session `sid`.

    Unlike wall-clock throughput this barely moves when other work shares the machine, so
    CPU per request / per event is the steadier measure of a proxy's own cost."""
    if sid is None:
        return None
    ticks = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            if int(rest[3]) == sid:
                ticks += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / CLK_TCK


def machine_load() -> dict:
    out: dict = {}
    try:
        out["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    try:
        line = open("/proc/pressure/cpu").readline()  # "some avg10=.. avg60=.. avg300=.. total=.."
        out["cpu_pressure_some_avg60"] = float(line.split()[2].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


class RssSampler:
    def __init__(self, sid: int | None):
        self.sid = sid
        self.peak = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, session_rss_kb(self.sid))  # type: ignore[arg-type]
            await asyncio.sleep(0.1)

    def __enter__(self) -> RssSampler:
        if self.sid is not None:
            self.peak = session_rss_kb(self.sid)
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            self.peak = max(self.peak, session_rss_kb(self.sid))  # type: ignore[arg-type]


# -- CPU pinning -----------------------------------------------------------------------------


def pinning() -> tuple[list[str], list[str], str]:
    """(prefix for the proxy, prefix for load+upstream, description)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or not shutil.which("taskset"):
        return (
            [],
            [],
            f"not pinned ({len(cores)} usable core(s), taskset {'found' if shutil.which('taskset') else 'missing'})",
        )
    proxy, load = cores[0], cores[1]
    os.sched_setaffinity(0, {load})  # this script (the Python load generator) too
    return (
        ["taskset", "-c", str(proxy)],
        ["taskset", "-c", str(load)],
        f"proxy under test on CPU {proxy}; upstream, wrk and the Python client on CPU {load} (taskset)",
    )


# -- peers -----------------------------------------------------------------------------------


def ensure_peer(name: str) -> tuple[Path | None, str]:
    """A venv under bench/.peers/<name> with the pinned peer installed: (python, note)."""
    spec = PEER_SPECS[name]
    home = PEERS_DIR / name
    py = home / "venv" / "bin" / "python"
    marker = home / "installed.txt"
    if marker.exists() and marker.read_text().strip() == spec and py.exists():
        return py, ""
    print(f"[bench] installing {spec} into {home.relative_to(ROOT)} ...", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True, timeout=120, capture_output=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        err = getattr(e, "stderr", b"") or b""
        return None, f"pip install {spec} failed: {err.decode(errors='replace')[-300:]}"
    if name == "ollama-openai-proxy":
        # 0.7.0's wheel installs its modules top-level (main, config, routers, ...) but they
        # import each other as `src.*` and its console script is `src.main:main`, so as
        # published it dies with "No module named 'src'". A one-file shim package maps
        # `src` onto site-packages; nothing of theirs is changed.
        site = subprocess.run(
            [str(py), "-c", "import config, os; print(os.path.dirname(config.__file__))"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        shim = home / "shim" / "src"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(f"__path__ = [{site!r}]\n")
    marker.write_text(spec + "\n")
    return py, ""


def pip_version(py: Path, dist: str) -> str:
    r = subprocess.run(
        [str(py), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PEERS_DIR,
    )
    # cwd matters: from the repo root, `python -c` would find this project's own
    # ollama_openai_proxy.egg-info first (both distributions are named "ollama-openai-proxy").
    return r.stdout.strip() or "?"


# -- setups under test -----------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    api: str  # "openai" (/v1/chat/completions, SSE) or "ollama" (/api/chat, NDJSON)
    cmd: list[str] | None = None  # None: the upstream itself (the floor)
    stream_cmd: list[str] | None = None  # another process for the streaming phases, if any
    stream_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    skip: str = ""  # why it is not measured
    note: str = ""
    version: str = ""

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "openai" else "/api/chat"

    @property
    def fmt(self) -> str:
        return "sse" if self.api == "openai" else "ndjson"


def addon_command(mitmdump: str, addon: Path | str, port: int, base: str, key: str = API_KEY) -> list[str]:
    """`mitmdump -s <addon>` as the bench runs it: reverse mode on HOST:port (its own reverse target,
    as `make run`), the OpenAI upstream at `base` with `key`, flow_detail=0."""
    return [
        mitmdump,
        "-s",
        str(addon),
        "--mode",
        f"reverse:http://{HOST}:{port}",
        "--listen-host",
        HOST,
        "--listen-port",
        str(port),
        "--set",
        f"openai_base_url={base}",
        "--set",
        f"openai_api_key={key}",
        "--set",
        "flow_detail=0",
    ]


def uvicorn_peer_command(py: Path, port: int, log_level: str) -> list[str]:
    """The ollama-openai-proxy peer as uvicorn serves it on HOST:port (its console script binds 0.0.0.0)."""
    return [str(py), "-m", "uvicorn", "src.main:app", "--host", HOST, "--port", str(port), "--log-level", log_level]


def addon_targets(mitmdump: str, proxy_prefix: list[str], base: str, addon: Path, key: str, label: str) -> list[Target]:
    """The addon's two rows (/api/chat and /v1/chat/completions) for one copy of it."""
    addon_args = shlex.split(os.environ.get("BENCH_ADDON_ARGS", ""))
    out = []
    for suffix, api, title, note in (
        ("", "ollama", "(3) this project: mitmdump -s addon/proxy.py", "Ollama /api/chat in, OpenAI upstream"),
        (
            "-v1",
            "openai",
            "(3b) this project, OpenAI route",
            "the same addon on its /v1/chat/completions route (OpenAI in and out: model name "
            "resolved, SSE relayed as is), comparable to rows 2 and 4a",
        ),
    ):
        p = free_port()
        t = Target(
            f"addon{suffix}{key}",
            title + label,
            api,
            port=p,
            cmd=[*proxy_prefix, *addon_command(mitmdump, addon, p, base), *addon_args],
            note=note + (f"; the addon at {addon}" if key else ""),
        )
        sources = " ".join(p.read_text() for p in addon.parent.rglob("*.py")) if addon.exists() else ""
        if not addon.exists():
            t.skip = f"{addon} does not exist"
        elif api == "openai" and "/v1/chat/completions" not in sources:
            t.skip = "this addon version has no /v1/chat/completions route"
        out.append(t)
    return out


def addon_at(commit: str) -> tuple[Path, str] | None:
    """The addon as it is at `commit`, extracted once into bench/out/base-<sha>/ (`git archive`: no
    worktree), to measure it side by side with this checkout's; None when it is this checkout's
    own addon (same tree, no local changes) or git cannot say."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--verify", f"{commit}^{{commit}}")
        if git("rev-parse", f"{sha}:addon") == git("rev-parse", "HEAD:addon") and not git(
            "status", "--porcelain", "--", "addon"
        ):
            return None
        out = BENCH / "out" / f"base-{sha[:12]}"
        if not (out / "addon" / "proxy.py").exists():
            out.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "archive", sha, "addon"], cwd=ROOT, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out / "addon" / "proxy.py", sha


def make_targets(up_port: int, proxy_prefix: list[str]) -> list[Target]:
    mitmdump = str(ROOT / ".venv" / "bin" / "mitmdump")
    if not os.path.exists(mitmdump):
        mitmdump = shutil.which("mitmdump") or mitmdump
    base = f"http://{HOST}:{up_port}/v1"
    targets: list[Target] = [
        Target("direct", "(1) floor: client → fake upstream", "openai", port=up_port, note="no proxy")
    ]

    plain = [
        *proxy_prefix,
        mitmdump,
        "--mode",
        f"reverse:http://{HOST}:{up_port}",
        "--listen-host",
        HOST,
        "--set",
        "flow_detail=0",
    ]
    at = len(proxy_prefix) + 1  # after the mitmdump executable
    for key, label, script, note in (
        (
            "mitmdump",
            "(2) plain mitmdump, no addon",
            None,
            "reverse proxy to the upstream, OpenAI in and out. Non-streaming phases with the "
            "defaults (bodies buffered, as the addon does for non-stream answers); streaming "
            "phases in a second process with stream_large_bodies=1, so SSE is relayed as it "
            "arrives (with the defaults mitmproxy buffers the whole stream)",
        ),
        (
            "mitmdump-empty",
            "(2b) mitmdump -s an empty addon",
            "empty_addon.py",
            "as row 2, with a script whose one addon has no hook (bench/empty_addon.py): mitmproxy's "
            "floor for any addon, the price of a loaded script before it does anything",
        ),
        (
            "mitmdump-fast",
            "(2c) mitmdump with the fast hook dispatch only",
            "fast_dispatch_addon.py",
            "as row 2, with a script that installs only the addon's fast hook dispatch "
            "(addon/dispatch.py, bench/fast_dispatch_addon.py): the floor the addon (which installs it "
            "by default) is read against on equal terms",
        ),
    ):
        p, p2 = free_port(), free_port()
        cmd = [*plain[:at], "-s", str(BENCH / script), *plain[at:]] if script else plain
        targets.append(
            Target(
                key,
                label,
                "openai",
                port=p,
                cmd=[*cmd, "--listen-port", str(p)],
                stream_port=p2,
                stream_cmd=[*cmd, "--listen-port", str(p2), "--set", "stream_large_bodies=1"],
                note=note,
            )
        )

    addon = Path(os.environ.get("BENCH_ADDON") or ROOT / "addon" / "proxy.py").resolve()
    targets += addon_targets(mitmdump, proxy_prefix, base, addon, "", "")
    slow = addon_targets(mitmdump, proxy_prefix, base, addon, "-mitmdispatch", "")[0]
    slow.label = "(3c) this project with fast_hook_dispatch=false"
    slow.cmd = [*(slow.cmd or []), "--set", "fast_hook_dispatch=false"]
    slow.note = "row 3 with mitmproxy's own hook dispatch: the addon's own cost over row 2"
    targets.append(slow)
    if base_addon := os.environ.get("BENCH_BASE"):
        targets += addon_targets(mitmdump, proxy_prefix, base, Path(base_addon).resolve(), "-base", " (BENCH_BASE)")
    elif (commit := os.environ.get("BENCH_BASE_COMMIT", "main")) and (found := addon_at(commit)) is not None:
        path, sha = found
        targets += addon_targets(mitmdump, proxy_prefix, base, path, "-base", f" ({commit} at {sha[:9]})")

    want_peers = os.environ.get("BENCH_PEERS", "1") not in ("0", "")
    only = {s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()}
    for name in PEER_SPECS:
        if only and name not in only:
            continue
        p = free_port()
        if name == "oai2ollama":
            t = Target(
                name,
                "(4a) oai2ollama (PyPI)",
                "openai",
                port=p,
                env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": base},
                note="serves only /api/version, /api/tags, /api/show and /v1/*: no /api/chat, so "
                "measured on /v1/chat/completions (OpenAI in and out, like row 2). Its "
                "`oai2ollama` command hard-codes port 11434, so it is started with the same "
                "uvicorn.run(app, ...) call on a free port",
            )
        else:
            t = Target(
                name,
                "(4b) ollama-openai-proxy (PyPI)",
                "ollama",
                port=p,
                env={"OPENAI_API_BASE_URL": base, "OPENAI_API_KEY": API_KEY, "PROXY_PORT": str(p)},
                note="Ollama /api/chat in, like row 3. Its console script binds 0.0.0.0, so it "
                "is started as `uvicorn src.main:app --host 127.0.0.1` (same app, same log "
                "level); a shim provides the `src` package its 0.7.0 wheel lacks",
            )
        if not want_peers:
            t.skip = "BENCH_PEERS=0"
            targets.append(t)
            continue
        py, why = ensure_peer(name)
        if py is None:
            t.skip = why
            targets.append(t)
            continue
        if name == "oai2ollama":
            t.cmd = [
                *proxy_prefix,
                str(py),
                "-c",
                f"import uvicorn, oai2ollama; uvicorn.run(oai2ollama.app, host={HOST!r}, port={p})",
            ]
            t.version = pip_version(py, "oai2ollama")
        else:
            t.cmd = [*proxy_prefix, *uvicorn_peer_command(py, p, "info")]
            t.env["PYTHONPATH"] = str(PEERS_DIR / name / "shim")
            t.version = pip_version(py, "ollama-openai-proxy")
        targets.append(t)
    if only:
        for t in targets:
            if t.key not in only and not t.skip:
                t.skip = "not in BENCH_ONLY"
    return targets


# -- wrk -------------------------------------------------------------------------------------

WRK_LUA = BENCH / "wrk_post.lua"


def run_wrk(load_prefix: list[str], t: Target, port: int, connections: int, seconds: float, body: bytes) -> dict:
    cmd = [
        *load_prefix,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(WRK_LUA),
        f"http://{HOST}:{port}{t.path}",
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, env={**os.environ, "BENCH_BODY": body.decode()}
    )
    m = re.search(r"^BENCHJSON (\{.*\})$", r.stdout, re.M)
    if not m:
        return {"tool": "wrk", "error": (r.stdout + r.stderr)[-400:]}
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return {
        "tool": "wrk",
        "requests": d["requests"],
        "rps": d["requests"] / secs,
        "p50_ms": d["p50"] / 1000,
        "p99_ms": d["p99"] / 1000,
        "errors": errors,
        "error_kinds": {k: d[k] for k in ("connect", "read", "write", "status", "timeout") if d[k]},
        "cmd": " ".join(shlex.quote(c) for c in cmd),
    }


# -- measurements ----------------------------------------------------------------------------
#
# Non-streaming load, relay delay, TTFT and events/s run in interleaved rounds (round 1 of every
# setup, then round 2 of every setup, ...) with all proxies started side by side, so a noisy
# neighbour on this shared VM hits every row alike; each figure is the median over the rounds
# (or pooled over them for per-event percentiles). Held streams come last, one setup at a time,
# each setup stopped right after, so a proxy still busy with 1000 streams disturbs no one.


@dataclass
class Live:
    t: Target
    entry: dict
    proc: Proc | None = None  # serving the current phase
    port: int = 0
    res: dict = field(default_factory=dict)
    rounds: dict = field(default_factory=dict)  # phase -> list of per-round values

    @property
    def sid(self) -> int | None:
        return self.proc.pid if self.proc else None


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def merge_load_rounds(rounds: list[dict]) -> dict:
    ok = [r for r in rounds if "rps" in r]
    out = {"tool": rounds[0].get("tool") if rounds else None, "rounds": len(rounds)}
    for k in ("rps", "p50_ms", "p99_ms"):
        vals = [r[k] for r in ok]
        out[k] = _median(vals)
        out[k + "_range"] = [min(vals), max(vals)] if vals else None
    out["requests"] = sum(r.get("requests", 0) for r in ok)
    out["errors"] = sum(r.get("errors", 0) for r in ok) + (len(rounds) - len(ok))
    kinds: dict[str, int] = {}
    for r in rounds:
        for k, v in (r.get("error_kinds") or {}).items():
            kinds[k] = kinds.get(k, 0) + v
        if "error" in r:
            kinds["wrk: " + r["error"][-80:]] = kinds.get("wrk: " + r["error"][-80:], 0) + 1
    out["error_kinds"] = kinds
    out["cmd"] = next((r["cmd"] for r in ok if r.get("cmd")), None)
    cpu = [r["proxy_cpu_s"] for r in ok if "proxy_cpu_s" in r]
    out["cpu_ms_per_req"] = sum(cpu) / out["requests"] * 1000 if cpu and out["requests"] else None
    return out


async def start_phase(lv: Live, cmd: list[str] | None, port: int, name: str, stream: bool) -> bool:
    """Start (if needed) the process serving a phase and sanity-check it; False: skip the row."""
    t, entry = lv.t, lv.entry
    lv.port = port
    if cmd:
        lv.proc = Proc(name, cmd, t.env, cwd=OUT)
        t0 = time.monotonic()
        if not await asyncio.to_thread(wait_port, port, lv.proc, 30):
            entry["skip"] = f"did not start: {lv.proc.tail(5)}"
            print(f"[bench] {t.key}: {entry['skip']}", flush=True)
            return False
        entry.setdefault("startup_s", round(time.monotonic() - t0, 2))
    why = await cl.sanity(HOST, port, t.api, t.path, "bench-n3-d0", stream=stream)
    if why:
        entry["skip"] = f"sanity check failed: {why}"
        print(f"[bench] {t.key}: {entry['skip']}", flush=True)
        return False
    # warm-up: imports, caches, the proxies' upstream connection pools
    await cl.closed_loop(HOST, port, t.path, cl.chat_body(t.api, "bench", False), 4, CFG.warmup_seconds, warmup=0)
    return True


def stop_phase(lv: Live) -> None:
    if lv.proc is not None:
        if not lv.proc.alive():
            lv.entry["died"] = lv.proc.tail(10)
        lv.proc.stop()
        lv.proc = None


async def run_all(targets: list[Target], entries: list[dict], use_wrk: bool, load_prefix: list[str]) -> None:
    lives = [Live(t, e) for t, e in zip(targets, entries, strict=True) if not t.skip]
    R = CFG.rounds
    try:
        # -- phase A: non-streaming ------------------------------------------------------
        print("[bench] starting every setup for the non-streaming rounds ...", flush=True)
        ok: list[Live] = []
        for lv in lives:
            if await start_phase(lv, lv.t.cmd, lv.t.port, lv.t.key, stream=lv.t.stream_cmd is None):
                ok.append(lv)
                lv.res["rss_idle_kb"] = session_rss_kb(lv.sid) if lv.sid else None
            else:
                stop_phase(lv)
        lives = ok

        async def load(lv: Live, c: int) -> dict:
            body = cl.chat_body(lv.t.api, "bench", False)
            cpu0 = session_cpu_s(lv.sid)
            if use_wrk:
                r = await asyncio.to_thread(run_wrk, load_prefix, lv.t, lv.port, c, CFG.wrk_seconds, body)
            else:
                r = await cl.closed_loop(HOST, lv.port, lv.t.path, body, c, CFG.wrk_seconds, warmup=0)
            if cpu0 is not None:
                r["proxy_cpu_s"] = session_cpu_s(lv.sid) - cpu0  # type: ignore[operator]
            return r

        for c in (1, 20, 50):
            for r in range(R):
                print(
                    f"[bench] non-stream c={c}, round {r + 1}/{R}: " + ", ".join(lv.t.key for lv in lives), flush=True
                )
                for lv in lives:
                    with RssSampler(lv.sid) as rs:
                        lv.rounds.setdefault(f"c{c}", []).append(await load(lv, c))
                    if c == 50 and lv.sid:
                        lv.res["rss_c50_kb"] = max(lv.res.get("rss_c50_kb") or 0, rs.peak)
        for lv in lives:
            lv.res["c1"] = merge_load_rounds(lv.rounds["c1"])
            lv.res["c20"] = merge_load_rounds(lv.rounds["c20"])
            lv.res["c50"] = merge_load_rounds(lv.rounds["c50"])

        # -- phase B: streaming (setups with a separate streaming process switch now) -----
        ok = []
        for lv in lives:
            if lv.t.stream_cmd:
                stop_phase(lv)
                if not await start_phase(lv, lv.t.stream_cmd, lv.t.stream_port, f"{lv.t.key}-stream", True):
                    stop_phase(lv)
                    lv.entry["stream_skip"] = lv.entry.get("skip") or "streaming process failed"
                    lv.entry["skip"] = ""  # keep its non-streaming figures
                    continue
            lv.res["rss_idle_stream_kb"] = session_rss_kb(lv.sid) if lv.sid else None
            ok.append(lv)
        slives = ok
        relay_body = lambda lv: cl.chat_body(  # noqa: E731
            lv.t.api, f"bench-n{CFG.relay_events}-d{CFG.relay_delay_ms:g}", True
        )
        for r in range(R):
            print(f"[bench] stream relay delay + TTFT, round {r + 1}/{R}", flush=True)
            for lv in slives:
                lv.rounds.setdefault("relay", []).extend(
                    await cl.stream_series(
                        HOST,
                        lv.port,
                        lv.t.path,
                        relay_body(lv),
                        lv.t.fmt,
                        CFG.relay_events,
                        CFG.relay_streams,
                        CFG.stream_timeout,
                    )
                )
                lv.rounds.setdefault("ttft", []).extend(
                    await cl.stream_series(
                        HOST,
                        lv.port,
                        lv.t.path,
                        cl.chat_body(lv.t.api, "bench-n3-d0", True),
                        lv.t.fmt,
                        3,
                        CFG.ttft_requests,
                        CFG.stream_timeout,
                    )
                )
        for r in range(CFG.tput_rounds):
            print(f"[bench] events/s, round {r + 1}/{CFG.tput_rounds}", flush=True)
            for lv in slives:
                cpu0 = session_cpu_s(lv.sid)
                with RssSampler(lv.sid) as rs:
                    x = await cl.stream_throughput(
                        HOST,
                        lv.port,
                        lv.t.path,
                        cl.chat_body(lv.t.api, f"bench-n{CFG.tput_events}-d0", True),
                        lv.t.fmt,
                        CFG.tput_events,
                        CFG.tput_streams,
                        CFG.stream_timeout,
                    )
                if cpu0 is not None:
                    x["proxy_cpu_s"] = session_cpu_s(lv.sid) - cpu0  # type: ignore[operator]
                lv.rounds.setdefault("tput", []).append(x)
                if lv.sid:
                    lv.res["rss_tput_kb"] = max(lv.res.get("rss_tput_kb") or 0, rs.peak)
        for lv in slives:
            lv.res["relay"] = cl.relay_stats(lv.rounds["relay"], CFG.relay_delay_ms)
            lv.res["ttft"] = cl.ttft_stats(lv.rounds["ttft"])
            tp = lv.rounds["tput"]
            eps = [x["events_per_s"] for x in tp]
            kinds: dict[str, int] = {}
            for x in tp:
                for k, v in x["error_kinds"].items():
                    kinds[k] = kinds.get(k, 0) + v
            # CPU per event: the median over the rounds, as bench/stream_cpu.py reads it (not the total over the
            # total: one round that other work on the machine slowed would move that, as a mean does)
            cpu = [x["proxy_cpu_s"] / x["events"] * 1e6 for x in tp if "proxy_cpu_s" in x and x["events"]]
            lv.res["tput"] = {
                "events_per_s": _median(eps),
                "events_per_s_range": [min(eps), max(eps)],
                "cpu_us_per_event": _median(cpu),
                "cpu_us_per_event_rounds": [round(c, 1) for c in cpu],
                "events": sum(x["events"] for x in tp),
                "errors": sum(x["errors"] for x in tp),
                "error_kinds": kinds,
            }

        # -- phase C: concurrent streams held, one setup at a time --------------------------
        for lv in slives:
            lv.res["held"] = {}
            for n in CFG.held_levels:
                print(f"[bench] {lv.t.key}: {n} concurrent streams ...", flush=True)
                await asyncio.sleep(0.5)  # let the previous level's sockets close
                with RssSampler(lv.sid) as rs:
                    h = await cl.held_streams(
                        HOST,
                        lv.port,
                        lv.t.path,
                        lv.t.api,
                        f"bench-n{CFG.held_events}-d{CFG.held_delay_ms:g}",
                        lv.t.fmt,
                        CFG.held_events,
                        CFG.held_delay_ms,
                        n,
                        CFG.held_ramp_s,
                        CFG.stream_timeout,
                    )
                h["rss_peak_kb"] = rs.peak if lv.sid else None
                lv.res["held"][str(n)] = h
            lv.res["rss_end_kb"] = session_rss_kb(lv.sid) if lv.sid else None
            stop_phase(lv)
    finally:
        for lv in lives:
            stop_phase(lv)
            if lv.res and not lv.entry.get("skip"):
                lv.entry["res"] = lv.res


def system_info(use_wrk: bool, pin_desc: str) -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mitm = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "mitmdump"), "--version"], capture_output=True, text=True, timeout=60
    ).stdout
    mitm_v = re.search(r"Mitmproxy:\s*(\S+)", mitm)
    py_v = re.search(r"Python:\s*(\S+)", mitm)
    wrk_v = ""
    if use_wrk:
        r = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk_v = (r.stdout + r.stderr).split("Copyright")[0].strip()
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "addon"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    mem_kb = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": mitm_v.group(1) if mitm_v else "?",
        "mitmproxy_python": py_v.group(1) if py_v else "?",
        "load_generator": (
            f"{wrk_v or 'wrk'} (`-t1`, keep-alive)"
            if use_wrk
            else "the Python asyncio client ("
            + ("BENCH_NO_WRK=1" if shutil.which("wrk") else "wrk not found")
            + "; slower than wrk, so the floor's req/s measures the client)"
        ),
        "pinning": pin_desc,
        "commit": commit + (" (addon/ modified)" if dirty else ""),
        "quick": QUICK,
    }


async def main_async() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    use_wrk = bool(shutil.which("wrk")) and os.environ.get("BENCH_NO_WRK", "") in ("", "0")
    proxy_prefix, load_prefix, pin_desc = pinning()
    info = system_info(use_wrk, pin_desc)
    info["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(
        f"[bench] {'QUICK ' if QUICK else ''}run: {info['cpu']}, nproc={info['nproc']}, "
        f"{info['load_generator']}; {pin_desc}",
        flush=True,
    )

    wait_quiet = float(os.environ.get("BENCH_WAIT_QUIET", "0") or 0)
    if wait_quiet > 0:
        t_end = time.monotonic() + wait_quiet
        while time.monotonic() < t_end and float(machine_load().get("loadavg", ["0"])[0]) > 1.0:
            print(f"[bench] waiting for a quieter machine (load {machine_load().get('loadavg')}) ...", flush=True)
            time.sleep(10)
    load = machine_load()
    if float(load.get("loadavg", ["0"])[0]) > 1.0:
        print(
            f"[bench] note: the machine is busy (load average {' '.join(load['loadavg'])}); wall-clock "
            "figures will be noisy. BENCH_WAIT_QUIET=600 waits (bounded) for a quieter moment.",
            flush=True,
        )

    up_port = free_port()
    results: dict = {"info": info, "cfg": CFG.__dict__, "targets": []}
    t_start = time.monotonic()
    results["load_before"] = machine_load()
    up = Proc(
        "upstream",
        [*load_prefix, sys.executable, str(BENCH / "upstream.py"), "--port", str(up_port), "--max-seconds", "1800"],
    )
    try:
        if not wait_port(up_port, up, 15):
            print(f"[bench] the fake upstream did not start:\n{up.tail()}", file=sys.stderr)
            return 1
        results["upstream_cmd"] = " ".join(shlex.quote(c) for c in up.cmd)
        targets = make_targets(up_port, proxy_prefix)
        entries = []
        for t in targets:
            entry: dict = {
                "key": t.key,
                "label": t.label,
                "api": t.api,
                "path": t.path,
                "note": t.note,
                "version": t.version,
                "cmd": " ".join(shlex.quote(c) for c in t.cmd) if t.cmd else "",
                "stream_cmd": " ".join(shlex.quote(c) for c in t.stream_cmd) if t.stream_cmd else "",
                "skip": t.skip,
            }
            if t.skip:
                print(f"[bench] {t.key}: skipped ({t.skip})", flush=True)
            entries.append(entry)
        results["targets"] = entries
        await run_all(targets, entries, use_wrk, load_prefix)
        results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    finally:
        up.stop()
        results["load_after"] = machine_load()

    (OUT / ("results-quick.json" if QUICK else "results.json")).write_text(json.dumps(results, indent=1))
    md = render(results)
    dest = OUT / "RESULTS-quick.md" if QUICK else BENCH / "RESULTS.md"
    dest.write_text(md)
    print(md)
    print(f"[bench] wrote {dest.relative_to(ROOT)} in {results.get('elapsed_s', '?')} s", flush=True)
    return 0


# -- report ----------------------------------------------------------------------------------


def f(x, nd: int = 2, unit: str = "") -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}{unit}"
        return f"{x:.{nd}f}{unit}"
    return f"{x:,}{unit}"


def ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def added(a, b) -> str:
    if a is None or b is None:
        return "—"
    return f"{a - b:+.2f}"


def rng(r) -> str:
    if not r or r[0] == r[1]:
        return ""
    return f" ({f(float(r[0]), 0)}–{f(float(r[1]), 0)})"


def kept(rl: dict) -> str:
    """Inter-arrival times preserved: (almost) no bunched events and a small median gap error."""
    pairs, co, e50 = rl.get("gap_pairs"), rl.get("coalesced"), rl.get("gap_error_p50_ms")
    if not pairs or co is None or e50 is None:
        return "—"
    ok = co <= 0.01 * pairs and e50 <= 0.25 * rl.get("gap_nominal_ms", 0)
    return f"{'yes' if ok else 'no'} ({co}/{pairs})"


def mb(kb) -> str:
    return "—" if not kb else f"{kb / 1024:.0f}"


def render(results: dict) -> str:
    info = results["info"]
    cfg = results["cfg"]
    rows = [t for t in results["targets"] if "res" in t]
    by = {t["key"]: t["res"] for t in rows}
    floor = by.get("direct")
    mitm = by.get("mitmdump")

    def g(res, *keys):
        for k in keys:
            if res is None:
                return None
            res = res.get(k) if isinstance(res, dict) else None
        return res

    L: list[str] = []
    L.append("# Benchmark results" + (" (QUICK mode: indicative only)" if info["quick"] else ""))
    L.append("")
    L.append(
        f"Written by `bench/run.py` on {info['date_utc']}, in {results.get('elapsed_s', '?')} s. "
        "Re-run with `make bench` (exact command below). Numbers from one run on a shared VM: "
        "expect ±15 % between runs; compare rows of the same run."
    )
    L.append("")
    L.append("## Machine and versions")
    L.append("")
    L.append(f"- CPU: {info['cpu']}, nproc = {info['nproc']}, {info['mem_gib']} GiB RAM, Linux {info['kernel']}")
    L.append(f"- Pinning: {info['pinning']}")
    L.append(
        f"- mitmproxy {info['mitmproxy']} on Python {info['mitmproxy_python']}; harness on Python {info['python']}"
    )
    L.append(
        f"- Load generator: {info['load_generator']} for non-streaming requests; "
        "the Python asyncio raw-socket client (bench/client.py) for streams"
    )
    peers = [t for t in results["targets"] if t["key"] in PEER_SPECS]
    for t in peers:
        L.append(
            f"- {t['key']} {t['version'] or PEER_SPECS[t['key']].split('==')[1]} from PyPI, own venv in bench/.peers/"
        )
    L.append(f"- Project commit: {info['commit']}; open files limit {info.get('nofile')}")
    lb, la = results.get("load_before", {}), results.get("load_after", {})
    if lb or la:
        L.append(
            f"- Other work on the machine: load average {' '.join(lb.get('loadavg', []))} before, "
            f"{' '.join(la.get('loadavg', []))} after; CPU pressure (PSI some avg60) "
            f"{lb.get('cpu_pressure_some_avg60', '?')} % before, {la.get('cpu_pressure_some_avg60', '?')} % after. "
            "A load well above 0 means other processes shared the CPUs: wall-clock figures are then noisier "
            "(rows are interleaved so they share the noise), CPU per request/event much less so."
        )
    L.append(f"- Command: `{'BENCH_QUICK=1 ' if info['quick'] else ''}make bench` (= `.venv/bin/python bench/run.py`)")
    L.append("")

    L.append("## Non-streaming chat: latency and throughput")
    L.append("")
    L.append(
        f'One request/response per round trip on a keep-alive connection, `"stream": false`. '
        f"Each figure is the median of {cfg['rounds']} interleaved round(s) of {cfg['wrk_seconds']:g} s "
        "(req/s: min–max in brackets). *added* = this row's p50 minus the floor's p50, *over mitmdump* "
        "minus row 2's; ×floor and ×mitmdump are plain ratios. *CPU ms/req*: the proxy's CPU time per "
        "request over the c=1, c=20 and c=50 rounds (steadier than wall-clock figures on a shared machine)."
    )
    L.append("")
    L.append(
        "| setup | route | c=1 p50 ms | c=1 p99 ms | added p50 ms | over mitmdump ms | p50 ×mitmdump "
        "| c=20 req/s | ×mitmdump | c=50 req/s | req/s ×floor | ×mitmdump "
        "| proxy CPU ms/req c=1 · c=20 · c=50 | CPU ×mitmdump | errors |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in rows:
        r = t["res"]
        p50, p99, rps20, rps = g(r, "c1", "p50_ms"), g(r, "c1", "p99_ms"), g(r, "c20", "rps"), g(r, "c50", "rps")
        errs = sum(g(r, c, "errors") or 0 for c in ("c1", "c20", "c50"))
        cpu = " · ".join(f(g(r, c, "cpu_ms_per_req")) for c in ("c1", "c20", "c50"))
        cpu_ratio = " · ".join(
            ratio(g(r, c, "cpu_ms_per_req"), g(mitm, c, "cpu_ms_per_req")) for c in ("c1", "c20", "c50")
        )
        L.append(
            f"| {t['label']} | `{t['path']}` | {f(p50)} | {f(p99)} | "
            f"{added(p50, g(floor, 'c1', 'p50_ms')) if t['key'] != 'direct' else '—'} | "
            f"{added(p50, g(mitm, 'c1', 'p50_ms')) if t['key'] not in ('direct', 'mitmdump') else '—'} | "
            f"{ratio(p50, g(mitm, 'c1', 'p50_ms'))} | "
            f"{f(rps20)}{rng(g(r, 'c20', 'rps_range'))} | {ratio(rps20, g(mitm, 'c20', 'rps'))} | "
            f"{f(rps)}{rng(g(r, 'c50', 'rps_range'))} | {ratio(rps, g(floor, 'c50', 'rps'))} | {ratio(rps, g(mitm, 'c50', 'rps'))} | "
            f"{cpu} | {cpu_ratio} | {errs} |"
        )
    L.append("")

    L.append("## Streaming")
    L.append("")
    L.append(
        f"- **Relay delay**: {cfg['relay_streams'] * cfg['rounds']} stream(s) of {cfg['relay_events']} content events, "
        f"{cfg['relay_delay_ms']:g} ms apart, one at a time; per event, client read time − upstream write "
        "time (same monotonic clock). *Inter-arrival error*: |client gap − upstream gap| between "
        "consecutive events; *coalesced*: events that arrived < 20 % of their upstream gap after the "
        "previous one (i.e. were held back and bunched)."
    )
    L.append(
        f"- **TTFT**: request sent → first content event read, {cfg['ttft_requests'] * cfg['rounds']} streams "
        "(upstream sends its first token at once)."
    )
    L.append(
        f"- **Events/s**: {cfg['tput_streams']} concurrent streams × {cfg['tput_events']} events with no "
        "delay; content events the client received per second of wall time, and the proxy's CPU time "
        f"per event (each the median of {cfg.get('tput_rounds', cfg['rounds'])} interleaved round(s))."
    )
    L.append(f"- Relay and TTFT streams are interleaved across setups in {cfg['rounds']} round(s) and pooled.")
    L.append("")
    L.append(
        "| setup | relay p50 / p99 ms | added relay p50 ms | relay p50 ×mitmdump | inter-arrival error p50 / p99 ms "
        "| timing kept? (coalesced) | TTFT p50 / p99 ms | added TTFT p50 ms | TTFT ×mitmdump | events/s | ×floor | ×mitmdump "
        "| proxy CPU µs/event | CPU ×mitmdump | errors |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in rows:
        r = t["res"]
        rl, tt, tp = r.get("relay", {}), r.get("ttft", {}), r.get("tput", {})
        errs = (rl.get("errors") or 0) + (tt.get("errors") or 0) + (tp.get("errors") or 0)
        L.append(
            f"| {t['label']} | {f(rl.get('relay_p50_ms'))} / {f(rl.get('relay_p99_ms'))} | "
            f"{added(rl.get('relay_p50_ms'), g(floor, 'relay', 'relay_p50_ms')) if t['key'] != 'direct' else '—'} | "
            f"{ratio(rl.get('relay_p50_ms'), g(mitm, 'relay', 'relay_p50_ms'))} | "
            f"{f(rl.get('gap_error_p50_ms'))} / {f(rl.get('gap_error_p99_ms'))} | "
            f"{kept(rl)} | "
            f"{f(tt.get('ttft_p50_ms'))} / {f(tt.get('ttft_p99_ms'))} | "
            f"{added(tt.get('ttft_p50_ms'), g(floor, 'ttft', 'ttft_p50_ms')) if t['key'] != 'direct' else '—'} | "
            f"{ratio(tt.get('ttft_p50_ms'), g(mitm, 'ttft', 'ttft_p50_ms'))} | "
            f"{f(tp.get('events_per_s'))} | {ratio(tp.get('events_per_s'), g(floor, 'tput', 'events_per_s'))} | "
            f"{ratio(tp.get('events_per_s'), g(mitm, 'tput', 'events_per_s'))} | "
            f"{f(tp.get('cpu_us_per_event'), 1)} | {ratio(tp.get('cpu_us_per_event'), g(mitm, 'tput', 'cpu_us_per_event'))} | {errs} |"
        )
    L.append("")

    L.append("## Concurrent streams held")
    L.append("")
    L.append(
        f"N streams opened over {cfg['held_ramp_s']:g} s, each {cfg['held_events']} events "
        f"{cfg['held_delay_ms']:g} ms apart (≈{cfg['held_events'] * cfg['held_delay_ms'] / 1000:g} s open), "
        "each on a fixed schedule of the upstream's with a phase of its own (bench/README.md: the upstream "
        "writes as evenly whichever proxy opened the streams). "
        "*ok/err*: streams that got every event and the final done line / the rest. *open*: the most "
        "streams that were open at once. Relay delay over *all* events, and *steady*: only events written "
        "after every stream had received its first one (all connections set up), which separates holding "
        "streams from opening them; ×mitmdump is the steady p50 over row 2's. RSS is the proxy process's "
        "(with children), sampled every 100 ms: idle after warm-up, and the peak during that level."
    )
    L.append("")
    levels = [str(n) for n in cfg["held_levels"]]
    head = (
        "| setup | idle RSS MB | "
        + " | ".join(
            f"{n}: ok/err | {n}: open | {n}: relay p50/p99 ms, all · steady (×mitmdump) | {n}: peak RSS MB"
            for n in levels
        )
        + " |"
    )
    L.append(head)
    L.append("|---|---|" + "---|" * (4 * len(levels)))
    mitm_held: dict[str, dict] = next((t["res"].get("held", {}) for t in rows if t["key"] == "mitmdump"), {})
    for t in rows:
        r = t["res"]
        cells = [t["label"], mb(r.get("rss_idle_stream_kb") or r.get("rss_idle_kb"))]
        for n in levels:
            h = r.get("held", {}).get(n, {})
            cells += [
                f"{h.get('ok', '—')}/{h.get('errors', '—')}",
                str(h.get("peak_open", "—")),
                f"{f(h.get('relay_p50_ms'))} / {f(h.get('relay_p99_ms'))} · "
                f"{f(h.get('steady_p50_ms'))} / {f(h.get('steady_p99_ms'))} "
                f"({ratio(h.get('steady_p50_ms'), mitm_held.get(n, {}).get('steady_p50_ms'))})",
                mb(h.get("rss_peak_kb")),
            ]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append(
        "Peak RSS (MB) in the other phases: "
        + "; ".join(
            f"{t['key']}: c=50 {mb(t['res'].get('rss_c50_kb'))}, events/s {mb(t['res'].get('rss_tput_kb'))}"
            for t in rows
            if t["res"].get("rss_idle_kb")
        )
        + "."
    )
    L.append("")

    error_lines: list[str] = []
    for t in rows:
        r = t["res"]
        for phase in ("c1", "c20", "c50", "relay", "ttft", "tput"):
            ek = g(r, phase, "error_kinds")
            if ek:
                error_lines.append(f"- {t['key']} {phase}: {ek}")
        for n, h in r.get("held", {}).items():
            if h.get("error_kinds"):
                error_lines.append(f"- {t['key']} {n} streams: {h['error_kinds']}")
        if t.get("died"):
            error_lines.append(f"- {t['key']} exited during the run: {t['died'][-300:]!r}")
    if error_lines:
        L.append("## Errors seen")
        L.append("")
        L += error_lines
        L.append("")

    L.append("## Setups and how each was started")
    L.append("")
    L.append(f"- fake upstream: `{results.get('upstream_cmd', '')}`")
    for t in results["targets"]:
        line = f"- **{t['label']}** — {t['note']}."
        if t.get("cmd"):
            line += f" `{t['cmd']}`"
        if t.get("stream_cmd"):
            line += f"; streaming phases: `{t['stream_cmd']}`"
        if t.get("startup_s") is not None:
            line += f" (listening after {t['startup_s']} s)"
        if t.get("skip"):
            line += f" **Not measured: {t['skip']}**"
        L.append(line)
    c1 = next((g(t["res"], "c1", "cmd") for t in rows if g(t["res"], "c1", "cmd")), None)
    if c1:
        L.append(f"- wrk, e.g.: `BENCH_BODY='<json>' {c1}`")
    L.append("")
    return "\n".join(L)


def main() -> int:
    try:
        return asyncio.run(main_async())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
