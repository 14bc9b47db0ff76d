# warroom: `make test` sets everything up from a fresh clone and runs the suite against
# real services; `make run` opens the console. See README.md.

PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(VENV)/bin/pip
TOOLS      := .tools
PYTEST_ARGS ?= -q -ra --durations=30

.DEFAULT_GOAL := help
.PHONY: help test run demo lint artifact venv tools docker-prep clean bench

help:
	@echo "make test      create .venv, install (dev extras), npm tools, Docker bits; run pytest"
	@echo "make run       open the console on examples/minimal.toml"
	@echo "make demo      run the sandbox demo"
	@echo "make lint      ruff check and mypy (backends/ strict)"
	@echo "make artifact  recompile sandbox/contracts/Escrow.sol into Escrow.json"
	@echo "make bench     live-stack cost: warroom vs glances and lnav under tmux (BENCH_ARGS=--seconds 20)"

# --- Python ------------------------------------------------------------------
$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

# --- npm tools (anvil, solcjs) into the git-ignored .tools/ -------------------
$(TOOLS)/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js >= 20"; exit 1; }
	mkdir -p $(TOOLS)
	cp package.json package-lock.json $(TOOLS)/
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error
	@touch $@

tools: $(TOOLS)/.installed

# --- Docker: as root on Linux, install docker.io + busybox-static if missing ---
# (the test harness starts its own dockerd with --bridge=none --iptables=false)
docker-prep: venv
	@if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  if ! command -v dockerd >/dev/null || ! $(PY) -c 'import sys; from tests.harness.docker import find_static_busybox; sys.exit(find_static_busybox() is None)'; then \
	    echo "installing docker.io busybox-static"; \
	    policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy=1; fi; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null; rc=$$?; \
	    [ -n "$$policy" ] && rm -f /usr/sbin/policy-rc.d; \
	    [ $$rc = 0 ] || echo "warning: could not install docker.io busybox-static (rc=$$rc)"; \
	  fi; \
	fi
	@# the real servers of issue 18's tests: Prometheus, Alertmanager, Sidekiq's gem (layout), lnav;
	@# policy-rc.d keeps apt from starting their system services (the harness starts its own on loopback)
	@if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null || ! command -v lnav >/dev/null || [ ! -d /usr/share/rubygems-integration/all/gems ] || ! ls -d /usr/share/rubygems-integration/all/gems/sidekiq-* >/dev/null 2>&1; }; then \
	  echo "installing prometheus prometheus-alertmanager ruby-sidekiq lnav"; \
	  policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy=1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager ruby-sidekiq lnav >/dev/null; rc=$$?; \
	  [ -n "$$policy" ] && rm -f /usr/sbin/policy-rc.d; \
	  [ $$rc = 0 ] || echo "warning: could not install prometheus/alertmanager/sidekiq/lnav (rc=$$rc): their tests skip locally, fail under CI"; \
	fi
	@# chromium: headless browser of tests/test_serve.py (installed here so CI has it too)
	@if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then \
	  echo "installing chromium"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	    || echo "warning: could not install chromium (tests/test_serve.py skips locally, fails under CI)"; \
	fi

# --- commands ----------------------------------------------------------------
test: venv tools docker-prep
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: venv
	$(VENV)/bin/warroom --config examples/minimal.toml

demo: venv tools
	$(VENV)/bin/warroom demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy  # [tool.mypy] in pyproject.toml: backends/ strict, tui/ and widgets/ normal

# benchmarks/live.py: tmux and lnav from the system (apt-get install tmux lnav), glances in its own venv
BENCH_VENV ?= /tmp/bench-venv
BENCH_ARGS ?=
bench: venv tools
	@command -v tmux >/dev/null || { echo "tmux not found: apt-get install tmux"; exit 1; }
	@command -v lnav >/dev/null || echo "lnav not found (apt-get install lnav): its rows are skipped"
	@[ -x $(BENCH_VENV)/bin/glances ] || { $(PYTHON) -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q glances; } \
	  || echo "could not install glances into $(BENCH_VENV): its rows are skipped"
	GLANCES=$(BENCH_VENV)/bin/glances $(PY) benchmarks/live.py $(BENCH_ARGS)

artifact: venv tools
	$(PY) -m tests.harness.solc

clean:
	rm -rf $(TOOLS) .pytest_cache .ruff_cache
