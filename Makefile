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

# The oldest transformers the course supports (Colab's version varies), tested beside the newest.
OLDEST_TRANSFORMERS ?= transformers==4.56.*
OLD_VENV ?= .venv-oldest-transformers

.PHONY: setup example-class test test-oldest-transformers clean
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
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

test-oldest-transformers:
	test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -c "import torch" 2>/dev/null || $(OLD_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(OLD_VENV)/bin/python -m pip install -q -e ".[dev]" "$(OLDEST_TRANSFORMERS)"
	PATH="$(abspath $(OLD_VENV)/bin):$$PATH" HF_HUB_OFFLINE=1 $(OLD_VENV)/bin/python -m pytest -n 2 -m "not notebook and not nbgrader"

clean:
	rm -rf submitted autograded feedback gradebook.db grades.csv
