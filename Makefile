# sr-gan developer commands. `make help` lists them.
# `make install` makes a virtual environment in .venv (Debian/Ubuntu's system pip refuses installs
# outside one, PEP 668) and every other target runs its Python. VENV=... or PYTHON=... override it.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP ?= $(PYTHON) -m pip

.PHONY: help install train test test-fast test-lowest bench study gpu-wheels gpu-check clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## make .venv and install sr-gan (editable) with the test extras into it
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install -e ".[dev]"

train:  ## the CPU demo: python -m sr_gan.train (a few minutes, beats bicubic)
	$(PYTHON) -m sr_gan.train

# Test processes: one per core (pytest-xdist), each with one intra-op thread (tests/conftest.py).
# On 2 cores the suite took 9 min 43 s in 2 processes and 15 min 31 s in one. TEST_WORKERS=0: one process;
# at most 8 on bigger machines (each worker holds its own torch and starts CLI and DDP subprocesses).
TEST_WORKERS ?= auto
test:  ## the whole test suite (CPU, one test process per core; about 10 minutes on 2 cores)
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --maxprocesses=8

test-fast:  ## tests without the end-to-end CLI runs
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --maxprocesses=8 -m "not slow"

# The oldest release of each dependency pyproject.toml admits (tests/lowest-versions.txt, kept in step with it by
# tests/test_packaging.py) on the oldest Python it admits, in a venv of its own: run it before moving a bound.
# PyPI's torch is a CUDA build: about 4 GB of downloads on the first run.
LOWEST_VENV ?= .venv-lowest
LOWEST_PYTHON ?= python3.11
test-lowest:  ## the test suite on the oldest versions pyproject.toml admits (in .venv-lowest; ~4 GB on first use)
	test -x $(LOWEST_VENV)/bin/python || $(LOWEST_PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -c tests/lowest-versions.txt -e ".[dev]"
	$(LOWEST_VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --maxprocesses=8

bench:  ## benchmarks: speed ratios against baselines measured in the same run (CPU: about 3 minutes)
	$(PYTHON) -m benchmarks

STUDIES = $(notdir $(patsubst %/run.sh,%,$(wildcard experiments/*/run.sh)))
study:  ## one study of experiments/: make study STUDY=esrgan_fig7 [SCALE=demo|paper] (demo: CPU, minutes)
	@test -n "$(filter $(STUDY),$(STUDIES))" || { echo "STUDY=$(STUDY): one of $(STUDIES)" >&2; exit 2; }
	PYTHON=$(PYTHON) SCALE=$(or $(SCALE),demo) experiments/$(STUDY)/run.sh

# Wheels for benchmarks/gpu_check.sh on an air-gapped GPU node (Python 3.12, x86-64): what such a
# node lacks and what those lack in turn. Requires-Dist: hydra-core: omegaconf, antlr4-python3-runtime
# 4.9.*, packaging; omegaconf: antlr4-python3-runtime 4.9.*, PyYAML; kornia: kornia-rs, numpy, torch
# (packaging, PyYAML, numpy and torch are on the node). No wandb: the check logs with logger=csv.
# GPU_SDISTS have only a source archive on PyPI: built here into pure-Python wheels.
WHEELS ?= .whl
GPU_WHEELS = hydra-core==1.3.8 omegaconf==2.3.1 kornia==0.9.0 kornia_rs==0.2.0
GPU_SDISTS = antlr4-python3-runtime==4.9.3
WHEEL_PLATFORMS = $(foreach n,28 27 17,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64 \
	--platform manylinux1_x86_64

gpu-wheels:  ## download into .whl/ the wheels benchmarks/gpu_check.sh installs on an offline GPU node
	mkdir -p $(WHEELS)
	rm -f $(foreach w,hydra_core omegaconf antlr4_python3_runtime kornia kornia_rs,$(WHEELS)/$(w)-*.whl)  # one version each
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(WHEEL_PLATFORMS) -d $(WHEELS) $(GPU_WHEELS)
	$(PIP) wheel -q --no-deps -w $(WHEELS) $(GPU_SDISTS)
	ls -l $(WHEELS)

gpu-check:  ## the GPU check: one JSON + Markdown summary in OUT=dir (DRY_RUN=1: CPU, tiny sizes)
	PYTHON=$(PYTHON) benchmarks/gpu_check.sh $(if $(DRY_RUN),--dry-run) --out $(or $(OUT),gpu_check_out)

clean:  ## remove run folders and caches made by tests and demos
	rm -rf logs outputs multirun .pytest_cache
