"""Every command block of README.md and docs/*.md runs as written (issue 22): curl, the make and the
mitmdump lines, against the fake upstream through a real mitmdump (harness/doc_commands.py says what
is substituted and how servers are started and checked). The agents' blocks (Claude Code, Codex
CLI) run in the client suite (tests/clients/test_docs_agents.py), with its installed agents.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness import TEST_KEY
from harness.doc_commands import WEB_PASSWORD, Block, Outcome, Ports, blocks, free_port, http, run, stop_group, wait
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

BLOCKS = blocks()
SHELL_BLOCKS = [b for b in BLOCKS if not b.agent and b.not_run is None]
# The programs a block may run here; anything else must be taught to this test or marked not run.
KNOWN = {"make", "curl", "export", "mitmdump", ".venv/bin/mitmdump", "mitmweb", "python", "claude", "codex", "opencode"}

# The curl the examples run: the real one, with its exit status, arguments and answer recorded.
CURL = """#!{bash}
n=1
for f in "$CURL_OUT"/*.args; do [ -e "$f" ] && n=$((n + 1)); done
printf '%s\\0' "$@" > "$CURL_OUT/$n.args"
{curl} --silent --show-error --fail-with-body "$@" > "$CURL_OUT/$n.out"
rc=$?
printf '%s' "$rc" > "$CURL_OUT/$n.rc"
exit $rc
"""


def commands(block: Block) -> list[str]:
    """The program of each command of a block (continuation lines joined, comments and assignments left out)."""
    text = re.sub(r"\\\n", " ", block.text)
    programs = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "}", '"', "'")):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            words = [w for w in part.split() if not re.fullmatch(r"[A-Z_]+=\S*", w)]
            if words:
                programs.append(words[0])
    return programs


def test_every_block_is_run_or_marked() -> None:
    assert any("make run" in b.text for b in SHELL_BLOCKS), "the quick start's block was not found"
    assert [b for b in BLOCKS if b.agent], "the agents' blocks were not found"
    for block in BLOCKS:
        if block.not_run is not None:
            continue
        unknown = set(commands(block)) - KNOWN
        assert not unknown, (
            f"{block.id} runs {sorted(unknown)}, which this test cannot run: teach harness/doc_commands.py, "
            "or mark the block with <!-- not run: why --> on the line before it"
        )


def check_answer(path: str, body: bytes) -> None:
    """The answer to one curl call is a valid, successful answer of its endpoint."""
    text = body.decode()
    if path in ("", "/"):
        assert text == "Ollama is running"
        return
    if path.startswith("/v1/") and text.startswith("data:"):  # an OpenAI stream: its events, up to [DONE]
        events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        assert events[-1] == "[DONE]", text
        text = "\n".join(events[:-1])
    try:  # one JSON answer (an OpenAI body may span lines), else NDJSON
        objects: list[dict[str, Any]] = [json.loads(text)]
    except ValueError:
        objects = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert objects and all(isinstance(o, dict) for o in objects), text
    for obj in objects:
        assert "error" not in obj, obj
    last = objects[-1]
    if path in ("/api/chat", "/api/generate"):
        assert last["done"] is True and last["done_reason"] in ("stop", "length", "load", "unload"), last
        key = "message" if path == "/api/chat" else "response"
        assert all(key in o for o in objects), objects
        if last["done_reason"] not in ("load", "unload"):
            content = "".join(
                o["message"].get("content", "") + str(o["message"].get("tool_calls", ""))
                if key == "message"
                else o["response"]
                for o in objects
            )
            assert content, objects
    elif path == "/api/embed":
        assert len(objects) == 1 and last["embeddings"] and all(last["embeddings"]), last
    elif path == "/api/embeddings":
        assert len(objects) == 1 and last["embedding"], last
    elif path in ("/api/tags", "/api/ps"):
        assert len(objects) == 1 and last["models"] and all(m["name"] and m["model"] for m in last["models"]), last
    elif path == "/api/show":
        assert len(objects) == 1 and isinstance(last["model_info"], dict) and last["capabilities"], last
    elif path == "/api/version":
        assert re.fullmatch(r"\d+\.\d+\.\d+", last["version"]), last
    elif path == "/api/pull":
        assert last["status"] == "success", last
    elif path.startswith("/v1/"):
        assert any(k in last for k in ("choices", "data", "id")), last
    else:
        pytest.fail(f"a curl example calls {path}, which this test does not know how to check: add it here")


def check_curls(out: Path, proxy_url: str) -> int:
    runs = sorted(out.glob("*.args"), key=lambda p: int(p.stem))
    for one in runs:
        args = one.read_bytes().split(b"\0")[:-1]
        urls = [a.decode() for a in args if a.decode().startswith(("http://", "https://"))]
        assert len(urls) == 1 and urls[0].startswith(proxy_url), f"the example does not call the proxy: {args}"
        path = urls[0][len(proxy_url) :].split("?", 1)[0]
        check_answer(path, (out / f"{one.stem}.out").read_bytes())
    return len(runs)


def check_servers(outcome: Outcome, ports: Ports, upstream: UpstreamServer) -> None:
    """Each server the block started answers as Ollama does, and a chat through it reaches the upstream."""
    for server in outcome.servers:
        if server.kind == "http-proxy":
            continue  # checked by the app the block runs through it
        base = f"http://127.0.0.1:{server.port}"
        assert http(base) == (200, "Ollama is running"), outcome.server_log
        before = len(upstream.fake.requests)
        status, body = http(
            f"{base}/api/chat",
            {
                "model": "gpt-4o-mini",
                "stream": False,
                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            },
        )
        assert status == 200 and json.loads(body)["message"]["content"] == "echo: Why is the sky blue?", body
        assert any(r.path.endswith("/chat/completions") for r in upstream.fake.requests[before:])
        if server.kind == "web":
            assert wait(ports.web, server.pid), "mitmweb's UI did not listen"
            status, page = http(f"http://127.0.0.1:{ports.web}/?token={WEB_PASSWORD}")
            assert status == 200 and '<div id="mitmproxy">' in page, page[:300]
            assert http(f"http://127.0.0.1:{ports.web}/")[0] == 403, "the UI is behind the password"


def check_catalog(outcome: Outcome, upstream: UpstreamServer) -> None:
    """The page's models.toml, which the block's proxy was started with: each name reaches the upstream as its id."""
    catalog = tomllib.loads((outcome.workdir / "models.toml").read_text())
    assert catalog.get("models"), "the page's models.toml names no model"
    (server,) = [s for s in outcome.servers if s.kind == "ollama"]
    for name, entry in catalog["models"].items():
        before = len(upstream.fake.requests)
        status, body = http(
            f"http://127.0.0.1:{server.port}/api/chat",
            {"model": name, "stream": False, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 200, (name, body)
        sent = [r for r in upstream.fake.requests[before:] if r.path.endswith("/chat/completions")]
        assert [r.body["model"] for r in sent] == [entry.get("upstream", name.removesuffix(":latest"))], name


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.id for b in SHELL_BLOCKS])
def test_block_runs_as_written(block: Block, upstream: UpstreamServer, tmp_path: Path) -> None:
    bash, curl = shutil.which("bash"), shutil.which("curl")
    assert bash and curl, "bash and curl are needed"
    ports = Ports(free_port(), free_port(), free_port())
    bin_dir, curl_out = tmp_path / "bin", tmp_path / "curl"
    bin_dir.mkdir()
    curl_out.mkdir()
    (bin_dir / "curl").write_text(CURL.format(bash=bash, curl=curl))
    (bin_dir / "curl").chmod(0o755)
    proxy = None
    if block.curls and not block.starts_a_server:  # the `make run` the text assumes
        catalog = []
        if block.catalog is not None:
            (tmp_path / "models.toml").write_text(block.catalog)
            catalog = [f"model_catalog={tmp_path / 'models.toml'}"]
        proxy = Mitmdump(
            tmp_path, "reverse", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", *catalog
        )
        ports.proxy = proxy.port
    try:
        outcome = run(block, tmp_path, ports, upstream.base_url, env={"CURL_OUT": str(curl_out)}, path=[str(bin_dir)])
        try:
            assert outcome.returncode == 0, (
                f"{block.id} failed ({outcome.returncode}):\n{outcome.stderr[-3000:]}\n{outcome.stdout[-2000:]}\n"
                f"servers' output:\n{outcome.server_log[-3000:]}"
            )
            check_servers(outcome, ports, upstream)
            if "model_catalog=models.toml" in block.text:
                check_catalog(outcome, upstream)
            if re.search(r"^make test\b", block.text, re.M):
                assert re.search(r"\d+ passed", outcome.stdout), f"make test ran no test:\n{outcome.stdout[-2000:]}"
            curls = check_curls(curl_out, f"http://127.0.0.1:{ports.proxy}")
            if any(s.kind == "http-proxy" for s in outcome.servers):
                assert "echo: Why is the sky blue?" in outcome.stdout, outcome.stdout
            assert curls or outcome.servers, f"{block.id}: nothing was checked"
        finally:
            stop_group(outcome.pgid)
    finally:
        if proxy is not None:
            proxy.stop()
