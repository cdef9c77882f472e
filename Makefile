# Developer and CI entry points. `make install` is idempotent: it reinstalls only when
# requirements.lock or pyproject.toml changed since the last install (stamp file in .venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint demo lock clean distclean

help:
	@echo "make install    .venv with the locked dependencies + editable install"
	@echo "make test       pytest (SQLite; SYNC_TEST_POSTGRES_URL=postgresql://... for PostgreSQL)"
	@echo "make lint       ruff check, ruff format --check, mypy"
	@echo "make demo       sandbox + demo athletes + dagster dev on http://localhost:3000"
	@echo "make lock       regenerate requirements.lock from pyproject.toml (uv)"
	@echo "make clean      remove caches and build artifacts (distclean: also .venv)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

install: $(STAMP)

test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/mypy benchmarks  # scripts, not a package: checked apart

demo: install
	$(BIN)/sync-pipeline dev

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q uv

lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
