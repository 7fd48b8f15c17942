PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test test-fast lint venv bench chaos

RUNS ?= 300
DAEMONS ?= 3

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,openai]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/orchestrator up

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The inner loop: unit and integration tiers (no subprocesses, no browser), on two
# processes: most of their time is waiting on PostgreSQL.
test-fast: $(STAMP)
	$(BIN)/pytest -n 2 tests/unit tests/integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --runs $(RUNS) --daemons $(DAEMONS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# QUICK=1: fewer samples, under two minutes. DATABASE_URL picks the server.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick)

# Rewrite migrations/schema.sql from a freshly migrated database (tests/deploy/test_packaging.py
# checks it). DATABASE_URL picks the server; unset, a temporary embedded one.
.PHONY: schema
schema: $(STAMP)
	$(BIN)/python -m tools.schema
