#!/usr/bin/env bash
# The GPU check, for when a machine with CUDA is at hand: the whole test suite with its CUDA
# cases (kernels, checks in thorough mode, nbgrader end to end) and every notebook run on the
# GPU at full size (COURSE_QUICK=0). Usage: bash scripts/gpu_check.sh  (after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
# The checks compare values on the CPU only (scores never depend on the grader's hardware); here they run on CUDA too.
ATTENTION_COURSE_CHECKS_ON_CUDA=1 COURSE_QUICK=0 "$PY" -m pytest tests -q -rs --durations=15 -p no:cacheprovider
