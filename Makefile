# Two entry points, as the README promises: `make demo` (set up + run the whole chain on the bundled demo) and
# `make test` (set up + run the test suite). Both install into .venv with the CPU build of torch on any machine
# (tools/install.py: PyPI's Linux torch is a CUDA build of several GB).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# what `make demo` needs: runtime, export stage, matplotlib for the quick-look legend
DEMO_EXTRAS ?= export,plot
# what the test suite covers on a CPU: adds pytest and friends, the TensorRT-RTX builder, Ray
TEST_EXTRAS ?= export,plot,dev,rtx,ray
INSTALL = $(BIN)/python tools/install.py --python $(BIN)/python

.PHONY: setup setup-demo demo test check-install plugins bench clean

setup: $(VENV)/.installed-test

setup-demo: $(VENV)/.installed-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: setup.py pyproject.toml tools/install.py | $(BIN)/python
	$(INSTALL) --extras $(DEMO_EXTRAS)
	touch $@

$(VENV)/.installed-test: setup.py pyproject.toml tools/install.py | $(BIN)/python
	$(INSTALL) --extras $(TEST_EXTRAS)
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python tools/run_demo.py --out out/demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# resolve both installs without installing and fail if either would pull a CUDA wheel (CI runs this)
check-install: | $(BIN)/python
	$(INSTALL) --extras $(DEMO_EXTRAS) --check
	$(INSTALL) --extras $(TEST_EXTRAS) --check

plugins:
	$(MAKE) -C engines/plugins

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out build *.egg-info engines/plugins/build
