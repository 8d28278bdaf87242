# podworker: every command creates or reuses the virtual environment in .venv first.
#   make run    the local run: test_inputs.json through the real worker, no GPU, no cloud
#   make test   the whole test suite (unit, contract, integration, end to end), in parallel
#   make test-quick   unit and contract tests only: the edit loop
#   make test-image   builds the pod image (CPU torch, tiny weights) and tests the real container
#   make lock   updates requirements.lock (the image's pinned, hashed dependencies)
VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
# torch==2.13.0 is a CPU build on the project's machines; a pod image brings its CUDA build.
TORCH     ?= torch==2.13.0
# RunPod's SDK, pinned (the release REFERENCE.md and contracts/ describe), in a venv of its own
# with podworker installed beside it, as in a handler's image: the contract and differential
# tests run the SDK's worker and `python -m app handler` from it, and so does the benchmark.
RUNPOD_SDK   ?= runpod==1.12.0
RUNPOD_VENV  ?= .venv-runpod
RUNPOD_STAMP := $(RUNPOD_VENV)/.installed
SETUP        := $(STAMP) $(RUNPOD_STAMP) redis-server

.PHONY: run test test-quick test-image lock test-unit test-contract test-integration test-e2e test-faults lint bench bench-ab bench-gpu gpu-check gpu-wheels gpu-rehearsal setup redis-server

setup: $(SETUP)

# The Redis queue's tests start a real redis-server on free ports: Debian's package, installed
# here when it is missing (as root, as CI runs; otherwise one line says what to run).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      redis-server >/dev/null; \
	  else \
	    echo "make: redis-server is missing; run: sudo apt-get install redis-server" >&2; \
	  fi; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[s3,sd,redis,dev]"
	touch $(STAMP)

# Made again when pyproject.toml or this file (the pin) changes; no test installs anything.
$(RUNPOD_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(RUNPOD_VENV)
	$(RUNPOD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RUNPOD_VENV)/bin/python -m pip install --quiet "$(RUNPOD_SDK)" -e ".[s3]"
	touch $(RUNPOD_STAMP)

run: $(STAMP)
	$(PY) -m app run

# Tests run on TEST_JOBS pytest-xdist workers (most tests wait on subprocesses and sockets, so
# more workers than cores still helps); TEST_JOBS=0 runs them one at a time in this process.
TEST_JOBS ?= 4
test: $(SETUP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_JOBS)

# The edit loop: unit and contract tests (no servers but loopback fakes): about 1.5 minutes on 2 cores.
test-quick: $(SETUP)
	$(PY) -m pytest -q -n 2 tests/unit tests/contract

# Needs a Docker engine (dockerd) and debootstrap; .ci/run installs and starts them. The first run
# makes a Debian base image and builds the image (minutes); later runs reuse Docker's cache.
test-image: $(STAMP)
	$(PY) -m pytest -m image tests/image

# pyproject.toml's runtime set (core, s3, sd, redis) for the image's Linux and Python 3.11, with
# hashes, without torch: the image installs torch from PyTorch's index (its CUDA build), and what only
# torch needs comes with it. Pins already in the lock are kept; LOCK_FLAGS=--upgrade moves all.
LOCK_FLAGS ?=
lock: $(STAMP)
	printf 'torch\n' > $(VENV)/lock-excludes.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra s3 --extra sd --extra redis --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--excludes $(VENV)/lock-excludes.txt --system-certs \
		--custom-compile-command "make lock" --output-file requirements.lock $(LOCK_FLAGS)

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-contract: $(SETUP)
	$(PY) -m pytest -q tests/contract

test-integration: $(SETUP)
	$(PY) -m pytest -q tests/integration

test-e2e: $(SETUP)
	$(PY) -m pytest -q tests/e2e

test-faults: $(SETUP)
	$(PY) -m pytest -q tests/faults

# make bench BENCH_ARGS=--quick: the smoke check; make bench-ab OTHER=/tmp/old-checkout: A/B
bench: $(SETUP)
	$(PY) bench/compare.py $(BENCH_ARGS)

bench-ab: $(SETUP)
	$(PY) bench/ab.py --other $(OTHER)

bench-gpu: $(STAMP)
	$(PY) -m bench.sd_gpu

# The CUDA checks in one run (GPU tests, benchmark), results in files, one overall deadline;
# on a CPU the CUDA parts are skipped. On a lent GPU machine run the README's device command
# (no make there); this target is the same command for a machine of your own.
GPU_PYTHON  ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_RESULTS ?= gpu-check-results
gpu-check:
	$(GPU_PYTHON) -m bench.gpu_check --results "$(GPU_RESULTS)"

# Wheels of what a GPU machine may lack, pinned to this venv's versions, into the git-ignored
# .whl/ that the device command installs from (for its Python, 3.12, x86-64 Linux, by default;
# the rehearsal asks for its own Python's).
GPU_WHEELS_DIR    ?= .whl
GPU_WHEELS_PYTHON ?= 3.12
GPU_WHEELS := diffusers tenacity pydantic pydantic-core pydantic-settings python-dotenv \
              annotated-types typing-inspection typing-extensions importlib-metadata zipp
gpu-wheels: $(STAMP)
	rm -rf "$(GPU_WHEELS_DIR)" && mkdir -p "$(GPU_WHEELS_DIR)"
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: \
	  --python-version $(GPU_WHEELS_PYTHON) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d "$(GPU_WHEELS_DIR)" \
	  $$($(PY) -m pip freeze | grep -i -E '^($(shell echo $(GPU_WHEELS) | tr ' ' '|' | sed 's/-/[-_]/g'))==')

# The device command rehearsed on this CPU (CI runs it): a venv holding only what a lent GPU
# machine has (bench/gpu_machine.txt), the wheels of `make gpu-wheels`, the README's device
# command in a copy of the working tree, checked for what comes back (bench/gpu_rehearsal.py).
# Python and torch: the lent machine has Python 3.12 and torch 2.11 (CUDA); here the registry's
# torch for 3.12 is a CUDA build of several GB (minutes of download on every CI run), while
# torch 2.13.0 for Python 3.11 (a CPU build) lies on this machine's disk, so the rehearsal runs
# Python 3.11 with it, offline, and its wheels are fetched for 3.11 (same versions as the 3.12
# ones; only compiled wheels, pydantic-core, differ in their tag).
REHEARSAL_PYTHON ?= python3.11
REHEARSAL_TORCH  ?= $(TORCH)
gpu-rehearsal: $(STAMP)
	$(PY) -m bench.gpu_rehearsal --python $(REHEARSAL_PYTHON) --torch "$(REHEARSAL_TORCH)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
