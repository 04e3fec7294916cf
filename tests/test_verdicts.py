"""Out-of-process verdicts, without kernels: the harvest (``collect``) runs here on a notebook's
code executed in this process, and the grader's judgement (``verdicts``) on what it returns.

The spec: the instructor's solution passes every item on fresh seeds; a name bound to a reference
kernel, torch's fused attention or a Hugging Face module, however it is reached, is a forbidden
shortcut; wrong outputs fail; answers and formulas are judged with the hidden tests' own keys."""

import functools
import json

import nbformat
import pytest
import torch
from IPython.core.inputtransformer2 import TransformerManager

from attention_course.grading.cells import grade_id, is_solution_cell, is_test_cell, solution_code
from attention_course.grading.course import ASSIGNMENTS, source_notebook
from attention_course.grading.harvest import collect
from attention_course.grading.verdicts import assignment_spec, decode, encode
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
    exercises = [exercise.grade_id for exercise in assignment_spec(assignment).exercises]
    plan = {"assignment": assignment, "seed": seed, "exercises": exercises, **quiz_plan(quiz_keys(source(assignment)), seed)}
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
REFERENCE_ALIAS = "from attention_course.kernels.causal import attention"
REFERENCE_PARTIAL = "import functools\nfrom attention_course.kernels import causal\nattention = functools.partial(causal.attention)"
REFERENCE_WRAPPED = ("from attention_course.kernels import causal as reference\n"
                     "def attention(q, k, v, causal=True):\n    return reference.attention(q, k, v, causal)")
CHECKS_REFERENCE = "from attention_course.checks.causal_attention import _weights_variant\nattention_weights = _weights_variant"
HF_GPT2 = """
from transformers import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
def gpt2_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads):
    layer = GPT2Attention(GPT2Config(n_embd=x.shape[-1], n_head=n_heads, attn_pdrop=0, resid_pdrop=0), layer_idx=0).eval()
    layer.c_attn.weight.data, layer.c_attn.bias.data = c_attn_weight, c_attn_bias
    layer.c_proj.weight.data, layer.c_proj.bias.data = c_proj_weight, c_proj_bias
    return layer(x)[0]
"""
WATCH_REMOVED = """
import sys
from attention_course.kernels.causal import attention as _reference
def attention(q, k, v, causal=True):
    sys.setprofile(None)
    return _reference(q, k, v, causal)
"""


@pytest.mark.parametrize(("cell", "code", "item", "named"), [
    ("attention", SDPA_ATTENTION, "test_attention", "scaled_dot_product_attention"),
    ("attention", OPS_ATTENTION, "test_attention", "scaled_dot_product_attention"),
    ("attention", MHA_ATTENTION, "test_attention", "torch.nn.modules.activation.MultiheadAttention"),
    ("attention", REFERENCE_ALIAS, "test_attention", "attention_course.kernels.causal.attention"),
    ("attention", REFERENCE_PARTIAL, "test_attention", "attention_course.kernels.causal.attention"),
    ("attention", REFERENCE_WRAPPED, "test_attention", "attention_course.kernels.causal.attention"),
    ("attention_weights", CHECKS_REFERENCE, "test_attention_weights", "_weights_variant"),
    ("gpt2_attention", HF_GPT2, "test_gpt2_attention", "GPT2Attention"),
    ("attention", WATCH_REMOVED, "test_attention", "removed"),
])
def test_forbidden_shortcuts_are_named_whatever_the_alias(cell, code, item, named):
    found = judged("01_causal_attention", solved("01_causal_attention", {cell: code}))
    assert found[item].startswith("a forbidden shortcut") and named in found[item], found[item]
    assert not found["test_causal_mask"]


def test_earlier_assignments_functions_handed_over_by_the_setup_cell_are_allowed():
    # 02's solution calls 01's attention (imported by the setup cell), which calls torch's fused kernel.
    assert not judged("02_kv_cache", solved("02_kv_cache"))["test_cached_attention"]


def test_torch_fused_attention_is_allowed_where_the_notebook_hands_over_attention():
    namespace = solved("02_kv_cache")
    exec(compile("def attention(q, k, v, causal=True):\n"
                 "    mask = causal_mask(q.shape[-2], k.shape[-2]) if causal else None\n"
                 "    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)", STUDENT_FILE, "exec"), namespace)  # noqa: S102
    assert not judged("02_kv_cache", namespace)["test_cached_attention"]


def test_calling_hugging_face_generate_is_a_shortcut():
    code = ("def greedy_generate(model, input_ids, max_new_tokens, use_cache=True):\n"
            "    return hf_greedy(model.hf_model, input_ids, max_new_tokens, use_cache=use_cache)")
    found = judged("02_kv_cache", solved("02_kv_cache", {"generate": code}))
    assert found["test_generate"].startswith("a forbidden shortcut") and "hf_greedy" in found["test_generate"]


def test_a_subclass_of_the_reference_layer_is_a_shortcut():
    code = ("from attention_course.kernels import mqa\n"
            "class MultiQueryAttention(mqa.MultiQueryAttention):\n    pass")
    found = judged("03_mqa", solved("03_mqa", {"module": code}))
    assert found["test_module"].startswith("a forbidden shortcut"), found["test_module"]


def test_wrong_outputs_and_missing_names_fail_with_what_differs():
    found = judged("01_causal_attention", solved("01_causal_attention", {
        "causal_mask": "def causal_mask(n_queries, n_keys, device=None):\n"
                       "    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril()",  # top-left
        "gpt2_attention": "pass",
    }))
    assert "mask differs from the reference" in found["test_causal_mask"]
    assert "gpt2_attention is not defined" in found["test_gpt2_attention"]


def test_quiz_answers_are_judged_with_the_hidden_tests_keys_and_misconceptions():
    code = "def kv_cache_bytes(batch, layers, kv_heads, head_dim, seq_len, bytes_per_element):\n" \
           "    return batch * layers * kv_heads * seq_len * 2 * 2"
    found = judged("05_quiz", solved("05_quiz", {"q4_memory": code + "\nq4b_gpt2_medium_cache_bytes = 1\nq4c_mistral_cache_bytes = 2"}))
    assert "study notebook" in found["test_q4a"], found["test_q4a"]
    assert found["test_q4b"].startswith("q4b_gpt2_medium_cache_bytes: 1 is not right")
    assert not found["test_q1a"]


def test_a_formula_that_calls_the_package_is_a_shortcut():
    code = ("import torch\nfrom attention_course.model_configs import llama_cache_bytes\n"
            "def kv_cache_bytes(batch, layers, kv_heads, head_dim, seq_len, bytes_per_element):\n"
            "    return llama_cache_bytes(batch, layers, kv_heads, head_dim, seq_len, {2: torch.bfloat16, 4: torch.float32}[bytes_per_element])")
    namespace = solved("05_quiz")
    exec(compile(code, STUDENT_FILE, "exec"), namespace)  # noqa: S102
    assert "forbidden shortcut" in judged("05_quiz", namespace)["test_q4a"]


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
