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

# Versions tested beside the newest (.venv), each in a venv of its own under $(VERSIONS_DIR), reusing $(TORCH):
#   oldest-transformers  the oldest transformers the course supports (4.56), with the instructor's tools
#   colab                what a student's Google Colab has (late 2026): transformers 5.15, IPython 7.34 with
#                        Colab's ipykernel 6.17; only what a student installs (nbgrader needs IPython >= 8.10),
#                        so the tests that need nbgrader are left out; the notebooks run (small sizes) in its kernels
VERSIONS ?= oldest-transformers colab
VERSIONS_DIR ?= $(VENV)/versions
INSTALL_oldest-transformers := -e ".[dev]" "transformers==4.56.*"
TESTS_oldest-transformers := -m "not notebook and not nbgrader"
INSTALL_colab := -e . "transformers==5.15.*" "ipython==7.34.0" "ipykernel==6.17.*" "pytest>=8" pytest-xdist "hypothesis>=6"
TESTS_colab := -m "not nbgrader" --ignore=tests/test_grade_command.py --ignore=tests/test_tamper.py --ignore=tests/test_release.py --ignore=tests/test_example_class.py --ignore=tests/test_lms.py

# Kernels are confined by bubblewrap (bwrap): `make sandbox` installs it where it is missing (Debian or
# Ubuntu, as root) and says whether kernels can be confined on this machine.
.PHONY: setup sandbox example-class test test-full-size test-versions test-oldest-transformers test-colab clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

sandbox: setup
	command -v bwrap >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap; } \
		|| echo "bubblewrap is not installed: kernels will run unconfined (install the bubblewrap package)"
	$(BIN)/python -c "from attention_course.grading.isolation import bwrap, sandbox_mode; m = sandbox_mode(); print('kernels confined by', bwrap(), '(' + m + ')' if m else 'kernels cannot be confined here (bwrap: %s)' % bwrap())"

example-class: setup
	$(RUN) $(BIN)/attention-course example-class

test: setup
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

# Every lesson and source notebook top to bottom at full size (the sizes a student gets on Colab), on this
# machine's device, offline (the small local GPT-2): COURSE_QUICK=0. Prints each notebook's time.
test-full-size: setup
	$(RUN) COURSE_QUICK=0 HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python -m pytest tests/test_notebooks.py -m notebook -p no:xdist -s --durations=0 $(PYTEST_ARGS)

test-versions: $(VERSIONS:%=test-version-%)
test-oldest-transformers: test-version-oldest-transformers
test-colab: test-version-colab

# Not .PHONY: make skips pattern rules for phony targets.
test-version-%:
	test -x $(VERSIONS_DIR)/$*/bin/python || $(PYTHON) -m venv $(VERSIONS_DIR)/$*
	$(VERSIONS_DIR)/$*/bin/python -c "import torch" 2>/dev/null || $(VERSIONS_DIR)/$*/bin/python -m pip install -q "$(TORCH)"
	$(VERSIONS_DIR)/$*/bin/python -m pip install -q $(INSTALL_$*)
	$(VERSIONS_DIR)/$*/bin/python -c "import sys, torch, transformers, IPython; print('$*: Python', sys.version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__, '| IPython', IPython.__version__)"
	PATH="$(abspath $(VERSIONS_DIR)/$*/bin):$$PATH" HF_HUB_OFFLINE=1 $(VERSIONS_DIR)/$*/bin/python -m pytest -n 2 --dist loadfile --durations=10 $(TESTS_$*) $(PYTEST_ARGS)

clean:
	rm -rf submitted autograded feedback gradebook.db grades.csv
