"""Checks for 03_mqa: multi-query attention is grouped-query attention with one key/value head, so
these are the checks of ``checks.gqa`` with G = 1, plus the memory check that makes it MQA."""

from attention_course.checks.diagnosis import passed
from attention_course.checks.gqa import check_attention_layer, check_grouped_attention, check_kv_projection_params, check_no_kv_copy


def check_mqa_attention(mqa_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    passed("mqa_attention", check_grouped_attention(mqa_attention, "mqa_attention", thorough, seed, kv_heads=[1]))


def check_mqa_no_copy(mqa_attention) -> None:
    __tracebackhide__ = True
    check_no_kv_copy(mqa_attention, "mqa_attention", n_kv_heads=1)


def check_multi_query_attention(MultiQueryAttention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    passed("MultiQueryAttention", check_attention_layer(MultiQueryAttention, thorough, seed, multi_query=True))


__all__ = ["check_mqa_attention", "check_mqa_no_copy", "check_multi_query_attention", "check_kv_projection_params"]
