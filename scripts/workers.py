"""Run N proxy processes behind HAProxy: one Ollama endpoint that uses more than one core.

mitmproxy handles every request of a process on one core. This starts N `mitmdump -s
addon/proxy.py` workers on 127.0.0.1 (ports PORT+1 … PORT+N) and HAProxy on HOST:PORT in front of
them, balancing each request to the worker with the fewest open ones (streams included), and
stops them all together. Any extra arguments go to every worker, but `metrics_listen=HOST:PORT`:
worker i gets HOST:PORT+i-1 (a process has its own counters, scraped on its own), and HAProxy
then checks each worker's readiness there (GET /ready) rather than GET /api/version. With N = 1 it is what `make run`
starts with the upstream pool: HAProxy keeps its connections to the worker warm, so clients that
open a new connection for every request cost mitmproxy no new connection.

    python scripts/workers.py --workers 2 --host 127.0.0.1 --port 11434 [-- --set upstream_timeout=60]
    make run WORKERS=2

HAProxy comes from the system (`apt-get install haproxy`); it is told to use no file but the
configuration this writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MITMDUMP = Path(sys.executable).parent / "mitmdump"

HAPROXY_CONFIG = """\
global
    maxconn {maxconn}
    log stderr format short local0 notice

defaults
    mode http
    log global
    option dontlognull
    timeout connect 5s
    # Long answers and slow streams are the workers' to judge (their upstream_timeout).
    timeout client 1h
    timeout server 1h
    timeout http-keep-alive 60s
    option http-keep-alive

frontend ollama
    bind {host}:{port}
    default_backend workers

backend workers
    balance leastconn
    option httpchk GET {check_path}
    # A worker that asks for a client key (ollama_api_key, [keys]) answers the keyless check 401: alive.
    http-check expect rstatus ^(200|401)$
    # Requests of new client connections go over warm connections to the workers: a worker then
    # pays no new-connection cost in mitmproxy (~2 ms of CPU each) for clients that do not keep
    # their connection alive (bench/RESULTS-pool.md). A warm connection that a worker closed just
    # as it was reused fails before any answer: that request is sent once more, on a new one.
    http-reuse always
    retries 1
    retry-on conn-failure empty-response
{servers}
"""


def wait_for(port: int, processes: list[subprocess.Popen], host: str = "127.0.0.1", seconds: float = 30) -> None:
    address = "127.0.0.1" if host in ("0.0.0.0", "") else host
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a process exited during start-up")
        try:
            socket.create_connection((address, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {address}:{port} after {seconds} s")


def start(
    workers: int, host: str, port: int, extra: list[str], folder: Path, log_files: bool = False
) -> list[subprocess.Popen]:
    """Start the workers and HAProxy; the processes, HAProxy last. Logs go to the terminal, or to
    `folder/worker-N.log` with `log_files`."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise SystemExit("error: haproxy is needed for WORKERS > 1: apt-get install haproxy")
    processes: list[subprocess.Popen] = []
    try:
        return _start(haproxy, workers, host, port, extra, folder, processes, log_files)
    except BaseException:
        stop(processes)
        raise


def per_worker(extra: list[str], number: int) -> tuple[list[str], int | None, str]:
    """The arguments of worker `number` (1, 2, ...): a `metrics_listen=HOST:PORT` among them becomes
    HOST:PORT+number-1, a port of the worker's own (each worker is a process with its own metrics);
    and that port (None without metrics) and host, where HAProxy checks the worker's readiness (GET /ready)."""
    out: list[str] = []
    metrics_port, metrics_host = None, "127.0.0.1"
    for arg in extra:
        name, sep, value = arg.partition("=")
        host, colon, port = value.rpartition(":")
        if name == "metrics_listen" and sep and colon and port.isdigit():
            metrics_port, metrics_host = int(port) + number - 1, host.strip("[]")
            arg = f"metrics_listen={host}:{metrics_port}"
        out.append(arg)
    return out, metrics_port, metrics_host


def _start(
    haproxy: str,
    workers: int,
    host: str,
    port: int,
    extra: list[str],
    folder: Path,
    processes: list[subprocess.Popen],
    log_files: bool,
) -> list[subprocess.Popen]:
    servers = []
    for number in range(1, workers + 1):
        worker_port = port + number
        worker_extra, metrics_port, _ = per_worker(extra, number)
        processes.append(
            subprocess.Popen(
                [
                    str(MITMDUMP),
                    "-s",
                    str(ROOT / "addon" / "proxy.py"),
                    "--mode",
                    f"reverse:http://127.0.0.1:{worker_port}",
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    str(worker_port),
                    # quiet per flow unless the arguments say otherwise (mitmdump takes one flow_detail)
                    *(() if any(a.startswith("flow_detail=") for a in extra) else ("--set", "flow_detail=0")),
                    *worker_extra,
                ],
                start_new_session=True,
                stdout=(folder / f"worker-{number}.log").open("wb") if log_files else None,
                stderr=subprocess.STDOUT if log_files else None,
            )
        )
        # One worker has nothing to balance to: no health check (and no log line every 2 s).
        # With metrics_listen, the check is the worker's readiness on its metrics port (addon/status_listener.py).
        check = " check inter 2s" + (f" port {metrics_port}" if metrics_port is not None else "")
        servers.append(f"    server worker{number} 127.0.0.1:{worker_port}" + (check if workers > 1 else ""))
    for number in range(workers):
        wait_for(port + number + 1, processes)
        # The metrics listener opens once the addon is loaded (mitmproxy may listen on the proxy port
        # before): HAProxy's first check of a worker must find it.
        _, metrics_port, metrics_host = per_worker(extra, number + 1)
        if metrics_port is not None:
            wait_for(metrics_port, processes, metrics_host)
    config = folder / "haproxy.cfg"
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = max(256, (open_files - 64) // 2)  # each proxied connection holds two descriptors
    config.write_text(
        HAPROXY_CONFIG.format(
            host=host,
            port=port,
            servers="\n".join(servers),
            maxconn=maxconn,
            check_path="/ready" if per_worker(extra, 1)[1] is not None else "/api/version",
        )
    )
    processes.append(subprocess.Popen([haproxy, "-db", "-f", str(config)], start_new_session=True))
    wait_for(port, processes, host)
    return processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("extra", nargs="*", help="arguments for every mitmdump worker (after --)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="ollama-proxy-workers-") as folder:
        try:
            processes = start(args.workers, args.host, args.port, args.extra, Path(folder))
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        ports = f"{args.port + 1}" if args.workers == 1 else f"{args.port + 1}-{args.port + args.workers}"
        print(
            f"Ollama API on http://{args.host}:{args.port}: HAProxy in front of {args.workers} "
            f"worker{'s' if args.workers > 1 else ''} on 127.0.0.1:{ports}",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            print("error: a worker or HAProxy stopped; stopping the rest", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            stop(processes)


if __name__ == "__main__":
    sys.exit(main())
