# The README's two commands: `make demo` and `make test`. Each creates .venv and installs
# what it needs; nothing else has to be on the machine but Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 3000
# dg warns when the venv it finds in the project is not the active one: make activates it.
DG_ENV := VIRTUAL_ENV=$(CURDIR)/$(VENV) DAGSTER_HOME=$(CURDIR)/dagster_home
DG := $(DG_ENV) $(VENV)/bin/dg

.PHONY: demo test test-fast lint bench dev clean chromium servers

$(STAMP): pyproject.toml
	@echo "creating $(VENV) and installing audian_pipeline with its [test,emulator] extras (pip)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,emulator]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audian-pipeline demo

test: $(STAMP) chromium servers lint
	$(DG) check defs
	$(PY) -m pytest -q --durations=25

# ruff (pyflakes, pycodestyle, import order, bugbear) and mypy over the package: part of `make test`.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The UI test renders pages in Debian's chromium; install it where we can (root with apt-get),
# otherwise that test skips and says why. Never fails the build by itself.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  echo "installing Debian's chromium with apt-get for the UI test (a minute or two)..." && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium is not installed and could not be: the UI test will be skipped"

# The production tests start a real Postgres 15 and Redis from Debian's packages (postgresql,
# redis-server) on free ports; install them where we can (root with apt-get), otherwise those
# tests skip and say why. Never fails the build by itself.
servers:
	@{ [ -x /usr/lib/postgresql/15/bin/initdb ] || command -v initdb >/dev/null 2>&1; } && \
	  command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  echo "installing Debian's postgresql and redis-server with apt-get for the production tests..." && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server) \
	  >/dev/null 2>&1; } || \
	  echo "postgresql or redis-server is not installed and could not be: the tests that need them will be skipped"

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m tests.benchmarks.run

# The emulator (the demo's account), the webhook receiver and `dg dev` on PORT, wired together
# (audian_pipeline/dev.py); Ctrl-C stops all three.
dev: $(STAMP)
	$(DG_ENV) $(VENV)/bin/audian-pipeline dev --port $(PORT)

clean:
	rm -rf $(VENV) data .pytest_cache
