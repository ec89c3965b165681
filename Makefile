# `make demo` and `make test` both work from a fresh clone: they build .venv first.
# The .venv location is fixed; tooling outside the repo relies on it.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install demo test lint typecheck pytest unit schemas docs bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: where Python may not write bytecode (CI), every start compiled it anew
install: $(UV)
	$(UV) sync --frozen --inexact --quiet --compile-bytecode

demo: install
	$(VENV)/bin/llmbus demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(VENV)/bin/pytest -q

unit: install
	$(VENV)/bin/pytest -q tests/unit

test: lint typecheck pytest

schemas: install
	$(VENV)/bin/python -m llmbus.shared.schemas

# docs/cli.md, generated from the typer app; a test fails while it is stale
docs: install
	$(VENV)/bin/python -m llmbus.cli.reference docs/cli.md

bench: install
	$(VENV)/bin/python bench/pipeline.py

clean:
	rm -rf $(VENV) build .llmbus .pytest_cache .mypy_cache .ruff_cache
