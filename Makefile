# The two commands of the README: `make reproduce` (install, then the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
OUT ?= results/gp1d-quick

.PHONY: install reproduce test lint benchmark

$(BIN)/aenp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build of torch first, so pip does not fetch a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/aenp

reproduce: install
	$(BIN)/aenp reproduce gp1d --scale quick --parallel 2 --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -n auto

lint: install
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/ruff check src tests benchmarks scripts

benchmark: install
	$(BIN)/python benchmarks/gp1d_models.py
	$(BIN)/python benchmarks/gp1d_ground_truth.py
