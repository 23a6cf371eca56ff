# The two commands: `make up` runs the whole stack, `make test` proves it.
# Everything installs into .venv on first use; nothing needs Docker or root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install up demo test lint typecheck unit e2e bench clean

help:
	@echo "make up         install if needed and run the whole local stack (Ctrl-C stops it)"
	@echo "make demo       with 'make up' running: ask a question, watch the events arrive"
	@echo "make test       install if needed, then lint, type-check and run every test"
	@echo "make e2e        run the end-to-end scenarios on a fresh local stack, with a report"
	@echo "make bench      run the benchmarks (auth, delivery, runs); figures beside same-run baselines"
	@echo "make clean      remove the virtual environment, caches and local stack data"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version' \
		|| { echo "error: set PYTHON=/path/to/python3.11"; exit 1; }
	@echo "==> installing into $(VENV) (first run takes a minute)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --disable-pip-version-check --upgrade pip > $(VENV)/install.log 2>&1 \
		&& $(BIN)/python -m pip install --disable-pip-version-check -e ".[local,dev]" >> $(VENV)/install.log 2>&1 \
		|| { tail -40 $(VENV)/install.log; echo "error: install failed (full log: $(VENV)/install.log)"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	@$(BIN)/python -m e2e up

demo: $(STAMP)
	@$(BIN)/python -m e2e demo

lint: $(STAMP)
	@echo "==> ruff"
	@$(BIN)/ruff check .

typecheck: $(STAMP)
	@echo "==> mypy"
	@$(BIN)/mypy auth backend agents bridge servicekit e2e benchmarks tests \
		deploy/offline/clickhouse/server.py

unit: $(STAMP)
	@$(BIN)/pytest -q tests --ignore=tests/e2e

test: lint typecheck
	@echo "==> pytest (unit, integration and end-to-end tests on real servers)"
	@$(BIN)/pytest tests

# every scenario at full scale on a fresh local stack; E2E_ARGS="--scale smoke" etc.
e2e: $(STAMP)
	@$(BIN)/python -m e2e run --report-dir reports/latest $(E2E_ARGS)

bench: $(STAMP)
	@$(BIN)/python -m benchmarks.auth
	@$(BIN)/python -m benchmarks.delivery
	@$(BIN)/python -m benchmarks.runs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports .local-stack *.egg-info
