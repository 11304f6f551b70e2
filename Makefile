# sr-gan developer commands. `make help` lists them.
# `make install` makes a virtual environment in .venv (Debian/Ubuntu's system pip refuses installs
# outside one, PEP 668) and every other target runs its Python. VENV=... or PYTHON=... override it.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP ?= $(PYTHON) -m pip

.PHONY: help install train test test-fast bench clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## make .venv and install sr-gan (editable) with the test extras into it
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install -e ".[dev]"

train:  ## the CPU demo: python -m sr_gan.train (a few minutes, beats bicubic)
	$(PYTHON) -m sr_gan.train

test:  ## the whole test suite (CPU, a few minutes)
	$(PYTHON) -m pytest -q

test-fast:  ## tests without the end-to-end CLI runs
	$(PYTHON) -m pytest -q -m "not slow"

bench:  ## benchmarks: speed ratios against baselines measured in the same run
	$(PYTHON) -m benchmarks

clean:  ## remove run folders and caches made by tests and demos
	rm -rf logs outputs multirun .pytest_cache
