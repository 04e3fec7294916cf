"""01_causal_attention, reference half: what each exercise's outputs should be, and the known
mistakes they are compared with when they are not (the kernel half: ``kernel/causal_attention.py``)."""

import math

import torch

from attention_course.exercises import Exercise
from attention_course.exercises.kernel import causal_attention as kernel
from attention_course.exercises.kernel.draw import RAISES, shape
from attention_course.kernels import causal as ref

DEVICE = kernel.DEVICE
FUTURE_LEAK = (
    "no causal mask: queries attend to future keys (future tokens leak into the past). Note that masked_fill returns a "
    "new tensor: scores.masked_fill(...) without assigning its result changes nothing (masked_fill_ works in place)"
)
TOP_LEFT = (
    "the causal mask is aligned top-left (query i sees keys 0..i). The queries are the *last* Tq of "
    "the Tk positions, so query i may attend key j iff j <= i + (Tk - Tq) (bottom-right alignment)"
)
STRICT = "mask off by one: a query must also attend to its own position (j <= i, not j < i)"
LOOKAHEAD = (
    "mask off by one the other way: each query also sees the next key, one step into the future. Query i may attend key "
    "j iff j <= i + (Tk - Tq): tril(diagonal=Tk - Tq) keeps those, triu(diagonal=Tk - Tq + 1) marks the future ones"
)
NO_SCALE = "the scores were not scaled: divide q k^T by sqrt(head_dim) before the softmax"
SCALE_D = "the scores were divided by head_dim instead of sqrt(head_dim)"
SCALE_DV = (
    "the scores were scaled by the size of v's heads (v.size(-1)); the scale is 1 / sqrt(d) with d the size of the "
    "queries and keys, q.size(-1). (Hugging Face's GPT-2 code divides by value.size(-1) ** 0.5, which is right only "
    "when v and k have the same size; here v has dv != d)"
)
WRONG_AXIS = "softmax over the wrong axis: normalize over the keys (dim=-1), so each query's row sums to 1"
MASK_ZERO = "masked scores were set to 0 instead of -inf: exp(0) = 1 still gives future keys weight"
MASK_AFTER = "the mask was applied after the softmax: rows no longer sum to 1; fill masked scores with -inf before it"
FILLED_ALLOWED = (
    "the mask is used the wrong way round: masked_fill fills where its mask is True, so fill the *future* keys "
    "(~causal_mask(...)), not the ones a query may attend (rows left with only -inf give NaN)"
)
CAUSAL_IGNORED = "causal=False must give full attention over every key, but the output is masked"


def mask_variant(n_queries: int, n_keys: int, kind: str) -> torch.Tensor:
    i = torch.arange(n_queries)[:, None]
    j = torch.arange(n_keys)[None, :]
    return {
        "bottom_right": j <= i + (n_keys - n_queries),
        "top_left": j <= i,
        "strict": j < i + (n_keys - n_queries),
        "lookahead": j <= i + (n_keys - n_queries) + 1,
        "future_only": j > i + (n_keys - n_queries),
        "transposed": j >= i + (n_keys - n_queries),
    }[kind]


def weights_variant(q, k, causal=True, scale="sqrt", axis=-1, mask="bottom_right", fill=-math.inf, after=False):
    """Attention weights as a learner might write them, mistakes included; float64 throughout.
    ``scale``: "sqrt" (right), "none", "d", or a number: the size whose square root divides the scores."""
    q, k = q.double(), k.double()
    d = q.shape[-1]
    if not isinstance(scale, str):
        scores = q @ k.transpose(-2, -1) * scale**-0.5
    else:
        scores = q @ k.transpose(-2, -1) * {"sqrt": d**-0.5, "none": 1.0, "d": 1.0 / d}[scale]
    if not causal or mask is None:
        return torch.softmax(scores, dim=axis)
    allowed = mask_variant(q.shape[-2], k.shape[-2], mask).to(q.device)
    if after:
        return torch.softmax(scores, dim=axis) * allowed
    return torch.softmax(scores.masked_fill(~allowed, fill), dim=axis)


def weights_mistakes(q, k, causal) -> dict[str, torch.Tensor]:
    found = {
        NO_SCALE: weights_variant(q, k, causal, scale="none"),
        SCALE_D: weights_variant(q, k, causal, scale="d"),
        WRONG_AXIS: weights_variant(q, k, causal, axis=-2),
    }
    if not causal:
        return found | {CAUSAL_IGNORED: weights_variant(q, k, True)}
    return found | {
        FUTURE_LEAK: weights_variant(q, k, causal, mask=None),
        TOP_LEFT: weights_variant(q, k, causal, mask="top_left"),
        STRICT: weights_variant(q, k, causal, mask="strict"),
        LOOKAHEAD: weights_variant(q, k, causal, mask="lookahead"),
        FILLED_ALLOWED: weights_variant(q, k, causal, mask="future_only"),
        MASK_ZERO: weights_variant(q, k, causal, fill=0.0),
        MASK_AFTER: weights_variant(q, k, causal, after=True),
    }


def gpt2_variant(x, w_attn, b_attn, w_proj, b_proj, n_heads, order="qkv", split="ok", scale="sqrt", axis=-1,
                  mask="bottom_right", proj_transposed=False, attn_bias=True, proj_bias=True, project=True):
    x, w_attn, b_attn, w_proj, b_proj = (t.double() for t in (x, w_attn, b_attn, w_proj, b_proj))
    batch, length, width = x.shape
    head_dim = width // n_heads
    qkv = x @ w_attn + (b_attn if attn_bias else 0)  # [B, T, 3D]
    parts = dict(zip("qkv", qkv.split(width, dim=-1)))
    q, k, v = (parts[name] for name in order)
    if split == "ok":
        q, k, v = (ref.split_heads(t, n_heads) for t in (q, k, v))  # [B, H, T, d]
    else:  # straight view, no transpose
        q, k, v = (t.reshape(batch, n_heads, length, head_dim) for t in (q, k, v))
    if scale == "width":
        q = q * math.sqrt(head_dim / width)
    y = weights_variant(q, k, True, scale="none" if scale == "none" else "sqrt", axis=axis, mask=mask) @ v
    y = ref.merge_heads(y)  # [B, T, D]
    if not project:
        return y
    return y @ (w_proj.T if proj_transposed else w_proj) + (b_proj if proj_bias else 0)


GPT2_MISTAKES = {
    "Conv1D weights used transposed: GPT-2 stores them [in, out], so a projection is x @ W + b (no .T, not F.linear)": {
        "proj_transposed": True
    },
    "q and k swapped when splitting c_attn's output: it is [q | k | v] along the last axis": {"order": "kqv"},
    "k and v swapped when splitting c_attn's output: it is [q | k | v] along the last axis": {"order": "qvk"},
    "heads split without the transpose: view(B, T, H, d).transpose(1, 2), not view(B, H, T, d)": {"split": "view"},
    NO_SCALE: {"scale": "none"},
    WRONG_AXIS: {"axis": -2},
    "the scores were divided by sqrt(model width); the scale uses the head size d = D / H": {"scale": "width"},
    FUTURE_LEAK: {"mask": None},
    "the c_attn bias was not added": {"attn_bias": False},
    "the c_proj bias was not added": {"proj_bias": False},
    "the output projection c_proj was not applied": {"project": False},
}


def _mask_expected(case) -> dict:
    if case["kind"] == "raises":
        return {"mask": (RAISES, "ValueError", "more queries than keys")}
    if case["kind"] == "meta":
        return {DEVICE: ""}
    return {"mask": ref.causal_mask(case["n_queries"], case["n_keys"], device=case.get("device"))}


def _mask_mistakes(case) -> dict:
    n_queries, n_keys = case["n_queries"], case["n_keys"]
    return {"mask": {
        TOP_LEFT: mask_variant(n_queries, n_keys, "top_left"),
        STRICT: mask_variant(n_queries, n_keys, "strict"),
        LOOKAHEAD: mask_variant(n_queries, n_keys, "lookahead"),
        "the mask is inverted: True must mean *may attend*": ~mask_variant(n_queries, n_keys, "bottom_right"),
        "every entry is True: no query may attend a key after its own position, so those entries must be False":
            torch.ones(n_queries, n_keys, dtype=torch.bool),
        "the mask is transposed: query i (row) may attend keys j <= i + (Tk - Tq) (columns)": mask_variant(n_queries, n_keys, "transposed"),
    }}


def _describe_mask(case) -> str:
    where = f", device={case['device']!r}" if "device" in case else ", device='meta'" if case["kind"] == "meta" else ""
    return f"causal_mask({case['n_queries']}, {case['n_keys']}{where})"


def _describe_qkv(name: str, with_v: bool):
    def describe(case) -> str:
        q, k, v = case["q"], case["k"], case["v"]
        values = f", v{shape(v)}" if with_v else ""
        if case["kind"] == "meta":
            return f"{name}(q{shape(q)}, k{shape(k)}{values}, causal=True) [inputs on the meta device]"
        where = "" if case["kind"] == "raises" else f" [{q.dtype}, {q.device}]"
        return f"{name}(q{shape(q)}, k{shape(k)}{values}, causal={case['causal']}){where}"
    return describe


def _weights_expected(case) -> dict:
    if case["kind"] == "raises":
        return {"weights": (RAISES, "ValueError", "more queries than keys")}
    if case["kind"] == "meta":
        return {DEVICE: ""}
    return {"weights": weights_variant(case["q"], case["k"], case["causal"]).to(case["q"].dtype)}


def _weights_judge(case, outputs) -> str:
    weights = outputs.get("weights")
    if case["kind"] == "values" and case["causal"] and isinstance(weights, torch.Tensor):
        blocked = ~ref.causal_mask(case["q"].shape[-2], case["k"].shape[-2], device=weights.device)
        if (weights[..., blocked] != 0).any():
            return "masked entries must be exactly 0 (fill scores with -inf, not a large negative number)"
    return ""


def _attention_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    q, k, v = case["q"], case["k"], case["v"]
    return {"y": (weights_variant(q, k, case["causal"]) @ v.double()).to(q.dtype)}


def _attention_mistakes(case) -> dict:
    q, k, v, causal = case["q"], case["k"], case["v"], case["causal"]
    weights = weights_variant(q, k, causal)
    found = {message: wrong @ v.double() for message, wrong in weights_mistakes(q, k, causal).items()}
    found[SCALE_DV] = weights_variant(q, k, causal, scale=v.shape[-1]) @ v.double()
    found["the output is the attention weights: multiply them by v"] = weights
    found["the weights multiply the keys, not the values"] = weights @ k.double()
    return {"y": found}


def _heads_expected(case) -> dict:
    if case["kind"] == "split":
        return {"split": ref.split_heads(case["x"], case["n_heads"])}
    return {"merged": ref.merge_heads(case["y"]), "merge_heads(split_heads(x))": case["x"]}


def _describe_heads(case) -> str:
    if case["kind"] == "split":
        return f"split_heads(x{shape(case['x'])}, n_heads={case['n_heads']})"
    return f"merge_heads(x{shape(case['y'])})"


def _heads_mistakes(case) -> dict:
    x, y, n_heads = case["x"], case["y"], case["n_heads"]
    batch, length, width = x.shape
    return {
        "split": {
            "reshaped straight to [B, H, T, d]: split the features into [H, d] first, then move the head axis: "
            "x.view(B, T, H, d).transpose(1, 2)": x.reshape(batch, n_heads, length, width // n_heads),
            "heads are interleaved: head h must own the contiguous features h*d .. (h+1)*d - 1":
                x.view(batch, length, width // n_heads, n_heads).permute(0, 3, 1, 2),
        },
        "merged": {"merged without moving the head axis back: transpose(1, 2) to [B, T, H, d] before reshaping to [B, T, D]":
                   y.reshape(batch, length, width)},
    }


def _gpt2_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "hugging face":
        from attention_course.hf_compat import gpt2_attention_layer, gpt2_attention_layer_output

        layer = gpt2_attention_layer([w.double() for w in case["weights"]], case["n_heads"])
        with torch.no_grad():
            return {"y": gpt2_attention_layer_output(layer, case["x"].double()).float()}
    return {"y": gpt2_variant(case["x"], *case["weights"], case["n_heads"]).to(case["x"].dtype)}


def _gpt2_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    return {"y": {message: gpt2_variant(case["x"], *case["weights"], case["n_heads"], **kw) for message, kw in GPT2_MISTAKES.items()}}


def _describe_gpt2(case) -> str:
    if case["kind"] == "hugging face":
        return "gpt2_attention vs Hugging Face GPT2Attention (same weights, float32)"
    where = " [inputs on the meta device]" if case["kind"] == "meta" else f" [{case['x'].dtype}, {case['x'].device}]"
    return f"gpt2_attention(x{shape(case['x'])}, ..., n_heads={case['n_heads']}){where}"


MASK = Exercise("test_causal_mask", "causal_mask", kernel.mask_cases, kernel.run_mask, _mask_expected, _describe_mask,
                _mask_mistakes)
WEIGHTS = Exercise("test_attention_weights", "attention_weights", kernel.qkv_cases, kernel.run_weights, _weights_expected,
                   _describe_qkv("attention_weights", False), lambda c: {"weights": weights_mistakes(c["q"], c["k"], c["causal"])},
                   _weights_judge)
ATTENTION = Exercise("test_attention", "attention", kernel.attention_cases, kernel.run_attention, _attention_expected,
                     _describe_qkv("attention", True), _attention_mistakes)
HEADS = Exercise("test_heads", "split_heads / merge_heads", kernel.heads_cases, kernel.run_heads, _heads_expected,
                 _describe_heads, _heads_mistakes)
GPT2_ATTENTION = Exercise("test_gpt2_attention", "gpt2_attention", kernel.gpt2_cases, kernel.run_gpt2, _gpt2_expected,
                          _describe_gpt2, _gpt2_mistakes)
EXERCISES = (MASK, WEIGHTS, ATTENTION, HEADS, GPT2_ATTENTION)
