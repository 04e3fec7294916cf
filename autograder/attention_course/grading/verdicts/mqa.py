"""Out-of-process verdicts of 03_mqa: those of 04_gqa with one key/value head, and the no-copy item."""

import torch

from attention_course.grading.verdicts import Exercise, randn, shape
from attention_course.grading.verdicts.gqa import PARAMS, attention_exercise, expected_layer, layer_cases, run_layer
from attention_course.memory import NewStorages

# One decode-like call, as in the notebook's check: B = 2 so that a broadcast matmul would copy k.
NO_COPY_SHAPE = {"batch": 2, "n_heads": 8, "n_queries": 4, "n_keys": 512, "head_dim": 64}


def _no_copy_cases(generator):
    b, h, tq, tk, d = NO_COPY_SHAPE.values()
    return [{"q": randn(generator, b, h, tq, d), "k": randn(generator, b, 1, tk, d), "v": randn(generator, b, 1, tk, d),
             "causal": True}]


def _run_no_copy(student, case):
    allocations = NewStorages()
    with allocations:
        y = student.mqa_attention(case["q"], case["k"], case["v"], causal=True)
    return {"y": y, "largest new tensor": allocations.largest[0]}


def _judge_no_copy(case, outputs) -> str:
    """Only memory is judged here (and the output's shape), as in the notebook's check: the values
    are test_mqa_attention's business. Measured in the student's process, so it can be lied about."""
    y = outputs.get("y")
    if not isinstance(y, torch.Tensor) or y.shape != case["q"].shape:
        return f"the output should have shape {tuple(case['q'].shape)}, got {getattr(y, 'shape', y)!r}"
    k = case["k"]
    copy_bytes = k.numel() * k.element_size() * case["q"].shape[1]
    largest = outputs.get("largest new tensor")
    if not isinstance(largest, int) or largest >= copy_bytes / 2:
        return f"k or v copied once per query head (largest new tensor {largest!r} bytes; an H-fold copy of k is {copy_bytes:,})"
    return ""


EXERCISES = (
    attention_exercise("test_mqa_attention", "mqa_attention", 1),
    Exercise("test_mqa_no_copy", ("mqa_attention",), _no_copy_cases, _run_no_copy, expected=lambda c: {},
             describe=lambda c: f"mqa_attention(q{shape(c['q'])}, k{shape(c['k'])}, v{shape(c['v'])})",
             judge=_judge_no_copy),
    Exercise("test_module", ("MultiQueryAttention",), layer_cases(1),
             run_layer(lambda s, c: s.MultiQueryAttention(*c["size"][:2], bias=c["bias"])), expected_layer,
             describe=lambda c: f"MultiQueryAttention{c['size'][:2]} (bias={c['bias']}) on x{shape(c['x'])}, "
                                f"then cached in chunks of {c['chunks']}"),
    PARAMS,
)
