"""The coding agents as the tests run them: Claude Code (`claude -p`), Codex CLI (`codex exec --oss`) and
opencode (`opencode run`, its openai-compatible provider pointed at the proxy's /v1), pinned in
tests/clients/claude, tests/clients/codex and tests/clients/opencode (`make clients-setup` installs them).

Each runs non-interactively, with stdin on /dev/null, in a minimal environment (`env -i` style:
PATH, a fresh HOME, TERM=dumb and the settings below, nothing inherited), under a timeout, against
a proxy on loopback. With these settings neither makes any connection but to the proxy (measured
with strace for the pinned versions: tests/clients/codex/README.md). A CLI that is not installed
fails the test, never skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import ROOT

CLAUDE = ROOT / "tests" / "clients" / "claude" / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
CODEX = ROOT / "tests" / "clients" / "codex" / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
OPENCODE = ROOT / "tests" / "clients" / "opencode" / "node_modules" / "opencode-ai" / "bin" / "opencode.exe"
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
    proxy_url: str, home: Path, *args: str, timeout: float = 90, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`claude <args>` against the proxy (ANTHROPIC_BASE_URL), no retries, no non-essential traffic."""
    if not CLAUDE.is_file():
        pytest.fail(f"Claude Code is not installed ({CLAUDE} is missing): run `make clients-setup`")
    settings: dict[str, str | None] = {
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
    environment = {k: v for k, v in settings.items() if v is not None}  # env={NAME: None} unsets one
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


# opencode's switches for a run that reaches nothing but the proxy: no update check, no models.dev
# list, no default plugins (they are installed from npm at start), no LSP downloads, no sharing, no
# Claude Code settings or skills of the user's.
OPENCODE_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
}


def quiet_plugin_install(config: Path) -> None:
    """opencode installs its plugin SDK (`@opencode-ai/plugin`, for local plugins) from npm into its config
    directory (`~/.config/opencode`) at every start, unless that directory's package.json and lock already
    name it and it has a node_modules: say so, so that the start reaches no registry (no plugin is used)."""
    (config / "node_modules").mkdir(parents=True, exist_ok=True)
    dependencies = {"@opencode-ai/plugin": "*"}
    (config / "package.json").write_text(json.dumps({"dependencies": dependencies}))
    (config / "package-lock.json").write_text(json.dumps({"packages": {"": {"dependencies": dependencies}}}))


def opencode_config(proxy_url: str, model: str, *, context: int = 128000, output: int = 32000) -> dict[str, object]:
    """The opencode.json a user writes for the proxy: an `ollama` provider on opencode's openai-compatible
    package (`@ai-sdk/openai-compatible`, bundled with opencode), its base URL the proxy's /v1."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            "ollama": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Ollama (the proxy)",
                "options": {"baseURL": f"{proxy_url}/v1"},
                "models": {model: {"name": model, "tool_call": True, "limit": {"context": context, "output": output}}},
            }
        },
        "model": f"ollama/{model}",
        "small_model": f"ollama/{model}",
    }


def opencode(
    proxy_url: str,
    home: Path,
    model: str,
    prompt: str,
    *args: str,
    timeout: float = 90,
    config: dict[str, object] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`opencode run -m ollama/<model> --format json <prompt>` against the proxy (its config in OPENCODE_CONFIG_CONTENT)."""
    if not OPENCODE.is_file():
        pytest.fail(f"opencode is not installed ({OPENCODE} is missing): run `make clients-setup`")
    quiet_plugin_install(home / ".config" / "opencode")
    environment = {
        "PATH": _path(),
        "HOME": str(home),
        "TERM": "dumb",
        "OPENCODE_CONFIG_CONTENT": json.dumps(config or opencode_config(proxy_url, model)),
        **OPENCODE_ENV,
    }
    argv = [str(OPENCODE), "run", "--pure", "-m", f"ollama/{model}", "--format", "json", *args, prompt]
    return _run(argv, environment, home, timeout, "opencode")
