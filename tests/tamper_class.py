"""Submissions of 01_causal_attention that try to earn points without solving anything, each the
way a student would try it against stock nbgrader (where test cells run in the student's own
process, after the student's code). Each one answers every question wrongly (well-formed wrong
code, wrong numbers and letters) and then tries to make its test cells pass anyway.

``TAMPERS``: name -> (code put at the top of the first answer cell, answer cell -> code put after
its wrong answer); ``{root}``, ``{marker}`` and ``{submitted}`` are filled in with the course
directory, a scratch file and the student's hand-in file."""

import nbformat

from attention_course.grading.examples import Student, build_submission
from attention_course.grading.cells import grade_id, is_solution_cell
from course_copy import ROOT

ASSIGNMENT = "01_causal_attention"
NOTEBOOK = "causal_attention.ipynb"

WRONG = {
    "causal_mask": "def causal_mask(n_queries, n_keys, device=None):\n"
                   "    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device)",
    "attention_weights": "def attention_weights(q, k, causal=True):\n"
                         "    return torch.full((*q.shape[:-1], k.shape[-2]), 1.0 / k.shape[-2])",
    "attention": "def attention(q, k, v, causal=True):\n    return torch.zeros(*q.shape[:-1], v.shape[-1])",
    "heads": "def split_heads(x, n_heads):\n    return x.reshape(x.shape[0], n_heads, x.shape[1], -1)\n\n\n"
             "def merge_heads(x):\n    return x.reshape(x.shape[0], x.shape[2], -1)",
    "gpt2_attention": "def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):\n"
                      "    return x.clone()",
    "q1": "q1a_score_entries = 1024\nq1b_unmasked_entries = 1024 * 1024 // 2",
    "q2": "q2_gpt2_attention_params = 4 * 768 * 768",
    "q3": 'q3_appended_token = "D"',
    "q4": "q4_cached_pairs = 24",
    "q5": 'q5_scale = "B"',
}

SWALLOW_ERRORS = '''
import ast
class _Swallow(ast.NodeTransformer):
    def visit_Module(self, node):
        handler = ast.ExceptHandler(type=ast.Name("BaseException", ast.Load()), name=None, body=[ast.Pass()])
        node.body = [ast.Try(body=node.body or [ast.Pass()], handlers=[handler], orelse=[], finalbody=[])]
        return ast.fix_missing_locations(node)
getattr(get_ipython(), "ast_" + "transformers").append(_Swallow())
'''
DELETE_CHECKS = '''
import ast
class _Delete(ast.NodeTransformer):
    def visit_Assert(self, node):
        return None
    def visit_Raise(self, node):
        return None
    def visit_Expr(self, node):  # the test cells' check calls
        return None if isinstance(node.value, ast.Call) else node
getattr(get_ipython(), "ast_" + "transformers").append(_Delete())
'''
SWAP_IN_REFERENCES = '''
from attention_course.kernels import causal as _solutions
def _swap(*_):
    for _name in ("causal_mask", "attention_weights", "attention", "split_heads", "merge_heads", "gpt2_attention"):
        globals()[_name] = getattr(_solutions, _name)
getattr(get_ipython(), "eve" + "nts").register("post_run_cell", _swap)
'''
PATCH_COMPARISONS = '''
import numpy
vars(torch)["allclose"] = lambda *args, **kwargs: True
vars(torch.testing)["assert_close"] = lambda *args, **kwargs: None
vars(numpy.testing)["assert_allclose"] = lambda *args, **kwargs: None
vars(numpy)["allclose"] = lambda *args, **kwargs: True
'''
TENSOR_OVERRIDES = '''
_T = torch.Tensor
for _name, _fake in {"__eq__": lambda s, o: True, "__ne__": lambda s, o: False, "__bool__": lambda s: True,
                     "item": lambda s: 0.0, "all": lambda s, *a, **k: True, "any": lambda s, *a, **k: False}.items():
    setattr(_T, _name, _fake)
'''
REPLACE_CHECKS = '''
_m = checks
for _name in dir(_m):
    if _name.startswith("check_") or _name.startswith("expect_"):
        setattr(_m, _name, lambda *args, **kwargs: None)
globals().update(check_number=lambda *a, **k: None, check_choice=lambda *a, **k: None)
'''
FAKE_PACKAGE = '''
import sys, types, json
from IPython.display import display
_fake_checks = types.ModuleType("attention_course.checks.causal_attention")
_fake_checks.__getattr__ = lambda name: (lambda *args, **kwargs: None)
sys.modules["attention_course.checks.causal_attention"] = _fake_checks
globals().update(checks=_fake_checks, check_number=lambda *a, **k: None, check_choice=lambda *a, **k: None)
# A harvest that reports the reference's outputs instead of the notebook's:
from attention_course import exercises as _x
from attention_course.exercises.kernel import harvest as _kh, plain_data as _pd
_fake_harvest = types.ModuleType("attention_course.exercises.kernel.harvest")
def _report(namespace, plan_json):
    plan = json.loads(plan_json)
    out = {}
    for asked in plan["exercises"]:
        exercise = next(e for e in _x.exercises_of("01_causal_attention") if e.grade_id == asked["grade_id"])
        cases = exercise.cases(torch.Generator().manual_seed(asked["seed"]), True)
        out[exercise.grade_id] = {"cases": [{k: _pd.encode(t) for k, t in exercise.expected(c).items()} for c in cases]}
    display({_kh.HARVEST_MIME: json.dumps({"exercises": out, "answers": {}, "formulas": {}})}, raw=True)
_fake_harvest.harvest = _report
sys.modules["attention_course.exercises.kernel.harvest"] = _fake_harvest
'''
MEMORIZED_VISIBLE_OUTPUTS = '''
from attention_course.checks import causal_attention as _visible
from attention_course.kernels import causal as _k
_memo = {}
def _record(q, k, v, causal=True):
    _memo[(q.cpu().numpy().tobytes(), causal)] = _k.attention(q, k, v, causal)
    return _memo[(q.cpu().numpy().tobytes(), causal)]
_visible.check_attention(_record)  # the visible test's own inputs, answered once, here
'''
MEMORIZED_ATTENTION = '''
def attention(q, k, v, causal=True):
    return _memo.get((q.cpu().numpy().tobytes(), causal), torch.zeros(*q.shape[:-1], v.shape[-1]))
'''
READ_KEYS = """
import json, re
try:
    _cells = json.load(open("{root}/source/01_causal_attention/causal_attention.ipynb"))["cells"]
    _hidden = "".join("".join(cell["source"]) for cell in _cells)
    _keys = dict(re.findall(r'check_choice[(]"(q[a-z0-9_]+)", [a-z0-9_]+, "ABCD", "([A-D])"', _hidden))
    print("read the answer keys:", _keys)
except OSError as error:
    _keys = dict()
    print("could not read the answer keys:", error)
"""
READ_KEYS_ANSWERS = 'q3_appended_token = _keys.get("q3_appended_token", "D")\n'
WRITE_RESULTS = '''
import glob, os
_written = []
for _path in ["{root}/gradebook.db", *glob.glob("{root}/autograded/*/01_causal_attention/*.ipynb"),
              *glob.glob("{root}/.grading/01_causal_attention/outcomes/*.json"), "{root}/feedback/forged.html", "{submitted}"]:
    try:
        with open(_path, "a") as _file:
            _file.write("forged")
        _written.append(_path)
    except OSError:
        pass
print("wrote:", _written)
'''
LATE_CHILD = '''
import subprocess, sys
_late = "import time; time.sleep(4); open('{marker}', 'w').write('changed after its cell'); open('{submitted}', 'a').write('late')"
subprocess.Popen([sys.executable, "-c", _late], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''
NETWORK = '''
import socket
try:
    socket.create_connection(("pypi.org", 443), timeout=5).close()
    print("network: reachable")
except OSError as error:
    print("network: unreachable:", error)
'''
WALK_FOR_NOTEBOOKS = '''
import os
_names = ("causal_attention.ipynb", "kv_cache.ipynb", "mqa.ipynb", "gqa.ipynb", "quiz.ipynb")
_found = []
for _top in [p for p in os.listdir("/") if p not in ("proc", "sys", "dev", "usr")]:
    for _folder, _dirs, _files in os.walk("/" + _top):
        _found += [os.path.join(_folder, f) for f in _files if f in _names and not _folder.startswith(os.getcwd())]
print("course notebooks elsewhere:", _found[:20])
'''
EXIT_EARLY = "import os\nos._exit(0)\n"
FAKE_PASSED = 'print("✓ causal_mask: correct on 12 cases")\nprint("All tests passed: 20 / 20")\n'
CUSTOM_HANDLER = 'getattr(get_ipython(), "set_custom" + "_exc")((BaseException,), lambda *args, **kwargs: None)\n'
SILENCED_TRACEBACKS = '''
import sys
_ip = get_ipython()
setattr(sys, "except" + "hook", lambda *args: None)
for _name in ("show" + "traceback", "_show" + "traceback", "showsyntaxerror"):
    setattr(_ip, _name, lambda *args, **kwargs: None)
'''
BLANK_LATER_CELLS = 'getattr(get_ipython(), "input_transformers" + "_post").append(lambda lines: [])\n'
PLAIN_BLANK_LATER_CELLS = "get_ipython().input_transformers_post.append(lambda lines: [])\n"
SDPA_ALIAS = '''
import torch.nn.functional as F
_fused = getattr(F, "scaled_dot_product_" + "attention")
'''
SDPA_ATTENTION = '''
def attention(q, k, v, causal=True):
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(k.shape[-2] - q.shape[-2]) if causal else None
    return _fused(q, k, v, attn_mask=mask)
'''
REFERENCE_IMPORT = "from attention_course.kernels.causal import *\n"
# Routes around a reading of the notebook that only looked for forbidden spellings:
GRADING_ALIAS = '''
import attention_course as _ac
_h = _ac.exercises.kernel.harvest
_h.collect = lambda namespace, plan: dict()
'''
EXEC_REFERENCE_SOURCE = '''
import inspect
import attention_course.kernels.causal as _reference
exec("\\n" + inspect.getsource(_reference))
'''
POPPED_TORCH_MODE = '''
def attention(q, k, v, causal=True):
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(k.shape[-2] - q.shape[-2]) if causal else None
    scope = dict(torch=torch, q=q, k=k, v=v, mask=mask)
    exec("with torch.overrides._pop_mode_temporarily():\\n"
         "    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)", scope)
    return scope["y"]
'''
COMPUTED_GETATTR = '''
def attention(q, k, v, causal=True):
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(k.shape[-2] - q.shape[-2]) if causal else None
    return getattr(torch.nn.functional, "scaled_dot_product_" + "attention")(q, k, v, attn_mask=mask)
'''
THREADS_AND_SIGNALS = '''
import signal, threading
signal.signal(signal.SIGALRM, signal.SIG_IGN)
threading.Thread(target=lambda: None).start()
'''
PICKLED_OUTPUTS = '''
def causal_mask(n_queries, n_keys, device=None):
    return torch.load("{root}/answers.pt")[(n_queries, n_keys)]
'''
# The install cell imports importlib for its own use: through it, the reference (or anything else).
SETUP_IMPORTLIB = '''
def causal_mask(n_queries, n_keys, device=None):
    return importlib.import_module("attention_course.kernels.causal").causal_mask(n_queries, n_keys, device)
'''
TOP_LEVEL_PATCH = "torch.allclose = lambda *args, **kwargs: True\ntorch.Tensor.all = lambda *args, **kwargs: True\n"

TAMPERS = {
    "blank_later_cells": (BLANK_LATER_CELLS, {}),
    "blank_later_cells_plainly": (PLAIN_BLANK_LATER_CELLS, {}),
    "swallow_errors_ast": (SWALLOW_ERRORS, {}),
    "delete_checks_ast": (DELETE_CHECKS, {}),
    "swap_in_references": (SWAP_IN_REFERENCES, {}),
    "patch_comparisons": (PATCH_COMPARISONS, {}),
    "tensor_overrides": (TENSOR_OVERRIDES, {}),
    "replace_checks": (REPLACE_CHECKS, {}),
    "fake_package": (FAKE_PACKAGE, {}),
    "memorized_visible_outputs": (MEMORIZED_VISIBLE_OUTPUTS, {"attention": MEMORIZED_ATTENTION}),
    "read_answer_keys": (READ_KEYS, {"q3": READ_KEYS_ANSWERS}),
    "write_results": (WRITE_RESULTS, {}),
    "exit_early": (EXIT_EARLY, {}),
    "fake_passed_lines": (FAKE_PASSED, {}),
    "custom_exception_handler": (CUSTOM_HANDLER, {}),
    "silenced_tracebacks": (SILENCED_TRACEBACKS, {}),
    "late_child_process": (LATE_CHILD, {}),
    "sdpa_alias": (SDPA_ALIAS, {"attention": SDPA_ATTENTION}),
    "reference_import": (REFERENCE_IMPORT, {"causal_mask": "", "attention_weights": "", "attention": "", "heads": "",
                                            "gpt2_attention": ""}),
    "grading_alias": (GRADING_ALIAS, {}),
    "exec_reference_source": (EXEC_REFERENCE_SOURCE, {"causal_mask": "", "attention_weights": "", "attention": "", "heads": "",
                                                      "gpt2_attention": ""}),
    "popped_torch_mode": ("", {"attention": POPPED_TORCH_MODE}),
    "computed_getattr": ("", {"attention": COMPUTED_GETATTR}),
    "threads_and_signals": (THREADS_AND_SIGNALS, {}),
    "pickled_outputs": ("", {"causal_mask": PICKLED_OUTPUTS}),
    "top_level_patch": (TOP_LEVEL_PATCH, {}),
    "setup_importlib": ("", {"causal_mask": SETUP_IMPORTLIB}),
}
# Cases whose code stands in a cell the student added after the answers, not in an answer cell.
IN_AN_ADDED_CELL = {"added_cell_reference": "from attention_course.kernels.causal import *\n"}


def _filled(code: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():
        code = code.replace("{" + key + "}", value)
    return code


def _notebook(answers: dict[str, str], added: str = ""):
    """The solution with ``answers`` in place; ``added``: a cell of the student's own after the last answer."""
    source = nbformat.read(ROOT / "source" / ASSIGNMENT / NOTEBOOK, as_version=4)
    release = nbformat.read(ROOT / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    nb = build_submission(Student("solution", ""), source, release)
    for cell in nb.cells:
        if is_solution_cell(cell):
            cell.source = answers.get(grade_id(cell), cell.source)
    if added:
        last = max(index for index, cell in enumerate(nb.cells) if is_solution_cell(cell))
        nb.cells.insert(last + 1, nbformat.v4.new_code_cell(added))
    return nb


def tamper_class(root: str, marker: str, submitted_of) -> dict[str, bytes]:
    """{student/file: bytes}: the tamper cases, an honest student, and an honest student who probes
    the confinement in a cell of its own (network, the grader's files, the course's notebooks anywhere). ``submitted_of(student)``: the path of the file
    that student hands in."""
    files = {}
    for name, (before, after) in TAMPERS.items():
        fill = {"root": root, "marker": marker, "submitted": submitted_of(name)}
        answers = {cell: (_filled(before, fill) if cell == "causal_mask" else "") + WRONG[cell]
                   + ("\n" + after[cell] if after.get(cell) else "") for cell in WRONG}
        if name in ("reference_import", "exec_reference_source"):  # the answers come from the code before them
            answers = {cell: (_filled(before, fill) if cell == "causal_mask" else "") + after.get(cell, WRONG[cell]) for cell in WRONG}
        elif not before:  # the answer itself takes the route
            answers = {cell: _filled(after.get(cell, WRONG[cell]), fill) for cell in WRONG}
        files[f"{name}/{NOTEBOOK}"] = nbformat.writes(_notebook(answers)).encode()
    for name, code in IN_AN_ADDED_CELL.items():
        files[f"{name}/{NOTEBOOK}"] = nbformat.writes(_notebook({cell: "" for cell in WRONG}, added=code)).encode()
    files[f"honest/{NOTEBOOK}"] = nbformat.writes(_notebook({})).encode()
    probe = _filled(READ_KEYS + WRITE_RESULTS + NETWORK + WALK_FOR_NOTEBOOKS, {"root": root, "marker": marker, "submitted": submitted_of("prober")})
    files[f"prober/{NOTEBOOK}"] = nbformat.writes(_notebook({}, added=probe)).encode()
    return files
