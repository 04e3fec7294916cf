# Two commands for a newcomer (each sets everything up first, in .venv):
#   make example-class   generate release/ with nbgrader, autograde the example class, print grades, write feedback
#   make test            run the tests (package, notebooks, nbgrader end to end)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU-only machine does not need a CUDA build: override with e.g. `make test TORCH=torch`.
TORCH ?= torch==2.13.0
# nbgrader calls tools (alembic, jupyter) by name: they live beside the venv's python.
RUN := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: setup example-class test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

example-class: setup
	$(RUN) $(BIN)/attention-course example-class

test: setup
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2

clean:
	rm -rf submitted autograded feedback gradebook.db grades.csv
