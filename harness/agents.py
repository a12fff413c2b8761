"""The coding agents as the tests run them: Claude Code (`claude -p`) and Codex CLI (`codex exec --oss`),
pinned in tests/clients/claude and tests/clients/codex (`make clients-setup` installs them).

Each runs non-interactively, with stdin on /dev/null, in a minimal environment (`env -i` style:
PATH, a fresh HOME, TERM=dumb and the settings below, nothing inherited), under a timeout, against
a proxy on loopback. With these settings neither makes any connection but to the proxy (measured
with strace for the pinned versions: tests/clients/codex/README.md). A CLI that is not installed
fails the test, never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import ROOT

CLAUDE = ROOT / "tests" / "clients" / "claude" / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
CODEX = ROOT / "tests" / "clients" / "codex" / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
CLAUDE_KEY = "sk-ant-test"  # Claude Code wants a key; the proxy takes any unless ollama_api_key is set


def _path() -> str:
    """/usr/bin:/bin, and the directory of node (Codex's launcher is a node script)."""
    node = shutil.which("node")
    dirs = ["/usr/bin", "/bin"]
    if node is not None and os.path.dirname(node) not in dirs:
        dirs.insert(0, os.path.dirname(node))
    return ":".join(dirs)


def _run(
    argv: list[str], environment: dict[str, str], home: Path, timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            cwd=home,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{what} did not finish within {timeout:g} s\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}")


def claude(
    proxy_url: str, home: Path, *args: str, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`claude <args>` against the proxy (ANTHROPIC_BASE_URL), no retries, no non-essential traffic."""
    if not CLAUDE.is_file():
        pytest.fail(f"Claude Code is not installed ({CLAUDE} is missing): run `make clients-setup`")
    environment = {
        "PATH": _path(),
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": proxy_url,
        "ANTHROPIC_API_KEY": CLAUDE_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
        **(env or {}),
    }
    return _run([str(CLAUDE), *args], environment, home, timeout, "Claude Code")


def codex(
    proxy_url: str, home: Path, model: str, prompt: str, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`codex exec --oss -m <model> <prompt>` against the proxy (CODEX_OSS_BASE_URL), without analytics or plugins."""
    node = shutil.which("node")
    if not CODEX.is_file() or node is None:
        pytest.fail(f"Codex CLI is not installed ({CODEX} or node is missing): run `make clients-setup`")
    environment = {
        "PATH": _path(),
        "HOME": str(home),
        "CODEX_HOME": str(home),
        "TERM": "dumb",
        "CODEX_OSS_BASE_URL": f"{proxy_url}/v1",
    }
    argv = [
        node,
        str(CODEX),
        "exec",
        "--oss",
        "--local-provider=ollama",
        "-m",
        model,
        "--skip-git-repo-check",
        "--ephemeral",
        "-c",
        "analytics.enabled=false",
        "--disable",
        "plugins",
        *args,
        prompt,
    ]
    return _run(argv, environment, home, timeout, "Codex CLI")
