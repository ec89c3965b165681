# `make demo` and `make test` both work from a fresh clone: they build .venv first.
# The .venv location is fixed; tooling outside the repo relies on it.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install demo test lint typecheck pytest unit browser schemas docs bench clean

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

pytest: install browser
	$(VENV)/bin/pytest -q

# chromium for the report's browser test: Debian's, since Playwright's own download does not
# work everywhere. Best effort and quiet: only as root with apt-get, and a failure is no
# failure (without chromium that test skips and says why).
browser:
	-@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium; } >/dev/null 2>&1 || echo "could not install chromium: the browser test skips"

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
