# Two entry points, as the README promises: `make demo` (set up + run the whole chain on the bundled demo) and
# `make test` (set up + run the test suite). Both create .venv with the CPU build of torch, never a CUDA one.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= export,rtx,dev,ray

.PHONY: setup demo test plugins bench clean

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel in the `export` extra; installing it first keeps pip from resolving a CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/run_demo.py --out out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

plugins:
	$(MAKE) -C engines/plugins

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out build *.egg-info engines/plugins/build
