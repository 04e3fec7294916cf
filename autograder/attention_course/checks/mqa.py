"""The test cells' checks of 03_mqa: its exercises' specs (``exercises/mqa.py``: 04's parts with one
key/value head, plus the no-copy requirement that makes it multi-query attention)."""

from attention_course.checks.diagnosis import run_checks
from attention_course.checks.gqa import check_kv_projection_params
from attention_course.exercises import mqa as spec


def check_mqa_attention(mqa_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.MQA_ATTENTION, {"mqa_attention": mqa_attention}, thorough, seed)


def check_mqa_no_copy(mqa_attention) -> None:
    __tracebackhide__ = True
    run_checks(spec.MQA_NO_COPY, {"mqa_attention": mqa_attention})


def check_multi_query_attention(MultiQueryAttention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.MULTI_QUERY_ATTENTION, {"MultiQueryAttention": MultiQueryAttention}, thorough, seed)


__all__ = ["check_mqa_attention", "check_mqa_no_copy", "check_multi_query_attention", "check_kv_projection_params"]
