"""The pool sidecar's process: HAProxy found, started on its configuration (written 0600 in a private
folder, removed once read), watched, and stopped with the proxy (also when the proxy is killed)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets as token_maker
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import exceptions

from addon.pool.config import TOKEN_HEADER, Origin, TLSSettings, haproxy_config

START_SECONDS = 10.0


def find_haproxy() -> str | None:
    """HAProxy on PATH, or where Debian puts it (/usr/sbin is not on a normal user's PATH)."""
    found = shutil.which("haproxy")
    if found is None:
        found = next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    return found


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The kernel sends HAProxy SIGTERM when the proxy process dies, however it dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):  # no prctl: not Linux
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()  # its own session: a Ctrl-C at the terminal reaches the proxy, which stops it


class Sidecar:
    """One HAProxy process serving a pool listener per origin."""

    def __init__(self, origins: Sequence[Origin], options: Any, haproxy: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ollama-proxy-pool-"))  # mode 0700
        self.listeners = list(zip(origins, free_ports(len(origins)), strict=False))
        self.routes = {origin: ("127.0.0.1", port) for origin, port in self.listeners}
        self.config_path = self.folder / "haproxy.cfg"
        self.haproxy = haproxy
        self.process: subprocess.Popen[bytes] | None = None
        self._partial = b""
        self.token = token_maker.token_hex(32)  # (hex: nothing HAProxy's parser treats specially, no leading "-")
        self.wire = (f"{TOKEN_HEADER}: {self.token}\r\n".encode(),)  # the header line, for the wire only
        try:
            self.config = haproxy_config(
                self.listeners,
                TLSSettings.from_options(options, self.folder),
                options.upstream_pool_max_idle,
                options.upstream_pool_idle,
                self.token,
            )
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as config:
                config.write(self.config)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def check(self) -> None:
        """HAProxy's own check of the configuration (a missing CA or client certificate file, ...)."""
        out = subprocess.run(
            [self.haproxy, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True, timeout=30
        )
        if out.returncode != 0:
            raise exceptions.OptionsError(
                f"upstream_pool: HAProxy refuses its configuration: {(out.stderr or out.stdout).strip()[-1500:]}"
            )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.haproxy, "-db", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        deadline = time.monotonic() + START_SECONDS
        pending = {port for _, port in self.listeners}
        while pending and time.monotonic() < deadline and self.process.poll() is None:
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending:
                time.sleep(0.02)
        if pending:
            error = ""
            if self.process.poll() is not None and self.process.stderr is not None:
                error = self.process.stderr.read().decode("utf-8", "replace").strip()
            self.stop()
            raise RuntimeError(f"HAProxy did not start: {error[-1500:] or f'no listener after {START_SECONDS} s'}")
        assert self.process.stderr is not None  # started with stderr=PIPE
        os.set_blocking(self.process.stderr.fileno(), False)
        # HAProxy has read its files: none stays on disk, even if the proxy is killed.
        shutil.rmtree(self.folder, ignore_errors=True)

    def read_log(self) -> list[str]:
        """The complete lines HAProxy wrote to its stderr since the last call."""
        if self.process is None or self.process.stderr is None:
            return []
        try:
            data = self.process.stderr.read()
        except (BlockingIOError, ValueError, OSError):
            return []
        if not data:
            return []
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace").strip() for line in lines if line.strip()]

    def stop(self, graceful: bool = False) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            if graceful:  # finish the requests under way (bounded by hard-stop-after), then exit
                process.send_signal(signal.SIGUSR1)
            else:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if not graceful:
            shutil.rmtree(self.folder, ignore_errors=True)
            if process is not None and process.stderr is not None:
                process.stderr.close()
