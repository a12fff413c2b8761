"""Shared fixtures: a fake OpenAI upstream on loopback and real mitmdump processes running the addon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from upstream import FakeOpenAI, UpstreamServer  # noqa: E402

ROOT = Path(__file__).parent.parent
MITMDUMP = Path(sys.executable).parent / "mitmdump"
TEST_KEY = "sk-test-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 20) -> None:
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

    def __init__(self, tmp: Path, mode: str, *settings: str, port: int | None = None, scripts: list[Path] = (),
                 extra_args: list[str] = (), listen_host: str | None = "127.0.0.1", program: Path = MITMDUMP,
                 extra: tuple[str, ...] = (), environment: dict[str, str] | None = None,
                 script: Path = ROOT / "addon" / "proxy.py") -> None:
        self.port = port or free_port()
        self.log_path = tmp / f"mitmdump-{self.port}.log"
        mode_arg = f"reverse:http://127.0.0.1:{self.port}" if mode == "reverse" else mode
        self.args = [
            str(program), "-s", str(script),
            "--mode", mode_arg, *(("--listen-host", listen_host) if listen_host is not None else ()),
            "--listen-port", str(self.port),
            *[a for script in scripts for a in ("-s", str(script))],
            *(() if any(s.startswith("flow_detail=") for s in settings) else ("--set", "flow_detail=0")),
            *[a for s in settings for a in ("--set", s)], *extra_args, *extra,
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


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(FakeOpenAI()) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").fake.reset()


@pytest.fixture(scope="session")
def proxy(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    """The addon in reverse mode: a drop-in Ollama endpoint in front of the fake upstream."""
    dump = Mitmdump(tmp_path_factory.mktemp("reverse"), "reverse",
                    f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}")
    yield dump
    dump.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """Start extra mitmdump processes with their own settings; all are stopped after the test."""
    started: list[Mitmdump] = []

    def start(mode: str, *settings: str, **kwargs) -> Mitmdump:
        dump = Mitmdump(tmp_path, mode, *settings, **kwargs)
        started.append(dump)
        return dump

    yield start
    for dump in started:
        dump.stop()
