# relevance: `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export RELEVANCE_HOME ?= $(CURDIR)/.relevance
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-fast setup check-java lint dagster-home dbt-parse browser redis-server clean

# The first Python 3.11 or 3.12 on PATH (the package and its pinned wheels support those two);
# `make PYTHON=/path/to/python3.12` picks one by hand.
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' \
  >/dev/null 2>&1 && { echo $$p; break; }; done)
# PyTorch's CPU-only wheels: from PyPI, `pip install torch` on Linux is the CUDA build (GBs of GPU
# libraries a CPU machine never uses). Where this index cannot be reached (an offline mirror), the pin
# below is installed from the configured index instead, and the message says so.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

$(PY):
	@test -n "$(PYTHON)" || { echo "relevance needs Python 3.11 or 3.12, and none is on PATH."; \
	  echo "Install one (Debian/Ubuntu: sudo apt-get install -y python3.11-venv; or: pyenv install 3.12)"; \
	  echo "or point at it: make PYTHON=/path/to/python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	@if $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=5)" >/dev/null 2>&1; then \
	  echo "installing the CPU build of torch $(TORCH_VERSION) from $(TORCH_INDEX)"; \
	  $(PIP) install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX); \
	else \
	  echo "$(TORCH_INDEX) is not reachable: installing torch==$(TORCH_VERSION) from the configured index"; \
	  $(PIP) install -q torch==$(TORCH_VERSION); \
	fi
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "Java 17+ is required by Spark. Install it: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ "$${v:-0}" -lt 17 ]; then echo "Java 17+ is required by Spark (found $$v). Install it: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; fi

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@sed 's#base_dir: .dagster_home/storage#base_dir: $(DAGSTER_HOME)/storage#' dagster.yaml > $(DAGSTER_HOME)/dagster.yaml

# Tests and CI need the dbt manifest too, not only `dagster dev` (prepare_if_dev runs only there).
dbt-parse: $(STAMP)
	cd dbt_project && $(CURDIR)/$(VENV)/bin/dbt parse --profiles-dir . --quiet

setup: $(STAMP) check-java dagster-home dbt-parse

demo: setup
	$(VENV)/bin/relevance demo

# Browser tests drive Debian's Chromium through Playwright (Playwright's own browser download cannot work
# offline). Installed here when missing; needs root (CI runs as root) or sudo.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; }

# The shared user state (RELEVANCE_REDIS_URL) is tested against a real Redis server.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; }

test: setup browser redis-server
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The unit tests alone (no server, no JVM, no browser): under a minute.
test-fast: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf .relevance .dagster_home test-artifacts dbt_project/target
