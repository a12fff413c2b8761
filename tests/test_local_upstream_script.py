"""Cheap checks of scripts/local-upstream.sh and its recorded fixtures.

Nothing here builds llama-server, downloads a model or starts a server: every call
points the script at an empty cache dir in tmp_path. The live tier (a running
llama-server) is separate.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "local-upstream.sh"
TEMPLATE = ROOT / "scripts" / "gemma3-tools.jinja"
FIXTURES = ROOT / "tests" / "fixtures" / "llama-server"


def run(*args: str, cache: Path, port: int | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("UPSTREAM_")}
    e["UPSTREAM_CACHE"] = str(cache)
    if port is not None:
        e["UPSTREAM_PORT"] = str(port)
    e.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=e, cwd=cache.parent, capture_output=True, text=True, timeout=30
    )


def test_script_is_executable_bash_with_strict_mode() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None and not os.environ.get("CI"), reason="shellcheck not installed")
def test_shellcheck_is_clean() -> None:
    r = subprocess.run(["shellcheck", "-S", "warning", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r = run("status", cache=cache)
    assert r.returncode == 3, r.stderr
    assert "not running" in r.stdout
    assert "not built" in r.stdout and "absent" in r.stdout
    assert not cache.exists(), "status must not create the cache dir"


def test_status_ignores_a_stale_pid_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "llama-server.pid").write_text(f"{os.getpid()}\n")  # alive, but not llama-server
    r = run("status", cache=cache)
    assert r.returncode == 3
    assert "not running" in r.stdout


def test_stop_when_nothing_runs_is_a_no_op(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "llama-server.pid").write_text("999999999\n")
    r = run("stop", cache=cache)
    assert r.returncode == 0, r.stderr
    assert "not running" in r.stderr
    assert not (cache / "llama-server.pid").exists()


def test_unknown_command(tmp_path: Path) -> None:
    r = run("frobnicate", cache=tmp_path / "cache")
    assert r.returncode == 2
    assert "unknown command" in r.stderr


@pytest.mark.parametrize("var", ["UPSTREAM_PORT", "UPSTREAM_THREADS", "UPSTREAM_WAIT"])
def test_bad_numbers_are_rejected(tmp_path: Path, var: str) -> None:
    r = run("status", cache=tmp_path / "cache", **{var: "abc"})
    assert r.returncode == 1
    assert var in r.stderr


def test_help(tmp_path: Path) -> None:
    r = run("help", cache=tmp_path / "cache")
    assert r.returncode == 0
    for word in ("start", "stop", "status", "build", "UPSTREAM_PORT", "UPSTREAM_CACHE", "UPSTREAM_THREADS"):
        assert word in r.stdout


def test_start_refuses_a_port_taken_by_someone_else(tmp_path: Path) -> None:
    """Fails fast, before building or downloading anything."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cache = tmp_path / "cache"
        r = run("start", cache=cache, port=port)
    assert r.returncode == 1
    assert f"port {port}" in r.stderr and "taken" in r.stderr
    assert not (cache / "bin").exists()


def test_makefile_targets() -> None:
    r = subprocess.run(["make", "-n", "-C", str(ROOT), "upstream", "upstream-stop"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "scripts/local-upstream.sh start" in r.stdout
    assert "scripts/local-upstream.sh stop" in r.stdout


def test_template_has_provenance_and_tool_markup() -> None:
    text = TEMPLATE.read_text()
    assert text.startswith("{#-")  # a whitespace-trimming comment: renders nothing
    assert "<tool_call>" in text and "<start_of_turn>" in text


def test_template_renders_tools_and_history() -> None:
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": "sunny"},
    ]
    out = env.from_string(TEMPLATE.read_text()).render(
        bos_token="<bos>", tools=tools, messages=messages, add_generation_prompt=True
    )
    assert out.startswith("<bos><start_of_turn>system\n")
    assert '"name": "get_weather", "arguments": {"city": "Paris"}' in out
    assert "<tool_response>\nsunny\n</tool_response>" in out
    assert out.endswith("<start_of_turn>model\n")


FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def test_fixtures_exist() -> None:
    assert FIXTURE_FILES, f"no recorded exchanges in {FIXTURES}"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_shape(path: Path) -> None:
    data = json.loads(path.read_text())
    assert set(data) >= {"source", "request", "response"}
    assert {"method", "path"} <= set(data["request"])
    resp = data["response"]
    assert isinstance(resp["status"], int)
    assert isinstance(resp["headers"], dict)
    assert "body" in resp
    if "text/event-stream" in resp["headers"].get("content-type", ""):
        assert isinstance(resp["body"], str) and resp["body"].startswith("data: ")
