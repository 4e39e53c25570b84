# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The two run-time pins: their wheels are served locally, anything newer is gigabytes.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv test lint unit docs demo bench clean test-device

$(STAMP): pyproject.toml setup.py $(wildcard src/detblocks/*.c) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[test,demo,docs]" $(TORCH_PINS)
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples setup.py
	$(VENV)/bin/ruff format --check src tests examples setup.py

unit: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q
	# The same golden cases and paths again without the native kernels (a machine without a C compiler).
	DETBLOCKS_NATIVE=0 $(PY) -m pytest -n 2 --dist loadgroup -q \
		tests/test_golden.py tests/test_bbox.py tests/test_matcher.py tests/test_sampler.py tests/test_coder.py \
		tests/test_assign_atss.py tests/test_assign_simota.py

# The suites on another device: `make test-device DEVICE=cuda` (or DETBLOCKS_TEST_DEVICE=cuda make test).
# Tests of CPU-only machinery are skipped there; DEVICE=meta runs the shape-only tests.
DEVICE ?= cpu
test-device: $(STAMP)
	DETBLOCKS_TEST_DEVICE=$(DEVICE) $(PY) -m pytest -n 2 --dist loadgroup -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site

test: lint unit docs

demo: $(STAMP)
	$(PY) -m detblocks demo

bench: $(STAMP)
	$(PY) -m detblocks.bench

clean:
	rm -rf $(VENV) build site .pytest_cache .ruff_cache .hypothesis src/detblocks/*.so
