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
	@$(MAKE) --no-print-directory native || echo "make native failed: fastavro will read and write every event (slower)"

# The hot path's Avro loops (each used only when built and newer than its source): the C one,
# schemas/flat_avro.c, and schemas/native_codec.py compiled by mypyc (the fallback, and the
# readable reference of the same rules). The mypyc build goes through .cache/typecheck so the
# module is named safeloop.schemas.native_codec; the libraries are touched to date them after
# their sources.
NATIVE_STAMP := .cache/native/built
PY_INCLUDE = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
EXT_SUFFIX = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
CFLAGS_NATIVE := -O2 -fPIC -shared -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-cast-function-type
native: $(NATIVE_STAMP) ## compile the hot path's Avro reader and writer (C, and mypyc's; needs a C compiler)
$(NATIVE_STAMP): schemas/native_codec.py schemas/flat_avro.c $(STAMP)
	@mkdir -p .cache/typecheck .cache/native && ln -sfn ../.. .cache/typecheck/safeloop
	@# New files, not rewritten ones: a running process keeps the library it mapped.
	@rm -f schemas/native_codec.*.so schemas/native_codec__mypyc.*.so schemas/flat_avro.*.so
	@cd .cache/typecheck && ../../$(BIN)/mypyc safeloop/schemas/native_codec.py > ../native/build.log 2>&1 \
	  || { tail -20 ../native/build.log; exit 1; }
	@$${CC:-cc} $(CFLAGS_NATIVE) -I"$(PY_INCLUDE)" schemas/flat_avro.c -o "schemas/flat_avro$(EXT_SUFFIX)"
	@touch schemas/native_codec.*.so schemas/native_codec__mypyc.*.so schemas/flat_avro.*.so $@
	@$(BIN)/python -c "from safeloop.schemas import native_codec as n; assert n.compiled(), n.__file__" \
	  && $(BIN)/python -c "from safeloop.schemas import flat_loop as f; assert f.c_loop(), 'flat_avro'" \
	  && echo "native: schemas/flat_avro.c and schemas/native_codec compiled"

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

unit: $(STAMP) native ## the unit tier alone (no servers), in well under a minute
	$(BIN)/pytest tests/unit -q

browser: ## Debian's chromium for the dashboard's browser test (no browser download)
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

test: $(STAMP) native browser ## lint, then the whole test suite against a real Kafka broker and ClickHouse engine
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

bench: $(STAMP) native ## run the benchmarks; results go to bench/results/
	$(BIN)/python -m bench

stop: $(STAMP) ## stop the local Kafka broker and ClickHouse endpoint if they run
	-$(BIN)/safeloop warehouse stop
	-$(BIN)/safeloop kafka stop

clean: stop ## remove local state (Kafka data, warehouse data); keeps .venv and the jar cache
	rm -rf .state

.PHONY: help install native lock browser demo lint unit test bench stop clean
