"""04_gqa, reference half (and the parts 03_mqa reuses with one key/value head): what each exercise's
outputs should be, the known mistakes they are compared with when they are not, and the requirements
a comparison cannot judge (the kernel half: ``kernel/gqa.py``). Thorough layer cases are compared
with Hugging Face's ``LlamaAttention`` (identity rotary embeddings) loaded with the case's weights."""

import torch

from attention_course.exercises import Exercise
from attention_course.exercises.causal_attention import FUTURE_LEAK, NO_SCALE, TOP_LEFT, weights_variant
from attention_course.exercises.kernel import gqa as kernel
from attention_course.exercises.kernel.draw import RAISES, shape
from attention_course.kernels import gqa as ref

DEVICE, MASK_SHAPE, CHUNK_MASK = kernel.DEVICE, kernel.MASK_SHAPE, kernel.CHUNK_MASK
MODULO = (
    "query head h was paired with key/value group h % G: consecutive query heads share a group, query head h "
    "uses group h // (H / G) (heads 0 .. H/G - 1 use group 0). Fold the heads as [B, G, H/G, ...], not [B, H/G, G, ...]"
)
TILED = (
    "repeat instead of repeat_interleave: x.repeat(1, n_rep, 1, 1) tiles the groups (0, 1, 0, 1, ...), so query head h "
    "would get group h % G. Each group must appear n_rep times in a row: x.repeat_interleave(n_rep, dim=1)"
)
KV_FULL_WIDTH = (
    "k_proj and v_proj map D -> D (one key/value head per query head, as in MHA): with G key/value heads they map "
    "D -> G * head_dim, which is what makes the cache and these projections G / H the size"
)
SHARED_QUERIES = (
    "the queries are shared instead of the keys and values: every query head keeps its own projection "
    "(q_proj: D -> H * head_dim); it is k_proj and v_proj that shrink to the key/value heads"
)
NEW_ONLY = "with a cache, the new queries must attend over everything cached (what cache.update returns), not only the new keys"
NOT_UPDATED = "the new keys and values were not appended to the cache: call cache.update(k, v) in forward when a cache is given"
NO_OUTPUT_PROJ = "the output projection o_proj was not applied"
SCALE_WIDTH = "the scores were divided by sqrt(d_model), the model width; the scale uses the head size: 1 / sqrt(head_dim)"
STRIDED = (
    "pooled the wrong heads together: group g replaces the consecutive heads g*(H/G) .. (g+1)*(H/G) - 1 (the query heads "
    "that will share it), not heads g, g + G, g + 2G, ..."
)
FIRST_HEAD = "kept the first head of each group instead of the mean of the group's heads"
SUMMED = "summed the group's heads instead of averaging them (divide by H / G)"
QUERIES_POOLED = "the query projection was pooled too: only k_proj and v_proj are pooled; q_proj and o_proj are copied as they are"
INPUT_CHANGED = "the MHA layer passed in was changed; build a new layer and leave the original as it is"
UNEVEN = "6 query heads that 4 key/value heads cannot share equally"


# ----------------------------------------------------------------------------------------------
# Grouped attention as a learner might write it (float64)
# ----------------------------------------------------------------------------------------------


def group_of_heads(x: torch.Tensor, n_heads: int, pairing: str = "block") -> torch.Tensor:
    """[B, G, T, d] -> [B, H, T, d]: the key/value head of each query head, float64; ``pairing="modulo"``: head h gets group h % G."""
    n_rep = n_heads // x.shape[-3]
    x = x.double()
    return x.repeat_interleave(n_rep, dim=-3) if pairing == "block" else x.repeat(*([1] * (x.dim() - 3)), n_rep, 1, 1)


def grouped_variant(q, k, v, causal=True, pairing="block", **mistake) -> torch.Tensor:
    n_heads = q.shape[-3]
    k, v = group_of_heads(k, n_heads, pairing), group_of_heads(v, n_heads, pairing)
    return weights_variant(q, k, causal, **mistake) @ v


def grouped_mistakes(q, k, v, causal) -> dict[str, torch.Tensor]:
    found = {NO_SCALE: grouped_variant(q, k, v, causal, scale="none")}
    if k.shape[-3] not in (1, q.shape[-3]):
        found[MODULO] = grouped_variant(q, k, v, causal, pairing="modulo")
    if causal:
        found[FUTURE_LEAK] = grouped_variant(q, k, v, causal, mask=None)
        found[TOP_LEFT] = grouped_variant(q, k, v, causal, mask="top_left")
    return found


# ----------------------------------------------------------------------------------------------
# repeat_kv
# ----------------------------------------------------------------------------------------------


def _repeat_expected(case) -> dict:
    return {"y": ref.repeat_kv(case["x"], case["n_rep"])}


def _repeat_mistakes(case) -> dict:
    return {"y": {TILED: case["x"].repeat(1, case["n_rep"], 1, 1)}}


def _describe_repeat(case) -> str:
    return f"repeat_kv(x{shape(case['x'])}, n_rep={case['n_rep']})"


# ----------------------------------------------------------------------------------------------
# gqa_attention, mqa_attention
# ----------------------------------------------------------------------------------------------


def attention_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "raises":
        return {"y": (RAISES, "ValueError", UNEVEN)}
    q, k, v, causal = case["q"], case["k"], case["v"], case["causal"]
    y = {"y": grouped_variant(q, k, v, causal).to(q.dtype)}
    return {MASK_SHAPE: ""} | y if causal and q.shape[-2] < k.shape[-2] else y


def attention_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    return {"y": grouped_mistakes(case["q"], case["k"], case["v"], case["causal"])}


def describe_attention(name: str):
    def describe(case) -> str:
        q, k, v = case["q"], case["k"], case["v"]
        call = f"{name}(q{shape(q)}, k{shape(k)}, v{shape(v)}, causal={case['causal']})"
        if case["kind"] == "meta":
            return f"{call} [inputs on the meta device]"
        return call if case["kind"] == "raises" else f"{call} [{q.dtype}, {q.device}]"
    return describe


# ----------------------------------------------------------------------------------------------
# The layer (GroupedQueryAttention; MultiQueryAttention of 03 is the same with G = 1)
# ----------------------------------------------------------------------------------------------


def chunk_variant(x, weights, n_heads, n_kv_heads, start, end, pairing="block", scale="sqrt", mask="bottom_right", project=True):
    """The layer as a learner might write it, float64: the output for x[:, start:end] with x[:, :start] cached
    (start = 0, end = T: the whole sequence). ``scale="width"``: scores divided by sqrt(d_model), not sqrt(head_dim)."""
    def linear(name, t):
        bias = weights.get(f"{name}.bias")
        return t @ weights[f"{name}.weight"].double().T + (0 if bias is None else bias.double())

    x = x.double()
    batch, _, width = x.shape
    head_dim = width // n_heads

    def heads(t, n):
        return t.view(batch, -1, n, head_dim).transpose(1, 2)  # [B, n, T, d]

    q = heads(linear("q_proj", x[:, start:end]), n_heads)
    if scale == "width":
        q, scale = q * (head_dim / width) ** 0.5, "sqrt"
    k, v = heads(linear("k_proj", x[:, :end]), n_kv_heads), heads(linear("v_proj", x[:, :end]), n_kv_heads)
    y = grouped_variant(q, k, v, True, pairing=pairing, scale=scale, mask=mask)  # [B, H, T_new, d]
    y = y.transpose(1, 2).reshape(batch, end - start, n_heads * head_dim)
    return linear("o_proj", y) if project else y


LAYER_MISTAKES = {
    MODULO: {"pairing": "modulo"},
    NO_SCALE: {"scale": "none"},
    SCALE_WIDTH: {"scale": "width"},
    FUTURE_LEAK: {"mask": None},
    NO_OUTPUT_PROJ: {"project": False},
}


def _chunks(case):
    """(start, end) of each call with the cache."""
    start = 0
    for n_new in case["chunks"]:
        yield start, start + n_new
        start += n_new


def _whole_sequence(case) -> torch.Tensor:
    """The layer's output on x, float64: Hugging Face's LlamaAttention with the case's weights, or the reference."""
    _, n_heads, n_kv = case["size"]
    if case["oracle"] == "hugging face":
        from attention_course.hf_compat import llama_attention_layer_output, random_llama_attention_layer

        layer = random_llama_attention_layer(*case["size"], case["bias"], torch.Generator().manual_seed(0))
        layer.load_state_dict(case["weights"])  # strict: the contract's layout is Llama's
        with torch.no_grad():
            return llama_attention_layer_output(layer, case["x"].double())
    return chunk_variant(case["x"], case["weights"], n_heads, n_kv, 0, case["x"].shape[1])


def layer_expected(case) -> dict:
    d_model, n_heads, n_kv = case["size"]
    if case["kind"] == "raises":
        return {"layer": (RAISES, "ValueError", UNEVEN)}
    if case["kind"] == "meta":
        return {DEVICE: ""}
    if case["kind"] == "layout":
        return {"n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": d_model // n_heads}
    whole = _whole_sequence(case).to(device=case["device"], dtype=case["dtype"])
    expected = {"y": whole}
    for start, end in _chunks(case):
        if start and end - start > 1:
            expected[MASK_SHAPE] = ""
        expected[f"cache length after x[:, :{end}]"] = end
        expected[f"x[:, {start}:{end}] after {start} cached"] = whole[:, start:end]
    return expected


def layer_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    _, n_heads, n_kv = case["size"]
    x, weights = case["x"], case["weights"]
    found = {"y": {message: chunk_variant(x, weights, n_heads, n_kv, 0, x.shape[1], **kw) for message, kw in LAYER_MISTAKES.items()}}
    for start, end in _chunks(case):
        found[f"cache length after x[:, :{end}]"] = {NOT_UPDATED: start}
        chunk = {}
        if start:  # the new tokens attending only to themselves
            chunk[NEW_ONLY] = chunk_variant(x[:, start:end], weights, n_heads, n_kv, 0, end - start)
        if start and end - start > 1:  # a chunk of new tokens: where a top-left mask differs
            chunk[TOP_LEFT] = chunk_variant(x, weights, n_heads, n_kv, start, end, mask="top_left")
        found[f"x[:, {start}:{end}] after {start} cached"] = chunk
    return found


def layout_problem(case, outputs) -> str:
    """'' when the layer's state_dict is Llama's (q_proj, k_proj, v_proj, o_proj in these shapes, nothing more)."""
    if case["kind"] != "layout":
        return ""
    d_model, n_heads, n_kv = case["size"]
    expected = kernel.llama_shapes(d_model, n_heads, n_kv, case["bias"])
    try:
        theirs = {str(key): tuple(int(n) for n in dims) for key, dims in outputs["state_dict"]}
        persistent = {str(key) for key in outputs.get("persistent buffers") or ()}
    except (KeyError, TypeError, ValueError):
        return "the layer's state_dict did not come back"
    if theirs == expected:
        return ""
    width = n_heads * (d_model // n_heads)
    if n_kv < n_heads and theirs.get("q_proj.weight") == expected["k_proj.weight"]:
        return SHARED_QUERIES
    if n_kv < n_heads and theirs.get("k_proj.weight") == (width, d_model):
        return KV_FULL_WIDTH
    missing = sorted(set(expected) - set(theirs))
    extra = sorted(set(theirs) - set(expected))
    buffers = [key for key in extra if key in persistent]
    if buffers:
        one = len(buffers) == 1
        return (f"{', '.join(f'`{key}`' for key in buffers)} {'is a persistent buffer' if one else 'are persistent buffers'} "
                f"(register_buffer), so {'it goes' if one else 'they go'} into state_dict and Llama's weights no longer load "
                "into the layer (load_state_dict is strict). The layer's state_dict must hold q_proj, k_proj, v_proj and o_proj "
                "only: compute such a tensor in forward, or register it with persistent=False")
    wrong = {key: (theirs[key], expected[key]) for key in sorted(set(theirs) & set(expected)) if theirs[key] != expected[key]}
    return ("parameters differ from Llama's layout (q_proj D -> H*d, k_proj and v_proj D -> G*d, o_proj H*d -> D, "
            f"nn.Linear weights [out, in], biases only with bias=True). Missing: {missing or 'none'}; unexpected: "
            f"{extra or 'none'}; wrong shapes (got, expected): {wrong or 'none'}")


def describe_layer(multi_query: bool):
    def describe(case) -> str:
        d_model, n_heads, n_kv = case["size"]
        if case["kind"] == "raises":
            return f"GroupedQueryAttention({d_model}, {n_heads}, {n_kv})"
        name = (f"MultiQueryAttention({d_model}, {n_heads}, bias={case['bias']})" if multi_query
                else f"GroupedQueryAttention({d_model}, {n_heads}, {n_kv}, bias={case['bias']})")
        if case["kind"] == "layout":
            return name
        if case["kind"] == "meta":
            return f"{name} on x[2, {case['x'].shape[1]}, {d_model}], then a prefill and a step [inputs on the meta device]"
        oracle = " vs Hugging Face's LlamaAttention" if case["oracle"] == "hugging face" else ""
        return f"{name} on x{shape(case['x'])}, Llama's weights{oracle} [{case['dtype']}, {case['device']}]"
    return describe


# ----------------------------------------------------------------------------------------------
# mha_to_gqa
# ----------------------------------------------------------------------------------------------


def _pooled(weight: torch.Tensor, n_kv_heads: int, head_dim: int, how: str) -> torch.Tensor:
    """K or V projection weight [H*d, D] (or bias [H*d]) pooled to G heads, as a learner might."""
    n_heads = weight.shape[0] // head_dim
    per_group = n_heads // n_kv_heads
    heads = weight.reshape(n_heads, head_dim, -1)  # [H, d, D or 1]
    grouped = heads.view(n_kv_heads, per_group, *heads.shape[1:])  # [G, H/G, d, ...]
    if how == "strided":
        grouped = heads.view(per_group, n_kv_heads, *heads.shape[1:]).transpose(0, 1)
    pooled = {"mean": grouped.mean(1), "strided": grouped.mean(1), "first": grouped[:, 0], "sum": grouped.sum(1)}[how]
    return pooled.reshape(n_kv_heads * head_dim, *weight.shape[1:])


POOLING_MISTAKES = {STRIDED: "strided", FIRST_HEAD: "first", SUMMED: "sum"}
_CONVERTED_ORDER = ("q_proj.weight", "o_proj.weight", "k_proj.weight", "v_proj.weight")


def _convert_expected(case) -> dict:
    d_model, n_heads, n_kv = case["size"]
    mha = ref.GroupedQueryAttention(d_model, n_heads, n_heads, bias=case["bias"]).double()
    mha.load_state_dict(case["weights"])
    state = ref.mha_to_gqa(mha, n_kv).state_dict()
    keys = [*_CONVERTED_ORDER, *sorted(key for key in state if "bias" in key)]
    return {"the input layer": 0, "n_kv_heads": n_kv} | {key: state[key] for key in keys}


def _convert_judge(case, outputs) -> str:
    d_model, n_heads, n_kv = case["size"]
    expected = sorted(kernel.llama_shapes(d_model, n_heads, n_kv, case["bias"]))
    theirs = str(outputs.get("parameters", "")).split(", ")
    return "" if theirs == expected else f"the returned layer has parameters {theirs}, expected {expected}"


def _convert_mistakes(case) -> dict:
    d_model, n_heads, n_kv = case["size"]
    head_dim = d_model // n_heads
    found = {"the input layer": {INPUT_CHANGED: 1}}
    for key, original in case["weights"].items():
        if key.startswith(("k_proj", "v_proj")):
            found[key] = {message: _pooled(original, n_kv, head_dim, how) for message, how in POOLING_MISTAKES.items()}
        elif key.startswith("q_proj"):
            found[key] = {QUERIES_POOLED: _pooled(original, n_kv, head_dim, "mean")}
    return found


def _describe_convert(case) -> str:
    d_model, n_heads, n_kv = case["size"]
    return f"mha_to_gqa(MHA layer ({d_model}, {n_heads} heads, bias={case['bias']}), n_kv_heads={n_kv})"


REPEAT_KV = Exercise("test_repeat_kv", "repeat_kv", kernel.repeat_kv_cases, kernel.run_repeat_kv, _repeat_expected,
                     _describe_repeat, _repeat_mistakes)
GQA_ATTENTION = Exercise("test_gqa_attention", "gqa_attention", kernel.gqa_attention_cases, kernel.run_gqa_attention,
                         attention_expected, describe_attention("gqa_attention"), attention_mistakes)
GROUPED_QUERY_ATTENTION = Exercise("test_module", "GroupedQueryAttention", kernel.grouped_layer_cases, kernel.run_grouped_layer,
                                   layer_expected, describe_layer(False), layer_mistakes, layout_problem)
MHA_TO_GQA = Exercise("test_convert", "mha_to_gqa", kernel.convert_cases, kernel.run_convert, _convert_expected,
                      _describe_convert, _convert_mistakes, _convert_judge)
EXERCISES = (REPEAT_KV, GQA_ATTENTION, GROUPED_QUERY_ATTENTION, MHA_TO_GQA)
