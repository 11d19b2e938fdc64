# Bootstraps .venv with Python 3.11 (or python3) and runs the main job / the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[export,demo,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edge-saliency run

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/export_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
