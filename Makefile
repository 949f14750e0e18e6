# walbucket: `make demo` runs the whole job on a local S3 endpoint; `make test` runs every test.
# .venv, or a copy under /var/tmp when the checkout is unreadable for the 'postgres' user (see scripts/venv-dir).
VENV ?= $(shell scripts/venv-dir)
export VENV
PY := $(VENV)/bin/python
# checkov pins boto3 and other libraries to versions that conflict with constraints.txt, so it gets a virtualenv of
# its own inside $(VENV); tests/test_terraform.py runs $(CHECKOV). Its version is pinned in constraints.txt.
CHECKOV_VENV := $(VENV)/checkov
export CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: all bootstrap test unit lint demo bench clean checkov

all: test

bootstrap:
	@scripts/bootstrap

lint: bootstrap
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/ruff format --check src tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Four workers on the 2-core machine: much of each test is waiting on subprocesses, servers and sockets. loadfile keeps
# a file on one worker (a module's scenario fixture runs once), and tests/conftest.py starts the PostgreSQL files first.
PYTEST_XDIST := -n 4 --dist loadfile
test: lint checkov
	$(PY) -m pytest $(PYTEST_XDIST)

unit: bootstrap checkov
	$(PY) -m pytest $(PYTEST_XDIST) -m "not postgres"

demo: bootstrap
	$(PY) tools/demo.py

# bench-extra: GNU time (CPU and memory of each command) and, for the comparison, pgBackRest with stunnel (TLS in
# front of the local S3 endpoint); installed only when missing and only as root; on failure the benchmark reports
# pgBackRest as not installed.
bench: bootstrap
	@missing=""; [ -x /usr/bin/time ] || missing="$$missing time"; \
	command -v pgbackrest >/dev/null || missing="$$missing pgbackrest"; \
	command -v stunnel >/dev/null || missing="$$missing stunnel4"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" -eq 0 ]; then \
	  echo "bench: installing$$missing with apt-get" >&2; \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	   apt-get install -y -qq --no-install-recommends $$missing >/dev/null) || echo "bench: could not install$$missing" >&2; \
	fi
	$(PY) tools/bench.py $(BENCH_ARGS)

checkov: $(CHECKOV)

$(CHECKOV): constraints.txt | bootstrap
	rm -rf $(CHECKOV_VENV)
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check "$$(grep -E '^checkov==' constraints.txt)"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
