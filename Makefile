# safeloop: every target installs what it needs first (venv, packages, Kafka jars) and is safe to rerun.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The exact tested packages for Python 3.11 on Linux x86_64, with hashes: runtime (the image's)
# and runtime + dev (.venv's). `make lock` re-resolves them from pyproject.toml.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
UV_VERSION := 0.13.9
LOCK_FLAGS = --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes \
	--custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

.DEFAULT_GOAL := help

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install safeloop with its dev tools, as locked

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(BIN)/uv ## re-resolve the locks from pyproject.toml, keeping pins still allowed (UPGRADE=1: newest)
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev $(LOCK_FLAGS) -o $(DEV_LOCK)
	$(BIN)/uv pip compile --quiet pyproject.toml $(LOCK_FLAGS) -c $(DEV_LOCK) -o $(LOCK)

demo: $(STAMP) ## the main job: start Kafka and ClickHouse, run the loop, show what landed, stop
	$(BIN)/safeloop demo

lint: $(STAMP) ## ruff and mypy (strict) over the packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check __init__.py schemas infra streams services
	@mkdir -p .cache/typecheck && ln -sfn ../.. .cache/typecheck/safeloop
	$(BIN)/mypy

unit: $(STAMP) ## the unit tier alone (no servers), in well under a minute
	$(BIN)/pytest tests/unit -q

browser: ## Debian's chromium for the dashboard's browser test (no browser download)
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

test: $(STAMP) browser ## lint, then the whole test suite against a real Kafka broker and ClickHouse engine
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

bench: $(STAMP) ## run the benchmarks; results go to bench/results/
	$(BIN)/python -m bench

stop: $(STAMP) ## stop the local Kafka broker and ClickHouse endpoint if they run
	-$(BIN)/safeloop warehouse stop
	-$(BIN)/safeloop kafka stop

clean: stop ## remove local state (Kafka data, warehouse data); keeps .venv and the jar cache
	rm -rf .state

.PHONY: help install lock browser demo lint unit test bench stop clean
