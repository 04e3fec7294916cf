"""Reading a submission for code that reaches into grading: what it flags, and that no example
student's code (solutions, typical mistakes, other valid styles) is flagged."""

import nbformat
import pytest

from attention_course.examples import build_submission, students_of
from attention_course.grading.cells import is_solution_cell, is_test_cell
from attention_course.grading.course import ASSIGNMENTS, release_notebook, source_notebook
from attention_course.grading.verdicts.tampering import tampering
from course_copy import ROOT


def _setup(source) -> list[str]:
    return [c.source for c in source.cells if c.cell_type == "code" and not is_test_cell(c) and not is_solution_cell(c)]


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_no_example_student_is_flagged(assignment):
    source = nbformat.read(source_notebook(ROOT, assignment), as_version=4)
    release = nbformat.read(release_notebook(ROOT, assignment), as_version=4)
    for student in students_of(assignment):
        assert tampering(build_submission(student, source, release), _setup(source)) == "", student.name


def _notebook_with(code: str):
    source = nbformat.read(source_notebook(ROOT, "01_causal_attention"), as_version=4)
    nb = nbformat.read(release_notebook(ROOT, "01_causal_attention"), as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell(code))
    return nb, _setup(source)


@pytest.mark.parametrize(("code", "found"), [
    ("get_ipython().input_transformers_post.append(lambda lines: [])", "rewrites later cells"),
    ("ip = get_ipython()\nip.ast_transformers.append(object())", "rewrites later cells"),
    ("get_ipython().events.register('post_run_cell', print)", "hooks into cell execution"),
    ("get_ipython().set_custom_exc((Exception,), print)", "replaces error handling"),
    ("import sys\nsys.modules['attention_course.checks'] = None", "sys.modules"),
    ("import sys\nsys.setprofile(None)", "replaces the profiler"),
    ("torch.allclose = lambda *a, **k: True", "torch.allclose = ... (replaces part of torch)"),
    ("checks.check_attention = print", "replaces part of attention_course.checks.causal_attention"),
    ("setattr(torch.Tensor, '__eq__', lambda s, o: True)", "replaces part of torch"),
    ("import torch.nn.functional as F\nF.softmax = None", "F.softmax = ..."),
    ("import importlib", "import importlib"),
    ("from attention_course.grading import harvest", "import attention_course.grading"),
    ("m = __import__('sys')", "__import__"),
    ("import ctypes\nctypes.string_at(0)", "import ctypes"),
])
def test_code_that_reaches_into_grading_is_named(code, found):
    message = tampering(*_notebook_with(code))
    assert found in message and "cell 4" in message, message


@pytest.mark.parametrize("code", [
    "torch.backends.cudnn.benchmark = True",
    "class Layer(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.proj = torch.nn.Linear(2, 2)",
    "x = torch.zeros(3)\nx.data = torch.ones(3)",
    "%timeit causal_mask(4, 4)",
    "!nvidia-smi",
    "import gc\ngc.collect()",
    "def broken(:\n    pass",  # a syntax error costs its own items when it runs, nothing more
])
def test_ordinary_code_is_not_flagged(code):
    assert tampering(*_notebook_with(code)) == ""
