# `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install system-deps lint bench clean

run: install ## start the API on its embedded defaults (or whatever .env / the environment says)
	$(BIN)/agent-api serve

NODE_MODULES := tests/node/node_modules/.package-lock.json
# The share of agent_api's lines the tests run in their own process; below it, make test fails.
COVERAGE_FLOOR ?= 88
# Test processes (pytest-xdist): most tests wait on real processes and sockets, so two per core.
# Idle ones take work from the busiest (worksteal); tests/conftest.py orders the tests for it.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

test: ## install everything, lint, and run the test suite with coverage
	@# Two lines at once: the Python packages then the lint, beside the system packages then the
	@# JavaScript clients (mypy uses one core; the rest waits on the network and the disk).
	@$(MAKE) --no-print-directory --jobs=2 --output-sync=target lint $(NODE_MODULES)
	@# The tests start dozens of Python processes: each reads the package compiled once here
	@# (instead of compiling it again, which it does when PYTHONDONTWRITEBYTECODE is set).
	$(BIN)/python -m compileall -q -j 0 agent_api tests
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

install: $(STAMP)

# uv installs the packages (the same resolution as pip, in a third of the time), pip among them;
# pip only installs uv (the machine's pip, or where there is none, the environment's own). Compiled
# to bytecode at install, as pip does: with PYTHONDONTWRITEBYTECODE set, every process would
# compile its imports again.
UV := "uv>=0.13,<0.14"
UV_INSTALL := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet $(UV) 2>/dev/null \
	  || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet $(UV); }
	$(UV_INSTALL) pip -e ".[test]"
	touch $(STAMP)

# The protocols' own JavaScript clients (the official openai SDK, ...), from the committed lockfile.
$(NODE_MODULES): tests/node/package.json tests/node/package-lock.json | system-deps
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

# The tests need real programs: redis-server (sessions), docker-compose (it validates the compose
# file; no Docker engine needed), Chromium (the browser test) and Node.js with npm (the protocols'
# JavaScript clients). Debian's packages, installed when missing if we are root.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing; install them (e.g. 'sudo apt-get install$$missing')" >&2; exit 1; \
	  fi; \
	fi

lint: install
	$(BIN)/ruff check agent_api tests bench
	$(BIN)/mypy

bench: install system-deps ## every benchmark and fault scenario, about 40 minutes (see docs/benchmarks.md); BENCH_FLAGS=--quick: a smoke run of each, nothing published
	$(UV_INSTALL) -e ".[test,bench]"
	$(BIN)/python bench/concurrency.py $(BENCH_FLAGS)
	$(BIN)/python bench/first_token.py $(BENCH_FLAGS)
	$(BIN)/python bench/engines.py $(BENCH_FLAGS)
	$(BIN)/python bench/runs.py $(BENCH_FLAGS)
	$(BIN)/python bench/scaling.py $(BENCH_FLAGS)
	$(BIN)/python bench/redis_pool.py $(BENCH_FLAGS)
	$(BIN)/python bench/model_stream.py $(BENCH_FLAGS)
	$(BIN)/python bench/cost_split.py $(BENCH_FLAGS)
	$(BIN)/python bench/faults.py $(BENCH_FLAGS)
	$(BIN)/python bench/soak.py $(BENCH_FLAGS)
	$(BIN)/python bench/plots.py $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info tests/node/node_modules .coverage .coverage.*
