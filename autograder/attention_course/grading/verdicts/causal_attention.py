"""Out-of-process verdicts of 01_causal_attention."""

import torch

from attention_course.grading.verdicts import Exercise, integer, randn, shape
from attention_course.kernels import causal as ref


def _mask_cases(generator):
    cases = []
    for fewest_extra_keys, most_extra_keys in ((0, 0), (1, 3), (1, 6), (0, 9)):  # Tq == Tk first, then Tq < Tk
        n_queries = integer(generator, 2, 6)
        cases.append({"n_queries": n_queries, "n_keys": n_queries + integer(generator, fewest_extra_keys, most_extra_keys)})
    return cases


def _qkv_cases(generator):
    """Causal with Tq == Tk and with Tq < Tk (where top-left and bottom-right masks differ), then not causal."""
    cases = []
    for causal, fewest_extra_keys in ((True, 0), (True, 1), (False, 0)):
        batch, heads, n_queries, head_dim = integer(generator, 1, 3), integer(generator, 1, 4), integer(generator, 2, 6), integer(generator, 2, 9)
        n_keys = n_queries + (integer(generator, fewest_extra_keys, 5) if fewest_extra_keys else 0)
        q = randn(generator, batch, heads, n_queries, head_dim)
        k, v = randn(generator, batch, heads, n_keys, head_dim), randn(generator, batch, heads, n_keys, integer(generator, 2, 9))
        cases.append({"q": q, "k": k, "v": v, "causal": causal})
    return cases


def _heads_cases(generator):
    cases = []
    for _ in range(3):  # two heads or more and two tokens or more: where layouts differ
        batch, length, heads, head_dim = integer(generator, 1, 3), integer(generator, 2, 6), integer(generator, 2, 5), integer(generator, 2, 6)
        cases.append({"x": randn(generator, batch, length, heads * head_dim), "n_heads": heads,
                      "y": randn(generator, batch, heads, length, head_dim)})
    return cases


def gpt2_weights(generator, width: int) -> list[torch.Tensor]:
    return [randn(generator, *size, scale=width**-0.5) for size in ((width, 3 * width), (3 * width,), (width, width), (width,))]


def _gpt2_cases(generator):
    cases = []
    for _ in range(3):
        heads, head_dim = integer(generator, 2, 4), integer(generator, 2, 8)
        width = heads * head_dim
        cases.append({"x": randn(generator, integer(generator, 1, 3), integer(generator, 2, 7), width),
                      "weights": gpt2_weights(generator, width), "n_heads": heads})
    return cases


def _double(*tensors):
    return [t.double() for t in tensors]


EXERCISES = (
    Exercise("test_causal_mask", ("causal_mask",), _mask_cases,
             run=lambda s, c: {"mask": s.causal_mask(c["n_queries"], c["n_keys"])},
             expected=lambda c: {"mask": ref.causal_mask(c["n_queries"], c["n_keys"])},
             describe=lambda c: f"causal_mask({c['n_queries']}, {c['n_keys']})"),
    Exercise("test_attention_weights", ("attention_weights",), _qkv_cases,
             run=lambda s, c: {"weights": s.attention_weights(c["q"], c["k"], causal=c["causal"])},
             expected=lambda c: {"weights": ref.attention_weights(*_double(c["q"], c["k"]), causal=c["causal"]).float()},
             describe=lambda c: f"attention_weights(q{shape(c['q'])}, k{shape(c['k'])}, causal={c['causal']})"),
    Exercise("test_attention", ("attention",), _qkv_cases,
             run=lambda s, c: {"y": s.attention(c["q"], c["k"], c["v"], causal=c["causal"])},
             expected=lambda c: {"y": ref.attention(*_double(c["q"], c["k"], c["v"]), causal=c["causal"]).float()},
             describe=lambda c: f"attention(q{shape(c['q'])}, k{shape(c['k'])}, v{shape(c['v'])}, causal={c['causal']})"),
    Exercise("test_heads", ("split_heads", "merge_heads"), _heads_cases,
             run=lambda s, c: {"split": s.split_heads(c["x"], c["n_heads"]), "merged": s.merge_heads(c["y"])},
             expected=lambda c: {"split": ref.split_heads(c["x"], c["n_heads"]), "merged": ref.merge_heads(c["y"])},
             describe=lambda c: f"split_heads(x{shape(c['x'])}, {c['n_heads']}) and merge_heads(x{shape(c['y'])})"),
    Exercise("test_gpt2_attention", ("gpt2_attention",), _gpt2_cases,
             run=lambda s, c: {"y": s.gpt2_attention(c["x"], *c["weights"], c["n_heads"])},
             expected=lambda c: {"y": ref.gpt2_attention(*_double(c["x"], *c["weights"]), c["n_heads"]).float()},
             describe=lambda c: f"gpt2_attention(x{shape(c['x'])}, ..., n_heads={c['n_heads']})"),
)
