# relevance: `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export RELEVANCE_HOME ?= $(CURDIR)/.relevance
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test setup check-java lint dagster-home dbt-parse browser redis-server clean

$(PY):
	python3 -m venv $(VENV)

# torch==2.13.0 first: that pin is the small CPU wheel on this machine; a loose `torch` pulls a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[cpu,dev]'
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
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf .relevance .dagster_home test-artifacts dbt_project/target
