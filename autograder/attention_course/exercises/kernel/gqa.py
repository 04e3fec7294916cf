"""04_gqa, kernel half (and the parts 03_mqa reuses with one key/value head): the inputs of each
exercise and how the student's code is called.

Attention: q [B, H, Tq, d] against k, v [B, G, Tk, d]; visible cases float32 on the CPU with one
float16 and one bfloat16 case; thorough ones (hidden tests, the grader's fresh seed) add shapes,
shapes drawn from the seed, fewer queries than keys, and float16 / bfloat16 throughout. The layer
(``GroupedQueryAttention``, ``MultiQueryAttention``) gets weights drawn in Llama's layout (the
contract: ``llama_shapes``); its layout, its whole-sequence output and its output in cached chunks
through a ``KVCache`` are measured here and judged by the reference half."""

import torch
from torch import nn

from attention_course.exercises.kernel.causal_attention import DEVICE, _visible_extras
from attention_course.exercises.kernel.devices import device_problem
from attention_course.exercises.kernel.draw import devices, dtypes, integer, raised, randn
from attention_course.kernels.kv_cache import KVCache

# A requirement measured where the code runs ('' when met): a mask sliced for Tq == Tk fails on a chunk of
# new queries against more keys, with PyTorch's size error; said here, where the error is seen.
MASK_SHAPE = "the mask's shape"
CHUNK_MASK = (
    "the mask of Tq new queries against Tk keys (all cached) is Tq x Tk, bottom-right aligned: causal_mask(Tq, Tk). "
    "A T_new x T_new mask (as in code that slices a stored mask[:T, :T], like nanoGPT's bias or LLMs-from-scratch's "
    "mask[:num_tokens, :num_tokens]) only works for one token at a time"
)
_SIZE_ERROR = "must match the size of tensor"
LAYER_LENGTH, CHUNKS = 7, (3, 2, 1, 1)  # the layer's x [2, 7, D]: a prefill of 3, a chunk of 2, then single tokens


def _size_error(error: BaseException) -> str:
    return f"{CHUNK_MASK} (it raised {type(error).__name__}: {str(error).strip()[:200]})"


def llama_shapes(d_model: int, n_heads: int, n_kv_heads: int, bias: bool) -> dict[str, tuple[int, ...]]:
    """The layer's state_dict as Llama's attention holds it (nn.Linear weights [out, in]): q_proj D -> H*d,
    k_proj and v_proj D -> G*d, o_proj H*d -> D; biases only with bias=True."""
    head_dim = d_model // n_heads
    width, kv_width = n_heads * head_dim, n_kv_heads * head_dim
    shapes = {"q_proj.weight": (width, d_model), "k_proj.weight": (kv_width, d_model),
              "v_proj.weight": (kv_width, d_model), "o_proj.weight": (d_model, width)}
    if bias:
        shapes.update({"q_proj.bias": (width,), "k_proj.bias": (kv_width,), "v_proj.bias": (kv_width,), "o_proj.bias": (d_model,)})
    return shapes


def _heads(generator: torch.Generator, n_kv_heads: int | None) -> tuple[int, int]:
    """(H, G) drawn: H a multiple of G, with G >= 2 and H / G >= 2 (where pairing query heads with the
    wrong group shows) unless G is given."""
    n_kv = n_kv_heads or integer(generator, 2, 3)
    return n_kv * integer(generator, 2, 4), n_kv


# ----------------------------------------------------------------------------------------------
# repeat_kv (04)
# ----------------------------------------------------------------------------------------------


def repeat_kv_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    shapes = [(2, 2, 5, 4, 3), (1, 3, 4, 8, 2), (2, 4, 3, 2, 1)]  # (B, G, T, d, n_rep)
    if thorough:
        shapes += [(3, 8, 7, 16, 4), (1, 1, 6, 8, 12), (2, 5, 2, 4, 2)]
        for n_rep in (integer(generator, 2, 4), integer(generator, 2, 4)):
            shapes.append((integer(generator, 1, 2), integer(generator, 2, 4), integer(generator, 1, 5), integer(generator, 1, 4), n_rep))
    return [{"x": randn(generator, batch, n_kv, length, head_dim).float().to(device), "n_rep": n_rep}
            for device in devices(thorough) for batch, n_kv, length, head_dim, n_rep in shapes]


def run_repeat_kv(student, case) -> dict:
    return {"y": student.repeat_kv(case["x"], case["n_rep"])}


# ----------------------------------------------------------------------------------------------
# gqa_attention (04), mqa_attention (03)
# ----------------------------------------------------------------------------------------------


def _attention_shapes(generator: torch.Generator, thorough: bool, n_kv_heads: int | None) -> list[tuple[int, ...]]:
    """(B, H, G, Tq, Tk, d); every G replaced by ``n_kv_heads`` when given (1: multi-query attention)."""
    shapes = [(2, 4, 2, 5, 5, 8), (1, 6, 3, 3, 7, 4), (2, 8, 8, 4, 4, 8), (1, 4, 1, 6, 6, 8)]
    if thorough:
        shapes += [(3, 12, 4, 9, 9, 16), (1, 8, 2, 1, 11, 8), (2, 6, 6, 2, 5, 4), (2, 16, 1, 7, 7, 8), (1, 4, 2, 8, 8, 32)]
        for fewest_extra_keys in (0, 1):
            n_heads, n_kv = _heads(generator, n_kv_heads)
            n_queries = integer(generator, 2, 6)
            shapes.append((integer(generator, 1, 3), n_heads, n_kv, n_queries, n_queries + integer(generator, fewest_extra_keys, 6),
                           integer(generator, 2, 8)))
    if n_kv_heads is not None:
        shapes = [(b, h, n_kv_heads, tq, tk, d) for b, h, _, tq, tk, d in shapes]
    return shapes


def _attention_cases(generator: torch.Generator, thorough: bool, n_kv_heads: int | None) -> list[dict]:
    """Causal and not, in every dtype under test, then the meta-device case."""
    shapes = _attention_shapes(generator, thorough, n_kv_heads)
    runs = [(device, dtype, shape) for device in devices(thorough) for dtype in dtypes(thorough) for shape in shapes]
    runs += [(device, dtype, shapes[1]) for device, dtype in _visible_extras(thorough)]  # half precision: one case each
    cases = []
    for device, dtype, (batch, n_heads, n_kv, n_queries, n_keys, head_dim) in runs:
        q = randn(generator, batch, n_heads, n_queries, head_dim)
        k, v = randn(generator, batch, n_kv, n_keys, head_dim), randn(generator, batch, n_kv, n_keys, head_dim)
        q, k, v = (t.to(device=device, dtype=dtype) for t in (q, k, v))
        cases += [{"kind": "values", "q": q, "k": k, "v": v, "causal": causal} for causal in (True, False)]
    n_kv = 1 if n_kv_heads == 1 else 2
    meta = [torch.zeros(1, 4, 3, 8), torch.zeros(1, n_kv, 5, 8), torch.zeros(1, n_kv, 5, 8)]  # shapes only: run moves them to meta
    return cases + [{"kind": "meta", "q": meta[0], "k": meta[1], "v": meta[2], "causal": True}]


def gqa_attention_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    cases = _attention_cases(generator, thorough, None)
    q, k = randn(generator, 1, 6, 3, 4).float(), randn(generator, 1, 4, 3, 4).float()  # 6 query heads, 4 key/value heads
    return cases + [{"kind": "raises", "q": q, "k": k, "v": k, "causal": True}]


def _run_attention(fn, case) -> dict:
    q, k, v, causal = case["q"], case["k"], case["v"], case["causal"]
    if case["kind"] == "meta":
        return {DEVICE: device_problem(fn, q, k, v, causal=causal)}
    if case["kind"] == "raises":
        return {"y": raised(fn, q, k, v, causal=causal)}
    try:
        return {MASK_SHAPE: "", "y": fn(q, k, v, causal=causal)}
    except RuntimeError as error:
        if causal and q.shape[-2] < k.shape[-2] and _SIZE_ERROR in str(error):
            return {MASK_SHAPE: _size_error(error)}
        raise


def run_gqa_attention(student, case) -> dict:
    return _run_attention(student.gqa_attention, case)


# ----------------------------------------------------------------------------------------------
# The layer: GroupedQueryAttention (04), MultiQueryAttention (03)
# ----------------------------------------------------------------------------------------------


def _layer_configs(generator: torch.Generator, thorough: bool, n_kv_heads: int | None) -> list[tuple[int, int, int, bool]]:
    """(d_model, H, G, bias)."""
    configs = [(32, 4, 2, False), (48, 6, 3, True), (32, 4, 4, False), (32, 8, 1, True)]
    if thorough:
        configs += [(64, 8, 2, True), (96, 12, 4, False), (24, 6, 6, True), (64, 16, 1, False)]
        n_heads, n_kv = _heads(generator, n_kv_heads)
        # An even head size: Hugging Face's LlamaAttention (the thorough oracle) refuses odd ones.
        configs.append((n_heads * 2 * integer(generator, 1, 3), n_heads, n_kv, bool(integer(generator, 0, 1))))
    if n_kv_heads is not None:
        configs = list(dict.fromkeys((d, h, n_kv_heads, bias) for d, h, _, bias in configs))
    return configs


def _layer_cases(generator: torch.Generator, thorough: bool, n_kv_heads: int | None) -> list[dict]:
    """Per layer: its layout (attributes, state_dict), then Llama-layout weights loaded and x [2, 7, D] run whole and
    in cached chunks in every dtype under test (against Hugging Face's LlamaAttention in thorough cases), then the
    meta-device case."""
    cases = []
    for index, (d_model, n_heads, n_kv, bias) in enumerate(_layer_configs(generator, thorough, n_kv_heads)):
        size = {"size": (d_model, n_heads, n_kv), "bias": bias}
        weights = {key: randn(generator, *dims, scale=d_model**-0.5) for key, dims in llama_shapes(d_model, n_heads, n_kv, bias).items()}
        x = randn(generator, 2, LAYER_LENGTH, d_model)
        runs = [(device, dtype) for device in devices(thorough) for dtype in dtypes(thorough)]
        runs += _visible_extras(thorough) if index == 0 else []  # half precision: the first layer only
        cases.append({"kind": "layout", **size})
        cases += [{"kind": "values", **size, "weights": weights, "x": x, "device": device, "dtype": dtype, "chunks": CHUNKS,
                   "oracle": "hugging face" if thorough else "reference"} for device, dtype in runs]
        cases.append({"kind": "meta", **size, "x": torch.zeros(2, LAYER_LENGTH, d_model)})
    return cases


def grouped_layer_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    return _layer_cases(generator, thorough, None) + [{"kind": "raises", "size": (24, 6, 4), "bias": False}]


def _prefill_and_step(layer, x, cache) -> list:
    return [layer(x), layer(x[:, :3], cache=cache), layer(x[:, 3:], cache=cache)]


def layer_layout(layer) -> dict:
    """What a Llama-style layer exposes: its head counts and its state_dict's names and shapes (06's rotary layer too)."""
    state = layer.state_dict()
    buffers = dict(layer.named_buffers())
    return {"n_heads": getattr(layer, "n_heads", None), "n_kv_heads": getattr(layer, "n_kv_heads", None),
            "head_dim": getattr(layer, "head_dim", None),
            "state_dict": tuple((key, tuple(int(n) for n in t.shape)) for key, t in state.items()),
            "persistent buffers": tuple(key for key in state if key in buffers)}


def _build(student, multi_query: bool, d_model: int, n_heads: int, n_kv_heads: int, bias: bool):
    """The student's layer: ``MultiQueryAttention(D, H, bias=...)`` or ``GroupedQueryAttention(D, H, G, bias=...)``."""
    if multi_query:
        return student.MultiQueryAttention(d_model, n_heads, bias=bias)
    return student.GroupedQueryAttention(d_model, n_heads, n_kv_heads, bias=bias)


def _run_layer(student, case, multi_query: bool) -> dict:
    d_model, n_heads, n_kv = case["size"]
    if case["kind"] == "raises":
        return {"layer": raised(_build, student, multi_query, d_model, n_heads, n_kv, case["bias"])}
    layer = _build(student, multi_query, d_model, n_heads, n_kv, case["bias"])
    head_dim = d_model // n_heads
    if case["kind"] == "layout":
        return layer_layout(layer)
    if case["kind"] == "meta":
        cache = KVCache(2, n_kv, head_dim, LAYER_LENGTH, device="meta")
        return {DEVICE: device_problem(_prefill_and_step, layer, case["x"], cache)}
    layer.load_state_dict(case["weights"])
    layer = layer.to(device=case["device"], dtype=case["dtype"]).eval()
    x = case["x"].to(device=case["device"], dtype=case["dtype"])
    outputs = {MASK_SHAPE: ""}
    with torch.no_grad():
        outputs["y"] = layer(x)
        cache, start = KVCache(x.shape[0], n_kv, head_dim, x.shape[1], dtype=case["dtype"], device=case["device"]), 0
        for n_new in case["chunks"]:
            end = start + n_new
            try:
                y = layer(x[:, start:end], cache=cache)
            except RuntimeError as error:
                if start and n_new > 1 and _SIZE_ERROR in str(error):
                    return outputs | {MASK_SHAPE: _size_error(error)}
                raise
            outputs[f"cache length after x[:, :{end}]"] = len(cache)
            outputs[f"x[:, {start}:{end}] after {start} cached"] = y
            start = end
    return outputs


def run_grouped_layer(student, case) -> dict:
    return _run_layer(student, case, multi_query=False)


# ----------------------------------------------------------------------------------------------
# mha_to_gqa (04)
# ----------------------------------------------------------------------------------------------


class LlamaLayout(nn.Module):
    """A layer as the converter receives it: q_proj, k_proj, v_proj, o_proj in Llama's layout, and the attributes
    n_heads, n_kv_heads, head_dim (no forward: the conversion only reads the parameters)."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, bias: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)


def convert_cases(generator: torch.Generator, thorough: bool) -> list[dict]:
    configs = [(32, 4, 2, True), (48, 6, 3, False), (32, 8, 1, True), (32, 4, 4, False)]
    if thorough:
        configs += [(64, 8, 2, True), (96, 12, 4, True), (64, 16, 8, False)]
        for bias in (True, False):
            n_heads, n_kv = _heads(generator, None)
            configs.append((n_heads * integer(generator, 2, 5), n_heads, n_kv, bias))
    return [{"size": (d_model, n_heads, n_kv), "bias": bias,
             "weights": {key: randn(generator, *dims) for key, dims in llama_shapes(d_model, n_heads, n_heads, bias).items()}}
            for d_model, n_heads, n_kv, bias in configs]


def run_convert(student, case) -> dict:
    d_model, n_heads, n_kv = case["size"]
    mha = LlamaLayout(d_model, n_heads, n_heads, bias=case["bias"]).double()
    mha.load_state_dict(case["weights"])
    converted = student.mha_to_gqa(mha, n_kv)
    unchanged = all(  # 0 when left as it was, 1 when changed (an int: the reference half names that mistake)
        torch.equal(t, case["weights"][key]) for key, t in mha.state_dict().items())
    state = converted.state_dict() if isinstance(converted, nn.Module) else {}
    return {"the input layer": 0 if unchanged else 1, "n_kv_heads": getattr(converted, "n_kv_heads", None),
            "parameters": ", ".join(sorted(state))} | dict(state)
