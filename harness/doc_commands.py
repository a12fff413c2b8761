"""Every command block a user copies from README.md and docs/*.md, run as written (issue 22).

A block is a fenced ```sh / ```bash / ```shell block. It runs in bash (`-e -o pipefail`), in a
directory that looks like a checkout of this project (symlinks to every top-level entry of the
repository), with a fresh HOME and a small environment. Only what must differ on this machine is
changed:

- addresses: port 11434 (the proxy), 8080 (proxy mode) and 8081 (mitmweb) become free ports, and
  the upstreams a block names (`https://api.openai.com/v1`, `127.0.0.1:8000`, the catalog's
  `http://gpu1:8000/v1` and `https://openrouter.ai/api/v1`) the fake upstream (harness/upstream.py);
- by environment, so that the text stays as written: `OPENAI_BASE_URL` (the fake upstream), `PORT`
  and `WEB_PORT` (read by the Makefile), `WEB_PASSWORD`, `PYTEST_ARGS` (a `make test` inside this
  test runs one small test file, not the whole suite again);
- a server a block starts in the foreground (`make run`, `make web`, `mitmdump`, `mitmweb`), which a
  user leaves running in its own terminal, is started in the background: the block goes on once it
  answers, and the test checks it (the Ollama API answers, a chat reaches the upstream; mitmweb's UI
  answers) and stops it after the block.

A `models.toml` block on the same page (a ```toml block whose first line is `# models.toml`) is
written to the block's directory, as a user would save it, and given to the proxy the test starts
for the block's curl or agent commands; `my_ollama_app.py` (docs/clients.md's proxy mode) is a
small `ollama` SDK chat, whose answer must come back through the proxy. A block that cannot run here is marked by an HTML comment
on the line before it: `<!-- not run: why -->`; `test_docs_commands.py` fails on any other block it
cannot run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->\s*\n$", re.S)
AGENT = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*(claude|codex|opencode)\s", re.M)
SERVER = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*(?:make\s+(?:run|web)\b|\S*mitm(?:dump|web)\s)", re.M)
WEB_PASSWORD = "docs-test-password"
# The upstreams blocks and catalogs name, which are the fake upstream here.
UPSTREAM_URLS = ("https://api.openai.com/v1", "http://gpu1:8000/v1", "https://openrouter.ai/api/v1")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str
    not_run: str | None
    catalog: str | None  # the page's `# models.toml` block before this one, if any

    @property
    def id(self) -> str:
        first = next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")
        words = re.sub(r"\W+", "-", first)[:40].strip("-")
        return f"{self.page.relative_to(ROOT)}:{self.line}:{words}"

    @property
    def agent(self) -> bool:
        """Runs Claude Code, Codex CLI or opencode: the client suite's (tests/clients) to run."""
        return bool(AGENT.search(self.text))

    @property
    def starts_a_server(self) -> bool:
        return bool(SERVER.search(self.text))

    @property
    def curls(self) -> bool:
        return bool(re.search(r"^\s*curl\s", self.text, re.M))


def blocks() -> list[Block]:
    found: list[Block] = []
    for page in PAGES:
        text = page.read_text()
        catalog: str | None = None
        for m in FENCE.finditer(text):
            lang, body = m.group(1), m.group(2)
            if lang == "toml" and body.startswith("# models.toml"):
                catalog = body
            if lang not in ("sh", "bash", "shell"):
                continue
            before = NOT_RUN.search(text[max(0, m.start() - 400) : m.start()])
            line = text.count("\n", 0, m.start()) + 1
            found.append(Block(page, line, lang, body, before.group(1) if before else None, catalog))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    proxy: int
    http_proxy: int
    web: int


def substitute(text: str, ports: Ports, upstream_base: str) -> str:
    """Only what must differ here: this machine's free ports, and the fake upstream for the ones a block names."""
    host_port = upstream_base.removeprefix("http://").split("/", 1)[0]
    for url in UPSTREAM_URLS:
        text = text.replace(url, upstream_base)
    text = text.replace("127.0.0.1:8000", host_port)
    text = re.sub(r"\b11434\b", str(ports.proxy), text)
    text = re.sub(r"\b8080\b", str(ports.http_proxy), text)
    return re.sub(r"\b8081\b", str(ports.web), text)


# Defined before the block: the servers it starts keep running (as in a terminal of their own)
# while the block goes on; each is recorded in $DOCS_OUT/servers for the checks.
PRELUDE = r"""
__serve() {  # kind port command...: start a server in the background, go on once its port accepts
  local kind=$1 port=$2; shift 2
  "$@" >>"$DOCS_OUT/servers.log" 2>&1 &
  local pid=$!
  echo "$kind $port $pid" >>"$DOCS_OUT/servers"
  "$DOCS_PYTHON" -m harness.doc_commands wait "$port" "$pid" || exit 1
}
__mitm() {  # mitmdump / mitmweb: an Ollama endpoint, or an HTTP proxy in regular mode
  local port= kind=ollama prev=
  for a in "$@"; do
    [ "$prev" = --listen-port ] && port=$a
    [ "$prev" = --mode ] && [ "$a" = regular ] && kind=http-proxy
    case $a in --mode=regular) kind=http-proxy;; --listen-port=*) port=${a#*=};; esac
    prev=$a
  done
  __serve "$kind" "${port:-8080}" "$@"
}
make() {
  case "${1:-}" in
    run) __serve ollama "$PORT" command make "$@";;
    web) __serve web "$PORT" command make "$@";;
    *) command make "$@";;
  esac
}
mitmdump() { __mitm "$(command -v mitmdump)" "$@"; }
mitmweb() { __mitm "$(command -v mitmweb)" "$@"; }
.venv/bin/mitmdump() { __mitm "$PWD/.venv/bin/mitmdump" "$@"; }
.venv/bin/mitmweb() { __mitm "$PWD/.venv/bin/mitmweb" "$@"; }
"""

# The app of docs/clients.md's proxy mode block: an Ollama client left pointing at localhost:11434.
OLLAMA_APP = """import ollama

answer = ollama.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "Why is the sky blue?"}])
assert answer.message.content, answer
print(answer.message.content)
"""


@dataclass
class Server:
    kind: str  # ollama, web (make web: Ollama on port, the UI on WEB_PORT), http-proxy
    port: int
    pid: int


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    servers: list[Server]
    server_log: str
    workdir: Path
    pgid: int  # the block's process group: every server it started (stop_group)


def checkout(tmp: Path, catalog: str | None) -> Path:
    """A directory that looks like this project's checkout to the block, and HOME beside it."""
    work = tmp / "checkout"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".pytest_cache",):
            (work / entry.name).symlink_to(entry)
    if catalog is not None:
        (work / "models.toml").write_text(catalog)
    (work / "my_ollama_app.py").write_text(OLLAMA_APP)
    (tmp / "home").mkdir()
    return work


def run(
    block: Block,
    tmp: Path,
    ports: Ports,
    upstream_base: str,
    env: dict[str, str] | None = None,
    path: list[str] | None = None,
    cwd: Path | None = None,
    timeout: float = 240,
) -> Outcome:
    """Run the block; servers it started are left running for the checks: call `stop` after."""
    catalog = substitute(block.catalog, ports, upstream_base) if block.catalog is not None else None
    work = checkout(tmp, catalog)
    out = tmp / "out"
    out.mkdir()
    venv_bin = ROOT / ".venv" / "bin"
    environment = {
        "PATH": ":".join([*(path or []), str(venv_bin), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(tmp / "home"),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "DOCS_OUT": str(out),
        "DOCS_PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "OPENAI_BASE_URL": upstream_base,
        "PORT": str(ports.proxy),
        "WEB_PORT": str(ports.web),
        "WEB_PASSWORD": WEB_PASSWORD,
        "PYTEST_ARGS": "-q -p no:cacheprovider tests/test_readme.py",
        **(env or {}),
    }
    script = PRELUDE + "\n" + substitute(block.text, ports, upstream_base)
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd or work,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process.pid)
        stdout, stderr = process.communicate()
        stderr += f"\n(the block did not finish within {timeout:g} s)"
    servers = []
    if (out / "servers").exists():
        for line in (out / "servers").read_text().splitlines():
            kind, port, pid = line.split()
            servers.append(Server(kind, int(port), int(pid)))
    log = (out / "servers.log").read_text(errors="replace") if (out / "servers.log").exists() else ""
    return Outcome(process.returncode, stdout, stderr, servers, log, work, process.pid)


def stop_group(pgid: int) -> None:
    """Stop every process the block started (they share its process group), TERM then KILL."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def http(url: str, body: dict[str, object] | None = None, timeout: float = 30) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return int(answer.status), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")


def wait(port: int, pid: int, timeout: float = 120) -> bool:
    """Until 127.0.0.1:port accepts a connection; False if the process ended first or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"the server (pid {pid}) ended before it listened on {port}", file=sys.stderr)
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    print(f"nothing listened on {port} within {timeout:g} s", file=sys.stderr)
    return False


if __name__ == "__main__":  # the prelude's waiter: python -m harness.doc_commands wait PORT PID
    if len(sys.argv) != 4 or sys.argv[1] != "wait":
        sys.exit("usage: python -m harness.doc_commands wait PORT PID")
    sys.exit(0 if wait(int(sys.argv[2]), int(sys.argv[3])) else 1)
