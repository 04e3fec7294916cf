"""The test cells' checks of 01_causal_attention: its exercises' specs (``exercises/causal_attention.py``)
run on the notebook's functions. ``thorough=True`` is what hidden tests use."""

from attention_course.checks.diagnosis import run_checks
from attention_course.exercises import causal_attention as spec


def check_causal_mask(causal_mask, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.MASK, {"causal_mask": causal_mask}, thorough, seed)


def check_attention_weights(attention_weights, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.WEIGHTS, {"attention_weights": attention_weights}, thorough, seed)


def check_attention(attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.ATTENTION, {"attention": attention}, thorough, seed)


def check_split_merge(split_heads, merge_heads, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.HEADS, {"split_heads": split_heads, "merge_heads": merge_heads}, thorough, seed)


def check_gpt2_attention(gpt2_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.GPT2_ATTENTION, {"gpt2_attention": gpt2_attention}, thorough, seed)
