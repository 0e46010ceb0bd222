# The two commands: `make demo` and `make test`. Each creates .venv if it is
# missing and installs the project into it; nothing needs installing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build in the local wheel cache: an open range
# would let pip fetch a multi-GB CUDA build instead.
TORCH  := torch==2.13.0

.PHONY: demo test lint typecheck unit bench-env bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[examples]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,examples]'
	touch $@ $(VENV)/.demo-installed

# The hospital pilot: 17 Arizona hospitals, DP-SGD and secure aggregation on,
# from a shipped config; it ends by printing where its report.md is.
demo: $(VENV)/.demo-installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/fedshield run examples/hospital_pilot.toml

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy core dp secagg examples benchmarks tests

unit: $(VENV)/.test-installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest

test: lint typecheck unit

# The benchmarks against the peer framework run in an environment of their
# own (matplotlib for their plots); flwr itself is also in the main venv
# through the test extra, so benchmarks.flower_deployment runs there.
bench-env: | $(BIN)/python
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q $(TORCH)
	.venv-bench/bin/pip install -q -e '.[bench]'

clean:
	rm -rf $(VENV) .venv-bench .mypy_cache .ruff_cache .pytest_cache
