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

.PHONY: setup run web screenshot test test-fast record record-recordings bench bench-profile clean

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
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

# A drop-in Ollama endpoint on $(HOST):$(PORT). Upstream from OPENAI_BASE_URL / OPENAI_API_KEY.
run: setup
	$(VENV)/bin/mitmdump -s addon/proxy.py --mode reverse:http://$(HOST):$(PORT) \
	  --listen-host $(HOST) --listen-port $(PORT) --set flow_detail=0 $(ARGS)

# mitmweb with the addon: the proxy on $(PORT), the web UI on 127.0.0.1:$(WEB_PORT) behind a password
# (WEB_PASSWORD, or a random one printed at start).
web: setup
	@pw="$${WEB_PASSWORD:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(12))')}"; \
	echo "mitmweb: http://127.0.0.1:$(WEB_PORT)/?token=$$pw  (password: $$pw)"; \
	exec $(VENV)/bin/mitmweb -s addon/proxy.py --mode reverse:http://$(HOST):$(PORT) \
	  --listen-host $(HOST) --listen-port $(PORT) --set flow_detail=0 \
	  --web-host 127.0.0.1 --web-port $(WEB_PORT) --set web_open_browser=false \
	  --set web_password="$$pw" $(ARGS)

# Refresh docs/mitmweb.png from the mitmweb test (needs chromium).
screenshot: setup
	MITMWEB_SCREENSHOT=docs/mitmweb.png $(PY) -m pytest tests/test_mitmweb.py -q

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Only the fast tests: no mitmdump process.
test-fast: setup
	$(PY) -m pytest -m 'not e2e' $(PYTEST_ARGS)

# Benchmarks (bench/README.md): the floor, plain mitmdump, the addon and its PyPI peers in one
# run; writes bench/RESULTS.md. BENCH_QUICK=1 for a < 1 minute run (written to bench/out/).
bench: setup
	$(PY) bench/run.py

# Where the proxy's CPU time goes under load (py-spy from PyPI into bench/.peers/): bench/PROFILE.md.
bench-profile: setup
	$(PY) bench/profile.py

# Record every scenario through the proxy against a real upstream into flows/$(RECORD_NAME)/.
RECORD_NAME ?= upstream
RECORD_MODEL ?= gemma3
record: setup
	$(PY) -m collector.collect --name $(RECORD_NAME) --model $(RECORD_MODEL)

# Re-make flows/openai-recordings/ from the real OpenAI recordings in tests/fixtures/.
record-recordings: setup
	$(PY) -m collector.collect --name openai-recordings

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
