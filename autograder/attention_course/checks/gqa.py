"""The test cells' checks of 04_gqa: its exercises' specs (``exercises/gqa.py``) run on the notebook's
functions; 03_mqa's (``checks.mqa``) are the same parts with one key/value head. ``thorough=True`` is
what hidden tests use: more shapes, shapes drawn from the seed, fewer queries than keys, float16 /
bfloat16, and Hugging Face ``LlamaAttention`` (identity rotary embeddings) as the layer's oracle."""

from attention_course.checks.diagnosis import run_checks
from attention_course.exercises import gqa as spec
from attention_course.exercises import mqa as mqa_spec


def check_repeat_kv(repeat_kv, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.REPEAT_KV, {"repeat_kv": repeat_kv}, thorough, seed)


def check_gqa_attention(gqa_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.GQA_ATTENTION, {"gqa_attention": gqa_attention}, thorough, seed)


def check_grouped_query_attention(GroupedQueryAttention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.GROUPED_QUERY_ATTENTION, {"GroupedQueryAttention": GroupedQueryAttention}, thorough, seed)


def check_mha_to_gqa(mha_to_gqa, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.MHA_TO_GQA, {"mha_to_gqa": mha_to_gqa}, thorough, seed)


def check_kv_projection_params(kv_projection_params, thorough: bool = False, seed: int = 0) -> None:
    """03's item (``checks.mqa`` exports it): against real ``LlamaAttention`` layers on the ``meta`` device when thorough."""
    __tracebackhide__ = True
    run_checks(mqa_spec.PARAMS, {"kv_projection_params": kv_projection_params}, thorough, seed)


__all__ = [
    "check_repeat_kv",
    "check_gqa_attention",
    "check_grouped_query_attention",
    "check_mha_to_gqa",
]
