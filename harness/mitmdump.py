"""A real `mitmdump -s addon/proxy.py` process for tests and the collector, and the ports it needs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from addon.pool import find_haproxy
from harness import ROOT

MITMDUMP = Path(sys.executable).parent / "mitmdump"


# The live tier's proxies go through the upstream pool where HAProxy is installed (CI installs it), as
# a deployment should have it: llama.cpp's router closes connections after answers, and the pool drops
# an idle connection as soon as the upstream closes it (it retries only a failed connect: issue 21 §9).
LOCAL_MODEL_POOL: tuple[str, ...] = ("upstream_pool=all",) if find_haproxy() else ()
# What `make run` adds for the local model: its catalog (context, capabilities, the answer length that
# bounds a base model's turn), and the pool above.
LOCAL_CATALOG = ROOT / "scripts" / "local-models.toml"
LOCAL_MODEL: tuple[str, ...] = (f"model_catalog={LOCAL_CATALOG}", *LOCAL_MODEL_POOL)


def local_model_stop(model: str) -> list[str]:
    """The stop sequences the local catalog gives a model (the proxy sends them with a request that has none):
    what a request sent straight to the model server needs to be the same request."""
    with LOCAL_CATALOG.open("rb") as f:
        return list(tomllib.load(f)["models"][model].get("stop", []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_block(size: int) -> int:
    """A port such that it and the next `size - 1` can all be bound now (none is a client's source port)."""
    while True:
        port = free_port()
        sockets = [socket.socket() for _ in range(size)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


class Mitmdump:
    """A real `mitmdump -s addon/proxy.py` process; its output goes to a log file for assertions."""

    def __init__(
        self,
        tmp: Path,
        mode: str,
        *settings: str,
        port: int | None = None,
        scripts: list[Path] | tuple[Path, ...] = (),
        extra_args: list[str] | tuple[str, ...] = (),
        listen_host: str | None = "127.0.0.1",
        program: Path = MITMDUMP,
        extra: tuple[str, ...] = (),
        environment: dict[str, str] | None = None,
        script: Path = ROOT / "addon" / "proxy.py",
    ) -> None:
        self.port = port or free_port()
        self.log_path = tmp / f"mitmdump-{self.port}.log"
        mode_arg = f"reverse:http://127.0.0.1:{self.port}" if mode == "reverse" else mode
        self.args = [
            str(program),
            "-s",
            str(script),
            "--mode",
            mode_arg,
            *(("--listen-host", listen_host) if listen_host is not None else ()),
            "--listen-port",
            str(self.port),
            *[a for script in scripts for a in ("-s", str(script))],
            *(() if any(s.startswith("flow_detail=") for s in settings) else ("--set", "flow_detail=0")),
            *[a for s in settings for a in ("--set", s)],
            *extra_args,
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.pop("OPENAI_API_KEY", None)
        env.pop("OPENAI_BASE_URL", None)
        env.update(environment or {})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"mitmdump did not start ({e}): {self.log()}") from None

    def wait_ready(self, seconds: float = 20) -> None:
        """Wait until mitmproxy says it listens: its port accepts connections a little earlier, before
        its TLS certificate store is loaded (a TLS client then would stop it)."""
        deadline = time.monotonic() + seconds
        while "listening at" not in self.log():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"mitmdump is not ready after {seconds} s: {self.log()[-2000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the process; an addon error it logged fails the test that used it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()
            if "Addon error" in self.log() or "Traceback" in self.log():
                pytest.fail(f"mitmdump logged an error:\n{self.log()[-3000:]}")
