# Reproducible imaging/ML research scripts. `make help` lists every target.
#
# Prerequisites: Python >= 3.10 with venv, and GNU make. Every target that
# runs Python depends on the virtual environment, which is created from
# requirements.lock on first use and re-created when the lock changes.
# Recipes call Python, not Unix tools, so they also work with GNU make on
# Windows (where the venv keeps its programs in Scripts/).

ifeq ($(OS),Windows_NT)
  PYTHON ?= python
  VENV_PY = $(VENV)/Scripts/python.exe
else
  PYTHON ?= python3
  VENV_PY = $(VENV)/bin/python
endif
VENV ?= .venv
WORKSPACE ?= .
DATA ?=
DATA_NAME ?=
STRICT ?=
SCHEDULER ?=
RUN ?=
# What a user names (a folder may be called anything) reaches the scripts as data: in the environment,
# unexpanded, and never written into a recipe (scripts/orchestration/make_targets.py turns it into options).
CRATE ?=
KEY ?=
CERTIFY ?=
RERUN ?=
MAKE_INPUTS = WORKSPACE DATA DATA_NAME STRICT SCHEDULER RUN PHASE CRATE KEY CERTIFY RERUN
unexport $(MAKE_INPUTS)
$(foreach name,$(MAKE_INPUTS),$(eval export CRH_MAKE_$(name) := $$(value $(name))))
VENV_STAMP = $(VENV)/.lock-sha256
PY = $(VENV_PY)
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
FUZZ_EXAMPLES ?= 150

.DEFAULT_GOAL := help
.PHONY: help setup setup-gpu lock test lint format fuzz bench bench-large device-wheels device-check \
        clean clean-venv \
        phase5 phase6 phase7 phase8 phase9 verify report steps certify check-proof

help:
	$(info Targets:)
	$(info   help        list the targets (this text))
	$(info   setup       create the virtual environment $(VENV) from requirements.lock)
	$(info   setup-gpu   add CuPy to the environment: CUDA 13 or 12 as nvidia-smi reports (requirements-gpu13.lock / -gpu.lock))
	$(info   lock        re-resolve requirements.in + requirements-dev.in into requirements.lock (and the GPU lock) with uv)
	$(info   test        lint, then the test suite (pytest in TEST_WORKERS=2 processes; PYTEST_ARGS=... passes options))
	$(info   lint        ruff check and ruff format --check (configured in pyproject.toml))
	$(info   format      ruff format, then ruff check --fix)
	$(info   fuzz        the long fuzz run: FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) hostile inputs per reader; writes fuzz-report.json)
	$(info   bench       run the benchmarks; writes experiments/results/bench_<stamp>.json)
	$(info   bench-large the data-folder growth benchmark up to 10^6 files (about 6 minutes))
	$(info   device-wheels  the wheels a bare GPU machine lacks, for CPython 3.12, into device-wheels/)
	$(info   device-check   CuPy against NumPy on a GPU, in one command with the machine's python3 (skips without one))
	$(info   clean       remove generated outputs from data/, meta/chronicle/, experiments/results/, env/)
	$(info   clean-venv  remove the virtual environment)
	$(info   phase5..9   the phase pipeline on the sample data; DATA=dir for yours: anywhere, only read)
	$(info   ..........  DATA_NAME=name names it, STRICT=1 fails on any skipped file, WORKSPACE=dir for where)
	$(info   ..........  SCHEDULER=tcp://host:8786 or local:N runs the data steps on a Dask cluster)
	$(info   ..........  CERTIFY=1 then signs a crate of the phase (as make certify))
	$(info   verify      run phase5..9 twice (the second varied), compare every artifact, explain and bisect)
	$(info   ..........  CERTIFY=1 signs what it found as a crate in experiments/proofs/ (KEY=pem signs))
	$(info   report      one self-contained HTML page for the newest phase run (RUN=path for another); prints its path)
	$(info   steps       print the steps of PHASE=phase7 (or another): what each runs, consumes and writes)
	$(info   certify     a signed RO-Crate of PHASE=phase7 (or all, or RUN=report) in experiments/proofs/; KEY=pem signs)
	$(info   check-proof check CRATE=dir offline: signature, every file, the profile (KEY=public pem or key id pins the signer))
	$(info   ..........  RERUN=1 also re-runs every step from the crate and checks the outputs)
	@$(PYTHON) -c "pass"

$(VENV_STAMP): requirements.lock pyproject.toml scripts/utils/venv_setup.py
	$(PYTHON) scripts/utils/venv_setup.py --venv $(VENV) --lock requirements.lock

setup: $(VENV_STAMP)

setup-gpu: $(VENV_STAMP)
	$(PYTHON) scripts/utils/venv_setup.py --venv $(VENV) --gpu

lock: $(VENV_STAMP)
	$(PY) -m uv pip compile --universal --generate-hashes --python-version 3.10 \
	    --custom-compile-command "make lock" requirements-dev.in -o requirements.lock
	$(PY) -m uv pip compile --universal --generate-hashes --python-version 3.10 \
	    --custom-compile-command "make lock" requirements-gpu.in -c requirements.lock -o requirements-gpu.lock
	$(PY) -m uv pip compile --universal --generate-hashes --python-version 3.10 \
	    --custom-compile-command "make lock" requirements-gpu13.in -c requirements.lock -o requirements-gpu13.lock

test: $(VENV_STAMP) lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV_STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

fuzz: export CRH_FUZZ_PROFILE = long
fuzz: export CRH_FUZZ_EXAMPLES = $(FUZZ_EXAMPLES)
fuzz: export CRH_FUZZ_REPORT = fuzz-report.json
fuzz: $(VENV_STAMP)
	$(PY) -m pytest tests/fuzz -o timeout=7200 $(PYTEST_ARGS)
	$(PY) -c "import sys; sys.stdout.write(open('fuzz-report.json', encoding='utf-8').read())"

bench: $(VENV_STAMP)
	$(PY) bench/run_bench.py

device-wheels: $(VENV_STAMP)
	$(PY) bench/device_wheels.py

device-check:
	$(PYTHON) bench/device_check.py

bench-large: $(VENV_STAMP)
	$(PY) bench/run_bench.py --large --only tree_growth --repeat 2

clean: $(VENV_STAMP)
	$(PY) scripts/utils/clean_workspace.py

clean-venv:
	$(PYTHON) -c "import shutil; shutil.rmtree('$(VENV)', ignore_errors=True)"

phase5 phase6 phase7 phase8 phase9 verify report steps certify check-proof: $(VENV_STAMP)
	$(PY) scripts/orchestration/make_targets.py $@

phase%: $(VENV_STAMP)
	$(PY) scripts/orchestration/make_targets.py $@
