"""The test cells' checks of 06_long_context: its exercises' specs (``exercises/long_context.py``) run on
the notebook's functions. ``thorough=True`` is what hidden tests use: more shapes, shapes drawn from the
seed, float16 / bfloat16 throughout, longer runs of cache updates, and Hugging Face's ``LlamaAttention``
(real rotary embedding) and ``MistralAttention`` (sliding window) as the layer's oracles."""

from attention_course.checks.diagnosis import run_checks
from attention_course.exercises import long_context as spec


def check_rope_frequencies(rope_frequencies, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.ROPE_FREQUENCIES, {"rope_frequencies": rope_frequencies}, thorough, seed)


def check_apply_rope(apply_rope, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.APPLY_ROPE, {"apply_rope": apply_rope}, thorough, seed)


def check_sliding_window_mask(sliding_window_mask, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.WINDOW_MASK, {"sliding_window_mask": sliding_window_mask}, thorough, seed)


def check_rotary_gqa(RotaryGQA, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.ROTARY_GQA, {"RotaryGQA": RotaryGQA}, thorough, seed)


def check_rolling_kv_cache(RollingKVCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.ROLLING_CACHE, {"RollingKVCache": RollingKVCache}, thorough, seed)


def check_sink_kv_cache(SinkKVCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.SINK_CACHE, {"SinkKVCache": SinkKVCache}, thorough, seed)


__all__ = ["check_rope_frequencies", "check_apply_rope", "check_sliding_window_mask", "check_rotary_gqa",
           "check_rolling_kv_cache", "check_sink_kv_cache"]
