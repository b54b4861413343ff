# Deltaflow developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH (override with `make PYTHON=/path/to/python3.12 run`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (none found on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Stamps: reinstall only when the dependency declarations change.
$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	@touch $@

$(VENV)/.dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(VENV)/.runtime

$(VENV)/.bench: pyproject.toml constraints.txt $(VENV)/.dev
	$(PIP) -e '.[dev,bench]'
	@touch $@

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.dev ## create .venv and install the app with its dev tools

.PHONY: run
run: $(VENV)/.runtime ## serve the API on http://127.0.0.1:8000 (embedded SQLite + in-process Redis)
	$(BIN)/deltaflow migrate
	@# First start only: create the default tenant, an operator key and an operator console login, each printed
	@# once (kept nowhere in clear).
	$(BIN)/deltaflow keys bootstrap --if-missing
	$(BIN)/deltaflow users bootstrap --if-missing
	$(BIN)/deltaflow serve --with-ingest

.PHONY: demo
DEMO_ENV := DELTAFLOW_FEEDS=sim:BTCUSDT DELTAFLOW_DATABASE_URL=sqlite+aiosqlite:///./var/deltaflow.db \
	DELTAFLOW_REDIS_URL=memory://

demo: $(VENV)/.runtime ## serve the API with a simulated market (sim:BTCUSDT) ingested in-process, embedded backends
	$(DEMO_ENV) $(BIN)/deltaflow migrate
	@# First start only, as `run` does: the default tenant and an operator key, printed once.
	$(DEMO_ENV) $(BIN)/deltaflow keys bootstrap --if-missing
	$(DEMO_ENV) $(BIN)/deltaflow users bootstrap --if-missing
	$(DEMO_ENV) $(BIN)/deltaflow serve --with-ingest

.PHONY: migrate
migrate: $(VENV)/.runtime ## apply database migrations (DELTAFLOW_DATABASE_URL, embedded SQLite by default)
	$(BIN)/deltaflow migrate

.PHONY: test
test: $(VENV)/.dev ## run the whole suite against real Postgres and Redis, with the coverage gate
	$(BIN)/pytest --cov --cov-report=term -q

.PHONY: lint
lint: $(VENV)/.dev ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: fmt
fmt: $(VENV)/.dev ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: bench
bench: $(VENV)/.bench ## benchmarks; each prints its comparison measured in the same run
	@# The HTTP benchmarks load the server with wrk (installed here when missing); the Python fallback client competes for
	@# the same two cores and compresses every ratio (measured: /v1/me / healthz 0.65-0.70 with it, 0.78 with wrk).
	@command -v wrk >/dev/null 2>&1 || { echo "bench: installing wrk (Debian package) for the HTTP load"; \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq wrk >/dev/null 2>&1; } || \
		echo "bench: could not install wrk: HTTP numbers use the slower Python client (ratios come out lower)"; }
	$(BIN)/python -m bench

.PHONY: clean
clean: ## remove the virtualenv, caches and the embedded database
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* *.egg-info
