# `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install redis-server lint bench clean

run: install ## start the API on its embedded defaults (or whatever .env / the environment says)
	$(BIN)/agent-api serve

test: install redis-server ## install everything, lint, and run the test suite
	$(BIN)/ruff check agent_api tests bench
	$(BIN)/mypy
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The tests run a real redis-server on a loopback port: Debian's package, installed when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server')" >&2; exit 1; \
	  fi; }

lint: install
	$(BIN)/ruff check agent_api tests bench
	$(BIN)/mypy

bench: install redis-server ## the benchmarks (see docs/benchmarks.md)
	$(BIN)/python bench/concurrency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
