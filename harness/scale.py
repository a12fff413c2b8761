"""Three proxy hosts behind HAProxy on a test network of network namespaces (`make test-scale`).

`ScaleNet` builds, on this machine only, a bridge in a namespace of its own (`ollama-scale-net`)
and one namespace per machine, each joined to the bridge by a veth pair and given an address of
the benchmarking range 198.18.0.0/24 (RFC 2544), which exists only inside those namespaces:

    ollama-scale-lb   198.18.0.1   HAProxy (:11434, health checks on each host's GET /ready) and the load
    ollama-scale-up   198.18.0.2   the fake OpenAI upstream (harness/upstream.py) on :8000
    ollama-scale-h1…3 198.18.0.11…13  one `mitmdump -s addon/proxy.py` each: Ollama on :11434,
                                   metrics_listen on :9464, the same catalog (a named key) on every host

Nothing is routed to or from the machine's own namespace; HAProxy's runtime API is a unix socket
in a temporary folder, which the test reads (`show stat`) and drives (`disable server`). Every
namespace is deleted, with every process in it, on every way out (`close`, also called by the
test's `finally`), and any left by an earlier run that was killed is removed first (`clean`).

The same module is the programs run inside the namespaces: `python -m harness.scale upstream
HOST PORT DELAY` (the fake upstream on that address, pausing DELAY seconds between stream events)
and `python -m harness.scale load URL KEY SECONDS CONCURRENCY STREAM OUT` (a bounded load: each
request's start, end, outcome and serving host as one JSON line in OUT).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT

PREFIX = "ollama-scale-"
NET = "198.18.0"  # RFC 2544's benchmarking range: only inside the test's namespaces
LB, UPSTREAM = f"{NET}.1", f"{NET}.2"
HOSTS = {f"h{n}": f"{NET}.{10 + n}" for n in (1, 2, 3)}
OLLAMA_PORT, METRICS_PORT, UPSTREAM_PORT = 11434, 9464, 8000
CHECK_INTERVAL_MS = 500  # HAProxy's health check interval; a host is down after 2 failed checks
TEAM_KEY = "scale-team-key-0123456789"
PYTHON = sys.executable
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")

HAPROXY_CONFIG = """\
global
    maxconn 2048
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    # A request whose host is gone before it answered anything goes to another host.
    option redispatch
    retries 2
    retry-on conn-failure empty-response

frontend ollama
    bind {lb}:{port}
    default_backend proxies

backend proxies
    balance leastconn
    option httpchk GET /ready
    http-check expect status 200
    http-response set-header X-Served-By %s
    default-server check port {metrics_port} inter {interval}ms fall 2 rise 2
{servers}
"""

CATALOG = """\
[keys.team]
key_env = "TEAM_KEY"
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespaces() -> list[str]:
    listing = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listing if line.startswith(PREFIX)]


def clean() -> None:
    """Remove every namespace of this test (left by an earlier run, or this one's), and the processes in it."""
    for name in namespaces():
        pids = ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "delete", name, check=False)


@dataclass
class Stat:
    """One server's line of HAProxy's `show stat`."""

    status: str  # UP, DOWN, MAINT, "UP 1/2" ...
    sessions: int  # stot: connections HAProxy made to it, in all


class ScaleNet:
    """The namespaces, the upstream, three hosts and HAProxy; `close` removes all of it."""

    def __init__(self, folder: Path, stream_delay: float = 0.1) -> None:
        self.folder = folder
        self.stream_delay = stream_delay
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.socket = folder / "haproxy.sock"
        (folder / "catalog.toml").write_text(CATALOG)

    # -- the network ------------------------------------------------------------------------------

    def build(self) -> None:
        clean()
        bridge = PREFIX + "net"
        ip("netns", "add", bridge)
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "link", "set", "br0", "up")
        for name, address in {"lb": LB, "up": UPSTREAM, **HOSTS}.items():
            namespace = PREFIX + name
            ip("netns", "add", namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
            # Both ends are made inside the bridge's namespace: nothing of it ever is in the machine's own.
            ip("-n", bridge, "link", "add", f"v-{name}", "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("-n", bridge, "link", "set", f"v-{name}", "master", "br0", "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        clean()

    # -- processes ----------------------------------------------------------------------------------

    def run_in(
        self, name: str, args: Sequence[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process in namespace PREFIX+name (`ip netns exec` execs it: its pid is the process's)."""
        environment = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        environment.pop("OPENAI_API_KEY", None)
        environment.update(env or {})
        out = (self.folder / log).open("ab")
        process = subprocess.Popen(
            ["ip", "netns", "exec", PREFIX + name, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
        out.close()
        return process

    def start_upstream(self) -> None:
        args = [PYTHON, "-m", "harness.scale", "upstream", UPSTREAM, str(UPSTREAM_PORT), str(self.stream_delay)]
        self.processes["up"] = self.run_in("up", args, "upstream.log")

    def start_host(self, name: str) -> None:
        address = HOSTS[name]
        args = [
            MITMDUMP, "-s", str(ROOT / "addon" / "proxy.py"),
            "--mode", f"reverse:http://{address}:{OLLAMA_PORT}",
            "--listen-host", address, "--listen-port", str(OLLAMA_PORT),
            "--set", f"openai_base_url=http://{UPSTREAM}:{UPSTREAM_PORT}/v1",
            "--set", f"metrics_listen={address}:{METRICS_PORT}",
            "--set", f"model_catalog={self.folder / 'catalog.toml'}",
            "--set", "flow_detail=0",
        ]  # fmt: skip
        self.processes[name] = self.run_in(name, args, f"{name}.log", {"TEAM_KEY": TEAM_KEY})

    def kill_host(self, name: str) -> None:
        """As a machine that dies: SIGKILL, no goodbye to anyone."""
        process = self.processes[name]
        process.kill()
        process.wait(5)

    def start_haproxy(self) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        servers = "\n".join(f"    server {name} {address}:{OLLAMA_PORT}" for name, address in HOSTS.items())
        config = self.folder / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                socket=self.socket,
                lb=LB,
                port=OLLAMA_PORT,
                metrics_port=METRICS_PORT,
                interval=CHECK_INTERVAL_MS,
                servers=servers,
            )
        )
        self.processes["haproxy"] = self.run_in("lb", [haproxy, "-db", "-f", str(config)], "haproxy.log")

    def start(self) -> None:
        self.build()
        self.start_upstream()
        for name in HOSTS:
            self.start_host(name)
        self.start_haproxy()

    # -- HAProxy's runtime API ----------------------------------------------------------------------

    def command(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, Stat]:
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "proxies" and row.get("svname") in HOSTS:
                found[row["svname"]] = Stat(row["status"], int(row["stot"] or 0))
        return found

    def wait_status(self, names: Sequence[str], wanted: str, seconds: float) -> float:
        """Wait until every named server's status is `wanted` (bounded): the time it took."""
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, IndexError):
                stats = self.stats()
                if all(stats[n].status == wanted for n in names if n in stats) and all(n in stats for n in names):
                    return time.monotonic() - start
            if any(p.poll() is not None for n, p in self.processes.items() if n in ("haproxy", "up")):
                raise RuntimeError(f"HAProxy or the upstream exited: {self.logs()}")
            time.sleep(0.05)
        raise RuntimeError(f"{names} not {wanted} after {seconds} s: {self.stats()} {self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in self.folder.glob("*.log"))

    # -- inside the load balancer's namespace ----------------------------------------------------

    def load(self, seconds: float, concurrency: int, stream: bool, out: Path) -> subprocess.Popen[bytes]:
        url = f"http://{LB}:{OLLAMA_PORT}"
        args = [
            PYTHON,
            "-m",
            "harness.scale",
            "load",
            url,
            TEAM_KEY,
            str(seconds),
            str(concurrency),
            str(int(stream)),
            str(out),
        ]
        return self.run_in("lb", args, "load.log")

    def scrape(self, name: str) -> str:
        """A host's /metrics, fetched from the load balancer's namespace."""
        url = f"http://{HOSTS[name]}:{METRICS_PORT}/metrics"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        done = subprocess.run(
            ["ip", "netns", "exec", PREFIX + "lb", PYTHON, "-c", code], capture_output=True, text=True, timeout=30
        )
        return done.stdout


# -- the programs run inside the namespaces ------------------------------------------------------


def serve_upstream(host: str, port: int, delay: float) -> None:
    from harness.upstream import FakeOpenAI, UpstreamServer

    fake = FakeOpenAI()
    fake.event_delay = delay
    with UpstreamServer(fake, host=host, port=port):
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def run_load(url: str, key: str, seconds: float, concurrency: int, stream: bool, out: Path) -> None:
    """`concurrency` clients, each sending requests one after the other (a connection each, kept
    alive) until `seconds` have passed; one JSON line per request."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    words = " ".join(f"word{i}" for i in range(10))  # the fake upstream streams them back one event each
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": words}]})
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    deadline = time.time() + seconds
    lock = threading.Lock()
    results = out.open("w")

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        while time.time() < deadline:
            start = time.time()
            served, error = "", ""
            try:
                connection.request("POST", "/api/chat", body, headers)
                response = connection.getresponse()
                served = response.getheader("x-served-by") or ""
                data = response.read()
                last = json.loads(data.splitlines()[-1]) if data.strip() else {}
                if response.status != 200 or not last.get("done") or "error" in last:
                    error = f"{response.status} {data[-200:]!r}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                error = f"{type(e).__name__}: {e}"
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
            line = {"start": start, "end": time.time(), "served": served, "error": error}
            with lock:
                results.write(json.dumps(line) + "\n")
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.close()


def read_results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["upstream"]:
        serve_upstream(argv[1], int(argv[2]), float(argv[3]))
        return 0
    if argv[:1] == ["load"]:
        run_load(argv[1], argv[2], float(argv[3]), int(argv[4]), argv[5] == "1", Path(argv[6]))
        return 0
    print("usage: python -m harness.scale upstream HOST PORT DELAY | load URL KEY SECONDS CONCURRENCY STREAM OUT")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
