# Two commands on a fresh machine: `make run` (a real search on the embedded default)
# and `make test` (the test suite). Both install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly: 2.13.0 is a CPU build on these machines' disk (see README for GPUs).
	$(BIN)/python -m pip install -q -c requirements.lock torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/actsweep run examples/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check models search deploy tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) mlflow.db mlruns .actsweep
