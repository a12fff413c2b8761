"""Every curl example in README.md and docs/*.md runs as written, with a real curl, against a real mitmdump.

Each ```sh block that contains a `curl` command is run by bash with the proxy's address in place
of 127.0.0.1:11434 (or localhost:11434). Its PATH holds only a `curl` that records each answer, so
a block must consist of curl commands (a `make run` or `mitmdump` in the same block would fail
here: keep those in blocks of their own). Each answer must be a successful, valid Ollama (or
OpenAI, for /v1) answer for its endpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import ROOT
from harness.mitmdump import Mitmdump

from .conftest import client_env

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    b
    for page in PAGES
    for b in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", page.read_text(), re.S | re.M)
    if re.search(r"^\s*curl\s", b, re.M)
]

# The curl the examples run: the real one, with its exit status, arguments and answer recorded.
WRAPPER = """#!{bash}
n=1
for f in "$CURL_OUT"/*.args; do [ -e "$f" ] && n=$((n + 1)); done
printf '%s\\0' "$@" > "$CURL_OUT/$n.args"
{curl} --silent --show-error --fail-with-body "$@" > "$CURL_OUT/$n.out"
rc=$?
printf '%s' "$rc" > "$CURL_OUT/$n.rc"
exit $rc
"""


def block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip().startswith("curl"))
    return re.sub(r"\W+", "-", first.split("11434", 1)[-1])[:40].strip("-") or "curl"


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
        pytest.fail(f"the README's curl example calls {path}, which this test does not know how to check: add it here")


def test_the_readme_has_curl_examples() -> None:
    assert any("/api/chat" in b for b in BLOCKS), "the quick start's curl example was not found"


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_readme_curl_example(block: str, ollama_proxy: Mitmdump, tmp_path: Path) -> None:
    bash, curl = shutil.which("bash"), shutil.which("curl")
    assert bash and curl, "bash and curl are needed"
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "curl").write_text(WRAPPER.format(bash=bash, curl=curl))
    (bin_dir / "curl").chmod(0o755)
    address = ollama_proxy.url.removeprefix("http://")
    script = re.sub(r"(127\.0\.0\.1|localhost):11434", address, block)
    env = {**client_env(ollama_proxy.url), "PATH": str(bin_dir), "CURL_OUT": str(out), "HOME": str(tmp_path)}
    done = subprocess.run(
        [bash, "-e", "-o", "pipefail", "-c", script], capture_output=True, timeout=60, env=env, cwd=tmp_path
    )
    runs = sorted(out.glob("*.args"), key=lambda p: int(p.stem))
    assert done.returncode == 0, (
        f"the example failed ({done.returncode}): {done.stderr.decode()}\n{done.stdout.decode()}\n{script}"
    )
    assert runs, f"no curl command ran:\n{script}"
    for run in runs:
        args = run.read_bytes().split(b"\0")[:-1]
        urls = [a.decode() for a in args if a.decode().startswith(("http://", "https://"))]
        assert len(urls) == 1 and urls[0].startswith(ollama_proxy.url), f"the example does not call the proxy: {args}"
        path = urls[0][len(ollama_proxy.url) :].split("?", 1)[0]
        check_answer(path, (out / f"{run.stem}.out").read_bytes())
