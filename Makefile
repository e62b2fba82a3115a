# Two commands do everything on a fresh machine that has python3 and make:
#   make quickstart   the main job (virtualenv + install + `lmforge quickstart`)
#   make test         the test suite (virtualenv + install + pytest)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# A local CPU wheel of torch when the machine has one; otherwise PyTorch's CPU index, so a plain
# `pip install torch` never drags in several GB of CUDA packages on a CPU laptop.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*cpu*.whl))
TORCH_SPEC  := $(if $(TORCH_WHEEL),$(TORCH_WHEEL),torch --index-url https://download.pytorch.org/whl/cpu)

.PHONY: venv test quickstart presets bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

quickstart: $(STAMP)
	$(BIN)/lmforge quickstart --out runs/quickstart --overwrite

presets: $(STAMP)
	$(BIN)/lmforge presets

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
