"""03_mqa, kernel half: 04's parts (``kernel/gqa.py``) with one key/value head, the no-copy measurement that
makes it multi-query attention, and the parameter count of k_proj and v_proj."""

import torch

from attention_course.exercises.kernel.allocations import NewStorages
from attention_course.exercises.kernel.draw import integer, randn
from attention_course.exercises.kernel.gqa import _attention_cases, _layer_cases, _run_attention, _run_layer

NO_COPY_SHAPE = (2, 8, 4, 512, 64)  # (B, H, Tq, Tk, d): one decode-like call; B = 2 so that a broadcast matmul would copy k


def mqa_attention_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    return _attention_cases(generator, thorough, 1)


def run_mqa_attention(student, case) -> dict:
    return _run_attention(student.mqa_attention, case)


def mqa_no_copy_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    batch, n_heads, n_queries, n_keys, head_dim = NO_COPY_SHAPE
    q = randn(generator, batch, n_heads, n_queries, head_dim).float()
    k, v = (randn(generator, batch, 1, n_keys, head_dim).float() for _ in "kv")
    return [{"q": q, "k": k, "v": v}]


def run_mqa_no_copy(student, case) -> dict:
    """Only memory is measured here (and the output's shape): the values are the attention exercise's business."""
    allocations = NewStorages()
    with allocations:
        y = student.mqa_attention(case["q"], case["k"], case["v"], causal=True)
    largest, operation = allocations.largest
    return {"output shape": tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__,
            "largest new tensor": largest, "made by": operation}


def multi_query_layer_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    return _layer_cases(generator, thorough, 1)


def run_multi_query_layer(student, case) -> dict:
    return _run_layer(student, case, multi_query=True)


def params_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """(D, H, G, bias). The first has 1 < G < H and no bias: there each known mistake gives a number of its own."""
    configs = [(1024, 8, 2, False), (1024, 8, 8, False), (1024, 8, 1, False), (768, 12, 4, True)]
    if thorough:
        configs += [(4096, 32, 8, False), (8192, 64, 8, False), (4544, 71, 1, False), (2048, 16, 16, True), (512, 8, 2, True)]
        for _ in range(4):
            head_dim, n_kv, per_group = integer(generator, 1, 8) * 8, integer(generator, 1, 4), integer(generator, 1, 4)
            configs.append((head_dim * n_kv * per_group, n_kv * per_group, n_kv, bool(integer(generator, 0, 1))))
    return [{"args": (d_model, n_heads, n_kv), "bias": bias, "hugging face": thorough} for d_model, n_heads, n_kv, bias in configs]


def run_params(student, case) -> dict:
    return {"params": student.kv_projection_params(*case["args"], bias=case["bias"])}
