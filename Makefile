# Two entry points (see README): `make run` and `make test`. Everything else is set-up they do for you.
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: run test lint system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

## run the service on its embedded default: built-in simulator + default pack + SQLite under ./.csf
run: $(STAMP)
	$(VENV)/bin/csf serve $(ARGS)

## install everything the tests need (Python packages, Debian's prometheus/alertmanager), then run them all
test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy detector exporters rules
	$(VENV)/bin/pytest $(ARGS)

system-deps:
	@bash scripts/install-system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy detector exporters rules

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
