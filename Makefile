# Two commands on a fresh machine:  `make run` (set up + run the pipeline)  `make test`.
# Setup is idempotent: the virtualenv is (re)built only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export SPARK_LOCAL_IP := 127.0.0.1

.PHONY: setup browser run test lint dev clean

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17+ is required by Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# Debian's chromium + chromium-driver for the UI test (tests/ui); a no-op once installed.
browser:
	@bash scripts/install_browser.sh

# One line per step and a summary; `make run VERBOSE=1` prints Dagster's full log instead.
run: setup
	$(BIN)/python -m dagster_project.quickstart $(if $(VERBOSE),--verbose)

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The Dagster UI on http://127.0.0.1:3000 (runs from `make run` show up here too).
dev: setup
	DAGSTER_HOME=$$($(BIN)/python -m dagster_project.instance) $(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf lake .dagster_home
