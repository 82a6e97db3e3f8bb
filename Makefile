# shipmate: one command per workflow. Each target installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= .demo

.PHONY: demo test lint unit bench system-deps clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

## demo: render cyber-werewolves in every format, bring it up locally, play a game, shut it down (KEEP=1 stays up)
demo: $(STAMP) system-deps
	@bash scripts/demo.sh $(BIN) $(DEMO_OUT)

## lint: ruff, mypy --strict and the import contracts
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/mypy src
	$(BIN)/lint-imports

## test: lint, then every test
test: $(STAMP) system-deps lint
	$(BIN)/pytest -n 2 -q

## unit: the fast, pure tests only
unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## bench: the benchmarks; they write benchmarks/RESULTS.md
bench: $(STAMP)
	$(PY) benchmarks/render.py
	$(PY) benchmarks/scan.py
	$(PY) benchmarks/router.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
