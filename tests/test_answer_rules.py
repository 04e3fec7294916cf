"""The answer language (attention_course.answer_rules) and what grading runs of a student's cells
(verdicts.judge.harvest_notebook): what is read as a breach, named with its line; that no example
student (solutions, typical mistakes, other valid styles) breaks a rule; and that a cell's prints and
magics are left out of grading while its definitions are kept, at the lines they were written."""

import nbformat
import pytest

from attention_course.answer_rules import Rules, read_cell
from attention_course.grading.examples import build_submission, students_of
from attention_course.grading.cells import is_harvest_cell
from attention_course.grading.course import ASSIGNMENTS, release_notebook, source_notebook
from attention_course.answer_rules import accepted_code
from attention_course.grading.verdicts.judge import answer_rules, harvest_notebook
from course_copy import ROOT

GIVEN = Rules(given={"torch": "torch", "F": "torch.nn.functional", "nn": "torch.nn", "math": "math", "device": "",
                     "checks": "attention_course.checks.causal_attention", "causal_mask": "attention_course.kernels.causal.causal_mask",
                     "hf_greedy": "attention_course.gpt2_forward.hf_greedy"},
              handed_over=frozenset({"attention_course.kernels.causal.causal_mask"}), own_classes=frozenset({"Layer"}))


def _notebooks(assignment):
    return (nbformat.read(source_notebook(ROOT, assignment), as_version=4),
            nbformat.read(release_notebook(ROOT, assignment), as_version=4))


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_no_example_student_breaks_a_rule(assignment):
    source, release = _notebooks(assignment)
    for student in students_of(assignment):
        _, left_out = harvest_notebook(build_submission(student, source, release), assignment, source, seed=1)
        assert left_out == [], (student.name, [str(b) for b in left_out])


@pytest.mark.parametrize(("code", "named", "line"), [
    ("import attention_course as ac\nh = ac.grading.harvest", "import attention_course: answers may import only", 1),
    ("import inspect\nexec('\\n' + inspect.getsource(checks))", "import inspect", 1),
    ("x = 1\ny = eval('x')", "eval: runs code from a string", 2),
    ("def f(q, k, v):\n    with torch.overrides._pop_mode_temporarily():\n        return 0", "the attribute _pop_mode_temporarily", 2),
    ("def f(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v)", "scaled_dot_product_attention: torch's fused attention", 2),
    ("from torch.nn.functional import scaled_dot_product_attention as sdpa", "scaled_dot_product_attention", 1),
    ("def f(q):\n    return getattr(F, 'scaled_dot_product_' + 'attention')(q, q, q)", "getattr with a computed name", 2),
    ("def f(q):\n    return getattr(F, 'scaled_dot_product_attention')(q, q, q)", "scaled_dot_product_attention", 2),
    ("import functools\ndef f(q):\n    return functools.reduce(getattr, ['nn', 'functional'], torch)", "getattr passed as a value", 3),
    ("layer = nn.MultiheadAttention(8, 2)", "MultiheadAttention: torch's multi-head attention", 1),
    ("def f(m, x):\n    return m.generate(x)", "generate: Hugging Face's generate", 2),
    ("def f(p):\n    return torch.load(p)", "load: loads files (pickles)", 2),
    ("import threading", "import threading", 1),
    ("import signal", "import signal", 1),
    ("import numpy as np\nx = np.load('keys.npy')", "load: loads files", 2),
    ("torch.allclose = lambda *a, **k: True", "torch.allclose = ...: it changes something imported", 1),
    ("T = type(torch.zeros(1))\nT.add = print", "T.add = ...: set attributes only on self", 2),
    ("setattr(torch.Tensor, 'add', print)", "setattr(torch.Tensor, ...): it changes something imported", 1),
    ("F = None", "it rebinds F, which is imported", 1),
    ("def f(q):\n    return checks.reference(q)", "checks (attention_course.checks.causal_attention): the course's own code", 2),
    ("def f(m, q):\n    return hf_greedy(m, q, 3)", "hf_greedy (attention_course.gpt2_forward.hf_greedy)", 2),
    ("def f(x):\n    return globals()['attention'](x)", "globals: reaches the notebook's namespace", 2),
    ("def f(x):\n    return x.__class__", "the attribute __class__", 2),
    ("class T(torch.Tensor):\n    def __torch_function__(cls, *a):\n        return 0", "the method __torch_function__", 2),
    ("def f():\n    return open('/etc/passwd').read()", "open: reads or writes files", 2),
    ("def f():\n    return get_ipython()", "get_ipython: reaches IPython's machinery", 2),
    ("def f(x, names=('a',)):\n    fs = []\n    for name in ('a', 'b'):\n        fs.append(lambda: getattr(x, name))\n"
     "    name = '_secret'\n    return fs", "getattr with a computed name", 4),
])
def test_each_breach_is_named_with_its_line(code, named, line):
    found = read_cell(code, "cell 4", GIVEN)
    assert found, code
    assert named in found[0].what and found[0].line == line, [str(b) for b in found]
    assert str(found[0]).endswith(f"(line {line} of cell 4)")


@pytest.mark.parametrize("code", [
    "def attention(q, k, v, causal=True):\n    s = torch.einsum('...qd,...kd->...qk', q, k) / math.sqrt(q.shape[-1])\n"
    "    s = torch.where(causal_mask(q.shape[-2], k.shape[-2], device=q.device), s, torch.finfo(s.dtype).min)\n"
    "    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v",
    "def repeat_kv(x, n_rep):\n    b, g, t, d = x.shape\n    return x[:, :, None].expand(b, g, n_rep, t, d).reshape(b, g * n_rep, t, d)",
    "class Layer(nn.Module):\n    def __init__(self, d):\n        super().__init__()\n        self.proj = nn.Linear(d, d)\n"
    "    def forward(self, x):\n        return self.proj(x)\n    def __len__(self):\n        return 1",
    "def convert(m):\n    new = Layer(4)\n    new.proj.weight = nn.Parameter(m.weight.clone())\n    return new",
    "def convert(m):\n    for name in ('q_proj', 'k_proj'):\n        getattr(m, name).weight.mul_(2)\n    return m",
    "import torch.nn.functional as F\nfrom typing import Optional\nfrom collections import defaultdict\nimport einops",
    "from dataclasses import dataclass\n@dataclass\nclass Step:\n    position: int = 0",
    "q1_answer = 3 * 1024\n_ = q1_answer",
    "def f(x):\n    return F.softmax(x, dim=-1)  # F.scaled_dot_product_attention would be a shortcut",
    "def f(cache, k):\n    cache.keys[:, :, 0] = k\n    return cache",
])
def test_ordinary_code_keeps_to_the_rules(code):
    assert read_cell(code, "cell", GIVEN) == []


def test_torch_fused_attention_is_allowed_where_the_notebook_hands_over_attention():
    code = "def f(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v)"
    assert read_cell(code, "cell", Rules(fused_allowed=True)) == []
    assert read_cell("layer = nn.MultiheadAttention(8, 2)", "cell", Rules(fused_allowed=True)) != []


def test_grading_runs_a_cells_definitions_and_leaves_out_its_prints_and_magics():
    code = "%timeit 1\nimport math\n\n\n@staticmethod\ndef f(x):\n    return x\nprint(f(2))\ny = f(3)\n!ls"
    accepted, breaches = accepted_code(code, "cell", GIVEN)
    assert breaches == []
    lines = accepted.splitlines()
    assert lines[1] == "import math" and lines[4] == "@staticmethod" and lines[5] == "def f(x):" and lines[8] == "y = f(3)"
    assert "print" not in accepted and "timeit" not in accepted and "ls" not in accepted


def test_a_cell_outside_the_rules_is_left_out_whole_and_named():
    source, release = _notebooks("01_causal_attention")
    nb = build_submission(students_of("01_causal_attention")[0], source, release)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "attention")
    cell.source = "import inspect\n" + cell.source
    harvest_nb, left_out = harvest_notebook(nb, "01_causal_attention", source, seed=1)
    assert [str(b) for b in left_out] == ["import inspect: answers may import only torch, torch.nn, torch.nn.functional, math, numpy, "
                                          "einops, functools, itertools, typing, dataclasses, collections, collections.abc, time "
                                          "(line 1 of attention)"]
    code = "\n".join(c.source for c in harvest_nb.cells if not is_harvest_cell(c))
    assert "def attention(" not in code and "def attention_weights(" in code
    tests = {c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert not any(c.source in tests for c in harvest_nb.cells), "no test cell runs where the verdicts come from"


def test_the_rules_of_an_assignment_hand_over_what_its_setup_cell_gives():
    source, release = _notebooks("03_mqa")
    rules = answer_rules("03_mqa", source, release)
    assert not rules.forbidden_given("causal_mask") and not rules.forbidden_given("KVCache")
    assert rules.forbidden_given("checks") and not rules.fused_allowed
    assert answer_rules("02_kv_cache", *_notebooks("02_kv_cache")).fused_allowed


def _defined_in_a_cell(code: str, name: str, namespace: dict):
    """``name`` as a notebook cell defines it: compiled from a file that is not on disk, its lines in
    linecache (as IPython keeps a cell's code)."""
    import linecache

    filename = f"/nonexistent/ipykernel/cell_{abs(hash(code))}.py"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    exec(compile(code, filename, "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize(("check", "code", "name"), [
    ("attention_course.checks.causal_attention:check_causal_mask",
     "import inspect\ndef causal_mask(n_queries, n_keys, device=None):\n"
     "    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)", "causal_mask"),
    ("attention_course.checks.causal_attention:check_attention",
     "def attention(q, k, v, causal=True):\n    return getattr(F, 'scaled_dot_product_' + 'attention')(q, k, v)", "attention"),
    ("attention_course.checks.gqa:check_repeat_kv",
     "def repeat_kv(x, n_rep):\n    return x.__class__.repeat_interleave(x, n_rep, dim=1)", "repeat_kv"),
    ("attention_course.checks.quiz:check_formula",
     "def kv_params(d_model, n_heads):\n    return eval('2 * d_model * d_model')", "kv_params"),
])
def test_the_visible_checks_read_the_cell_as_the_grader_does(check, code, name):
    import importlib

    import torch
    import torch.nn.functional as F

    module, function = check.split(":")
    student = _defined_in_a_cell(code, name, {"torch": torch, "F": F, "__name__": "__main__"})
    with pytest.raises(AssertionError, match="outside the rules in the box at the top, so grading would leave the cell out"):
        check = getattr(importlib.import_module(module), function)
        check("kv_params", student, [(8, 2)]) if function == "check_formula" else check(student)


def test_a_print_in_a_cell_is_no_breach_for_the_visible_checks_either():
    import torch

    from attention_course.checks.causal_attention import check_causal_mask

    import inspect

    from attention_course.answer_rules import as_python
    from attention_course.kernels import causal

    code = inspect.getsource(causal.causal_mask) + "print(causal_mask(2, 3))\n%timeit causal_mask(4, 4)\n"

    class Shell:  # what the %timeit line calls
        def run_line_magic(self, *args):
            pass

    namespace = {"torch": torch, "get_ipython": Shell, "__name__": "__main__"}
    check_causal_mask(_defined_in_a_cell(as_python(code), "causal_mask", namespace))


def test_the_visible_reading_takes_objects_of_the_notebook_as_plain_values():
    import torch

    from attention_course.checks.kv_cache import check_kv_cache_bytes
    from attention_course.gpt2_forward import GPT2Decoder
    from attention_course.kernels import kv_cache

    class Model(torch.nn.Module):  # an object of a package class, as lesson 02's your_model
        pass

    Model.__module__ = GPT2Decoder.__module__
    namespace = {"your_model": Model(), "GPT2Decoder": GPT2Decoder, "__name__": "__main__"}
    import inspect

    check_kv_cache_bytes(_defined_in_a_cell(inspect.getsource(kv_cache.kv_cache_bytes), "kv_cache_bytes", namespace))
