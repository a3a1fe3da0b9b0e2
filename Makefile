# safeloop: every target installs what it needs first (venv, packages, Kafka jars) and is safe to rerun.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install safeloop with its dev tools

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

.PHONY: help install browser demo lint unit test bench stop clean
