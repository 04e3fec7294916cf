"""03_mqa, reference half: 04's exercises with one key/value head (``exercises/gqa.py``), the no-copy
requirement that makes it multi-query attention, and the parameter count of k_proj and v_proj
(the kernel half: ``kernel/mqa.py``)."""

import math

from attention_course.exercises import Exercise
from attention_course.exercises import gqa
from attention_course.exercises.kernel import mqa as kernel
from attention_course.exercises.kernel.draw import shape
from attention_course.exercises.kernel.gqa import llama_shapes
from attention_course.kernels import gqa as ref

COPY = (
    "k or v copied once per query head (an H-fold copy): repeat, repeat_interleave, expand(...).contiguous() and also "
    "q @ k.transpose(-2, -1) with k broadcast over the heads (torch.matmul materializes broadcast batch dimensions) all "
    "copy the keys. Fold the query heads into the rows of one product against the shared key head: "
    "q.reshape(B, G, (H/G) * Tq, d) @ k.transpose(-2, -1)"
)
SEED_PARAMS = (
    "This counts each head's projection as head_dim x head_dim (the study notebook's 2 * d * d * H). Each key/value "
    "head projects the whole D-wide input: D x head_dim weights per head, 2 x D x (G * head_dim) in all"
)
SEED_GQA_PARAMS = (
    "This is the study notebook's 2 * D * D / G. Fewer groups mean fewer parameters: the K/V projections hold "
    "2 x D x (G * head_dim) = 2 x D x D x G / H, which grows with G"
)
KV_PARAMS_MHA = "This is the count for multi-head attention (G = H): with G key/value heads each projection is D x (G * head_dim)"
ONE_PROJECTION = "This counts one projection: k_proj and v_proj both have these parameters, a factor 2"
BIAS_MISSED = "With bias=True each projection also has G * head_dim bias parameters"
BIAS_WIDE = "The biases have one entry per output feature: G * head_dim each, not D"


def _no_copy_judge(case, outputs) -> str:
    """Only memory is judged here (and the output's shape): the values are test_mqa_attention's business.
    No operation may allocate as much as half an H-fold copy of k, while the scores need 16 times less."""
    q, k = case["q"], case["k"]
    if outputs.get("output shape") != tuple(q.shape):
        return f"should return a tensor of shape {tuple(q.shape)}, got {outputs.get('output shape')!r}"
    batch, n_heads, n_queries, _ = q.shape
    k_bytes = k.numel() * k.element_size()
    copy_bytes, largest = k_bytes * n_heads, outputs.get("largest new tensor")
    if isinstance(largest, bool) or not isinstance(largest, int) or largest >= copy_bytes / 2:
        largest = f"{largest:,}" if isinstance(largest, int) else repr(largest)
        return (f"{COPY} (torch.{outputs.get('made by')} allocated {largest} bytes; k itself holds {k_bytes:,}, "
                f"the scores {batch * n_heads * n_queries * k.shape[-2] * 4:,}; an H-fold copy of k would be {copy_bytes:,})")
    return ""


def _describe_no_copy(case) -> str:
    return f"mqa_attention(q{shape(case['q'])}, k{shape(case['k'])}, v{shape(case['v'])})"


def kv_params_expected(case) -> dict:
    d_model, n_heads, n_kv = case["args"]
    if case["hugging face"]:  # a real LlamaAttention with these shapes, on the meta device
        from attention_course.model_configs import meta_llama_attention, projection_params

        return {"params": projection_params(meta_llama_attention(d_model, n_heads, n_kv, case["bias"]), "k_proj", "v_proj")}
    shapes = llama_shapes(d_model, n_heads, n_kv, case["bias"])
    return {"params": sum(math.prod(dims) for key, dims in shapes.items() if key.startswith(("k_proj", "v_proj")))}


def kv_params_mistakes(case) -> dict:
    """Mistake -> the wrong count it gives (two mistakes may give the same number: the first is named)."""
    d_model, n_heads, n_kv = case["args"]
    bias = case["bias"]
    head_dim = d_model // n_heads
    kv_width = n_kv * head_dim
    right = ref.kv_projection_params(d_model, n_heads, n_kv, bias)
    found = {
        SEED_PARAMS: 2 * n_kv * head_dim * head_dim + (2 * kv_width if bias else 0),
        SEED_GQA_PARAMS: 2 * d_model * d_model // n_kv + (2 * kv_width if bias else 0),
        ONE_PROJECTION: right // 2,
    }
    if n_kv != n_heads:
        found[KV_PARAMS_MHA] = ref.kv_projection_params(d_model, n_heads, n_heads, bias)
    if bias:
        found[BIAS_MISSED] = ref.kv_projection_params(d_model, n_heads, n_kv, False)
        found[BIAS_WIDE] = 2 * (d_model * kv_width + d_model)
    return {"params": {message: value for message, value in found.items() if value != right}}


def _describe_params(case) -> str:
    d_model, n_heads, n_kv = case["args"]
    return f"kv_projection_params({d_model}, {n_heads}, {n_kv}, bias={case['bias']})"


MQA_ATTENTION = Exercise("test_mqa_attention", "mqa_attention", kernel.mqa_attention_cases, kernel.run_mqa_attention,
                         gqa.attention_expected, gqa.describe_attention("mqa_attention"), gqa.attention_mistakes)
MQA_NO_COPY = Exercise("test_mqa_no_copy", "mqa_attention: no copy of k or v", kernel.mqa_no_copy_cases, kernel.run_mqa_no_copy,
                       lambda case: {}, _describe_no_copy, judge=_no_copy_judge)
MULTI_QUERY_ATTENTION = Exercise("test_module", "MultiQueryAttention", kernel.multi_query_layer_cases, kernel.run_multi_query_layer,
                                 gqa.layer_expected, gqa.describe_layer(True), gqa.layer_mistakes, gqa.layout_problem)
PARAMS = Exercise("test_params", "kv_projection_params", kernel.params_cases, kernel.run_params, kv_params_expected,
                  _describe_params, kv_params_mistakes)
EXERCISES = (MQA_ATTENTION, MQA_NO_COPY, MULTI_QUERY_ATTENTION, PARAMS)
