"""01_causal_attention, kernel half: the inputs of each exercise and how the student's code is called.

Visible cases (seed 0) are few, float32 and on the CPU, with one float16 and one bfloat16 case so
that half precision is met before hand-in; thorough cases (hidden tests, the grader's fresh seed)
add shapes drawn from the seed, leading batch dimensions, fewer queries than keys, and float16 /
bfloat16 throughout. Every kind of case is the same on every machine (CUDA only in the package's
GPU check), so that a score never depends on the grader's hardware."""

import torch

from attention_course.exercises.kernel.devices import device_problem
from attention_course.exercises.kernel.draw import devices, dtypes, integer, raised, randn

DEVICE = "on the meta device"  # a requirement measured where the code runs: '' when met


def _visible_extras(thorough: bool) -> list[tuple[str, torch.dtype]]:
    return [] if thorough else [("cpu", torch.float16), ("cpu", torch.bfloat16)]


def mask_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    # (1, 1) last of the fixed sizes: there an inverted mask and a strict one look the same.
    sizes = [(4, 4), (3, 6), (1, 5), (1, 1)]
    if thorough:
        sizes += [(7, 7), (2, 9), (16, 16), (5, 12)]
        for fewest_extra_keys in (0, 1, 1):
            n_queries = integer(generator, 2, 12)
            sizes.append((n_queries, n_queries + integer(generator, fewest_extra_keys, 9)))
    cases = [{"kind": "values", "n_queries": n_queries, "n_keys": n_keys} for n_queries, n_keys in sizes]
    cases += [{"kind": "values", "n_queries": 3, "n_keys": 4, "device": device} for device in devices(True)]
    return cases + [{"kind": "raises", "n_queries": 5, "n_keys": 3}, {"kind": "meta", "n_queries": 3, "n_keys": 4}]


def run_mask(student, case) -> dict:
    n_queries, n_keys = case["n_queries"], case["n_keys"]
    if case["kind"] == "raises":
        return {"mask": raised(student.causal_mask, n_queries, n_keys)}
    if case["kind"] == "meta":
        return {DEVICE: device_problem(student.causal_mask, n_queries, n_keys, device="meta")}
    if "device" in case:
        return {"mask": student.causal_mask(n_queries, n_keys, device=case["device"])}
    return {"mask": student.causal_mask(n_queries, n_keys)}


def _qk_shapes(generator: torch.Generator, thorough: bool) -> list[tuple[tuple[int, ...], int, int, int]]:
    """(leading dims, Tq, Tk, d); queries are the last Tq of Tk positions."""
    shapes = [((1,), 5, 5, 8), ((2, 3), 6, 6, 4), ((2,), 3, 7, 8), ((), 4, 4, 16)]  # () : no leading dimension
    if thorough:
        shapes += [((2, 2, 2), 1, 9, 8), ((3,), 11, 11, 32), ((1,), 7, 13, 8)]
        for extra_keys in (0, integer(generator, 1, 6)):
            n_queries = integer(generator, 2, 8)
            lead = tuple(integer(generator, 1, 3) for _ in range(integer(generator, 1, 2)))
            shapes.append((lead, n_queries, n_queries + extra_keys, integer(generator, 2, 16)))
    return shapes


def qkv_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    """q, k, v causal and not, in every dtype under test; v has dv = d + 2 features, so that a scale
    by v's size shows. Then a must-raise case (more queries than keys) and the meta-device case."""
    runs = [(device, dtype, shape) for device in devices(thorough) for dtype in dtypes(thorough)
            for shape in _qk_shapes(generator, thorough)]
    runs += [(device, dtype, ((2, 2), 3, 7, 8)) for device, dtype in _visible_extras(thorough)]
    cases = []
    for device, dtype, (lead, n_queries, n_keys, d) in runs:
        q, k, v = randn(generator, *lead, n_queries, d), randn(generator, *lead, n_keys, d), randn(generator, *lead, n_keys, d + 2)
        q, k, v = (t.to(device=device, dtype=dtype) for t in (q, k, v))
        cases += [{"kind": "values", "q": q, "k": k, "v": v, "causal": causal} for causal in (True, False)]
    q, k = randn(generator, 5, 4).float(), randn(generator, 3, 4).float()
    cases.append({"kind": "raises", "q": q, "k": k, "v": k, "causal": True})
    meta = [torch.empty(2, 4, 8), torch.empty(2, 6, 8), torch.empty(2, 6, 5)]
    return cases + [{"kind": "meta", "q": meta[0], "k": meta[1], "v": meta[2], "causal": True}]


def run_weights(student, case) -> dict:
    q, k, causal = case["q"], case["k"], case["causal"]
    if case["kind"] == "raises":
        return {"weights": raised(student.attention_weights, q, k, causal=causal)}
    if case["kind"] == "meta":
        return {DEVICE: device_problem(student.attention_weights, q, k, causal=causal)}
    return {"weights": student.attention_weights(q, k, causal=causal)}


def attention_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    return [case for case in qkv_cases(generator, thorough) if case["kind"] != "raises"]


def run_attention(student, case) -> dict:
    q, k, v, causal = case["q"], case["k"], case["v"], case["causal"]
    if case["kind"] == "meta":
        return {DEVICE: device_problem(student.attention, q, k, v, causal=causal)}
    return {"y": student.attention(q, k, v, causal=causal)}


def _drawn_layer(generator: torch.Generator, most_heads: int, most_head_dim: int, longest: int) -> tuple[int, int, int, int]:
    """(batch, length, width, heads) drawn from the seed: two heads or more and two tokens or more, where layouts differ."""
    heads, head_dim = integer(generator, 2, most_heads), integer(generator, 2, most_head_dim)
    return integer(generator, 1, 3), integer(generator, 2, longest), heads * head_dim, heads


def heads_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    shapes = [(2, 5, 12, 3), (1, 4, 8, 2)]
    if thorough:
        shapes += [(3, 7, 64, 4), (1, 1, 6, 6), (2, 3, 8, 1), _drawn_layer(generator, most_heads=5, most_head_dim=6, longest=6)]
    cases = []
    for device in devices(thorough):
        for batch, length, width, n_heads in shapes:
            x = randn(generator, batch, length, width).float().to(device)
            y = randn(generator, batch, n_heads, length, width // n_heads).float().to(device)
            cases += [{"kind": kind, "x": x, "n_heads": n_heads, "y": y} for kind in ("split", "merge")]
    return cases


def run_heads(student, case) -> dict:
    x, n_heads = case["x"], case["n_heads"]
    if case["kind"] == "split":
        return {"split": student.split_heads(x, n_heads)}
    return {"merged": student.merge_heads(case["y"]), "merge_heads(split_heads(x))": student.merge_heads(student.split_heads(x, n_heads))}


def gpt2_weights(generator: torch.Generator, width: int, scale: float | None = None) -> list[torch.Tensor]:
    """c_attn weight and bias, c_proj weight and bias (GPT-2's Conv1D layout, [in, out]), float64;
    scaled by width**-0.5 by default, which keeps activations O(1) so that half-precision tolerances stay meaningful."""
    scale = width**-0.5 if scale is None else scale
    return [randn(generator, *size, scale=scale) for size in ((width, 3 * width), (3 * width,), (width, width), (width,))]


HF_WIDTH, HF_HEADS = 48, 6  # the thorough case against Hugging Face's GPT2Attention


def gpt2_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    shapes = [(2, 6, 16, 4), (1, 5, 12, 3)]
    if thorough:
        shapes += [(3, 9, 32, 8), (1, 1, 8, 2), (2, 12, 24, 1), _drawn_layer(generator, most_heads=4, most_head_dim=8, longest=9)]
    runs = [(device, dtype, shape) for device in devices(thorough) for dtype in dtypes(thorough) for shape in shapes]
    runs += [(device, dtype, shapes[0]) for device, dtype in _visible_extras(thorough)]
    cases = []
    for device, dtype, (batch, length, width, n_heads) in runs:
        tensors = [randn(generator, batch, length, width), *gpt2_weights(generator, width)]
        x, *weights = (t.to(device=device, dtype=dtype) for t in tensors)
        cases.append({"kind": "values", "x": x, "weights": weights, "n_heads": n_heads})
    if thorough:  # every parameter random (biases too: an oracle with zero biases cannot see a forgotten one), in float32
        x, *weights = (t.float() for t in [randn(generator, 2, 10, HF_WIDTH), *gpt2_weights(generator, HF_WIDTH, scale=0.3)])
        cases.append({"kind": "hugging face", "x": x, "weights": weights, "n_heads": HF_HEADS})
    meta = [torch.empty(2, 5, 12), *map(torch.empty, [(12, 36), (36,), (12, 12), (12,)])]
    return cases + [{"kind": "meta", "x": meta[0], "weights": meta[1:], "n_heads": 3}]


def run_gpt2(student, case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: device_problem(student.gpt2_attention, case["x"], *case["weights"], case["n_heads"])}
    with torch.no_grad():
        return {"y": student.gpt2_attention(case["x"], *case["weights"], case["n_heads"])}
