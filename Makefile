# podworker: every command creates or reuses the virtual environment in .venv first.
#   make run    the local run: test_inputs.json through the real worker, no GPU, no cloud
#   make test   the whole test suite (unit, contract, integration, end to end)
VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
# torch==2.13.0 is a CPU build on the project's machines; a pod image brings its CUDA build.
TORCH     ?= torch==2.13.0

.PHONY: run test test-unit test-contract test-integration test-e2e test-faults lint bench bench-ab bench-gpu setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[s3,sd,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m app run

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-contract: $(STAMP)
	$(PY) -m pytest -q tests/contract

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

test-faults: $(STAMP)
	$(PY) -m pytest -q tests/faults

# make bench BENCH_ARGS=--quick: the smoke check; make bench-ab OTHER=/tmp/old-checkout: A/B
bench: $(STAMP)
	$(PY) bench/compare.py $(BENCH_ARGS)

bench-ab: $(STAMP)
	$(PY) bench/ab.py --other $(OTHER)

bench-gpu: $(STAMP)
	$(PY) -m bench.sd_gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
