# walbucket: `make demo` runs the whole job on a local S3 endpoint; `make test` runs every test.
# .venv, or a copy under /var/tmp when the checkout is unreadable for the 'postgres' user (see scripts/venv-dir).
VENV ?= $(shell scripts/venv-dir)
export VENV
PY := $(VENV)/bin/python

.PHONY: all bootstrap test unit lint demo bench clean

all: test

bootstrap:
	@scripts/bootstrap

lint: bootstrap
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/ruff format --check src tests tools
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

unit: bootstrap
	$(PY) -m pytest -m "not postgres"

demo: bootstrap
	$(PY) tools/demo.py

bench: bootstrap
	$(PY) tools/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
