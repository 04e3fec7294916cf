"""Out-of-process verdicts, without kernels: the harvest (``collect``) runs here on a notebook's
code executed in this process, and the grader's judgement (``verdicts``) on what it returns.

The spec: the instructor's solution passes every item on fresh seeds; torch's fused attention,
however it is reached, is a forbidden shortcut where an exercise asks for attention; wrong outputs
fail with the named mistake; answers and formulas are judged with the hidden tests' own keys. (That
the reference kernels cannot be reached at all is the harvest kernel's business: it has none, see
test_harvest_kernel.py; reading the answers rules out importing them, see test_answer_rules.py.)"""

import functools
import json

import nbformat
import pytest
import torch
from IPython.core.inputtransformer2 import TransformerManager

from attention_course.grading.cells import grade_id, is_solution_cell, is_test_cell, solution_code
from attention_course.grading.course import ASSIGNMENTS, source_notebook
from attention_course.assignments import BY_ID
from attention_course.exercises import exercises_of, harvest_request
from attention_course.exercises.kernel.harvest import collect
from attention_course.exercises.kernel.plain_data import decode, encode
from attention_course.grading.verdicts.judge import verdicts
from attention_course.grading.verdicts.quiz import plan as quiz_plan
from attention_course.grading.verdicts.quiz import quiz_keys
from course_copy import ROOT

STUDENT_FILE = "/tmp/ipykernel_0/student_cell.py"  # where IPython puts a cell's code: outside the libraries


@functools.cache
def source(assignment: str):
    return nbformat.read(source_notebook(ROOT, assignment), as_version=4)


def solved(assignment: str, replace: dict[str, str] | None = None) -> dict:
    """The notebook's namespace after its setup cell and the instructor's answers (``replace``:
    answer cell -> other code), compiled as a student's cells are."""
    namespace: dict = {"get_ipython": lambda: None}
    for cell in source(assignment).cells:
        if cell.cell_type != "code" or is_test_cell(cell) or (not is_solution_cell(cell) and grade_id(cell) != "setup"):
            continue
        code = (replace or {}).get(grade_id(cell), solution_code(cell) if is_solution_cell(cell) else cell.source)
        exec(compile(TransformerManager().transform_cell(code), STUDENT_FILE, "exec"), namespace)  # noqa: S102
    return namespace


def judged(assignment: str, namespace: dict, seed: int = 12345) -> dict[str, str]:
    fused_forbidden = not BY_ID[assignment].fused_attention_allowed
    exercises = [harvest_request(exercise, seed + index, fused_forbidden) for index, exercise in enumerate(exercises_of(assignment))]
    plan = {"seed": seed, "fused_forbidden": fused_forbidden, "exercises": exercises, **quiz_plan(quiz_keys(source(assignment)), seed)}
    harvested = json.loads(json.dumps(collect(namespace, plan)))  # across the process boundary: plain data only
    return verdicts(assignment, source(assignment), plan, harvested)


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
@pytest.mark.parametrize("seed", [1, 2])
def test_the_solution_passes_every_item_on_fresh_seeds(assignment, seed):
    found = judged(assignment, solved(assignment), seed)
    test_cells = {grade_id(cell) for cell in source(assignment).cells if is_test_cell(cell)}
    assert set(found) == test_cells
    assert {item: problem for item, problem in found.items() if problem} == {}


SDPA_ATTENTION = """
import torch.nn.functional as F
fused = getattr(F, "scaled_dot_product_" + "attention")
def attention(q, k, v, causal=True):
    return fused(q, k, v, attn_mask=causal_mask(q.shape[-2], k.shape[-2]) if causal else None)
"""
OPS_ATTENTION = """
def attention(q, k, v, causal=True):
    return torch.ops.aten.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q.shape[-2], k.shape[-2]) if causal else None)
"""
MHA_ATTENTION = """
def attention(q, k, v, causal=True):
    layer = torch.nn.MultiheadAttention(q.shape[-1], 1, bias=False, batch_first=True)
    return layer(q.flatten(0, -3), k.flatten(0, -3), v.flatten(0, -3), need_weights=False)[0].view(q.shape)
"""
@pytest.mark.parametrize(("cell", "code", "item", "named"), [
    ("attention", SDPA_ATTENTION, "test_attention", "scaled_dot_product_attention"),
    ("attention", OPS_ATTENTION, "test_attention", "scaled_dot_product_attention"),
    ("attention", MHA_ATTENTION, "test_attention", "multi_head_attention_forward"),
])
def test_fused_attention_is_a_forbidden_shortcut_whatever_the_alias(cell, code, item, named):
    found = judged("01_causal_attention", solved("01_causal_attention", {cell: code}))
    assert found[item].startswith("a forbidden shortcut") and named in found[item], found[item]
    assert not found["test_causal_mask"]


def test_earlier_assignments_functions_handed_over_by_the_setup_cell_are_allowed():
    # 02's solution calls 01's attention (imported by the setup cell), which calls torch's fused kernel.
    assert not judged("02_kv_cache", solved("02_kv_cache"))["test_cached_attention"]


def test_torch_fused_attention_is_allowed_where_the_notebook_hands_over_attention():
    namespace = solved("02_kv_cache")
    exec(compile("def attention(q, k, v, causal=True):\n"
                 "    mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None\n"
                 "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)", STUDENT_FILE, "exec"), namespace)  # noqa: S102
    assert not judged("02_kv_cache", namespace)["test_cached_attention"]


def test_the_model_handed_to_greedy_generate_holds_no_hugging_face_model_to_call():
    code = ("def greedy_generate(model, input_ids, max_new_tokens, use_cache=True):\n"
            "    return model.hf_model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)")
    found = judged("02_kv_cache", solved("02_kv_cache", {"generate": code}))
    assert "hf_model" in found["test_generate"], found["test_generate"]


def test_wrong_outputs_and_missing_names_fail_with_what_differs():
    found = judged("01_causal_attention", solved("01_causal_attention", {
        "causal_mask": "def causal_mask(n_queries, n_keys, device=None):\n"
                       "    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril()",  # top-left
        "gpt2_attention": "pass",
    }))
    assert "aligned top-left" in found["test_causal_mask"]  # the verdict names the mistake, as the notebook's check does
    assert "gpt2_attention is not defined" in found["test_gpt2_attention"]


def test_quiz_answers_are_judged_with_the_hidden_tests_keys_and_misconceptions():
    code = "def kv_cache_bytes(batch, layers, kv_heads, head_dim, seq_len, bytes_per_element):\n" \
           "    return batch * layers * kv_heads * seq_len * 2 * 2"
    found = judged("05_quiz", solved("05_quiz", {"q4_memory": code + "\nq4b_gpt2_medium_cache_bytes = 1\nq4c_mistral_cache_bytes = 2"}))
    assert "study notebook" in found["test_q4a"], found["test_q4a"]
    assert found["test_q4b"].startswith("q4b_gpt2_medium_cache_bytes: 1 is not right")
    assert not found["test_q1a"]


def test_a_formula_hard_coded_for_the_listed_configurations_fails_on_fresh_ones():
    namespace = solved("05_quiz")
    right = namespace["kv_params_mha"]
    listed = {tuple(call_config) for call in quiz_keys(source("05_quiz"))["test_q2a"] for call_config in call.configs}
    answers = {config: right(*config) for config in listed}
    namespace["kv_params_mha"] = lambda d_model, n_heads: answers.get((d_model, n_heads), 0)
    assert "= 0, but it is" in judged("05_quiz", namespace)["test_q2a"]


@pytest.mark.parametrize("value", [torch.randn(2, 3), torch.arange(6).view(2, 3), torch.randn(2, dtype=torch.bfloat16),
                                   torch.tensor([True, False]), 7, 2.5, "B", None])
def test_plain_data_round_trips_without_pickle(value):
    back = decode(json.loads(json.dumps(encode(value))))
    if isinstance(value, torch.Tensor):
        assert back.dtype == value.dtype and torch.equal(back, value)
    else:
        assert back == value


def test_objects_that_are_not_plain_data_decode_to_something_the_checks_reject():
    class Liar(int):
        def __eq__(self, other):
            return True

    assert decode(encode(Liar(3))) == 3 and type(decode(encode(Liar(3)))) is int
    assert repr(decode({"object": "x"})) == "<x>"
    assert repr(decode({"tensor": {"dtype": "float32", "shape": [5], "data": "AAAA"}})) == "<malformed tensor>"


@pytest.mark.parametrize("mode", ["Context", "Plain"])
def test_tracebacks_in_feedback_quote_no_hidden_test_line(mode):
    """However IPython formats a failing test cell's traceback (grading kernels: Plain, the cheaper by 0.05 s
    an error; a student's own kernel: Context, which quotes the lines around the failing one too), the
    feedback shows none of the hidden tests' lines: a failing one reads "(a hidden test)"."""
    import linecache
    import sys

    from IPython.core.ultratb import AutoFormattedTB

    from attention_course.grading.cells import ANSI, hidden_test_lines, hide_hidden_tests_in_tracebacks

    source = ("x = 1\nassert x == 1\n### BEGIN HIDDEN TESTS\nassert x + 1 == 2\nassert x + 1 == 3\nassert x > 0\n"
              "### END HIDDEN TESTS\n")
    filename = f"/tmp/ipykernel_0/hidden_{mode}.py"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        exec(compile(source, filename, "exec"), {})  # noqa: S102 - the test's own code
    except AssertionError:
        traceback = AutoFormattedTB(mode=mode).structured_traceback(*sys.exc_info())
    finally:
        del linecache.cache[filename]
    error = nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=traceback)
    cell = nbformat.v4.new_code_cell(source, outputs=[error])
    hidden = hidden_test_lines(cell)
    assert "assert x + 1 == 3" in ANSI.sub("", "\n".join(traceback))  # quoted before: the test has teeth
    hide_hidden_tests_in_tracebacks(cell, hidden)
    shown = ANSI.sub("", "\n".join(cell.outputs[0].traceback))
    assert "(a hidden test)" in shown
    assert not [line for line in shown.splitlines() if line.strip() in hidden or "HIDDEN TESTS" in line], shown
