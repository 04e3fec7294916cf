"""Checks for 01_causal_attention. ``thorough=True`` is what hidden tests use: more shapes,
leading batch dimensions, fewer queries than keys, float16 / bfloat16. CUDA only in the package's
GPU check, so that a score never depends on the grader's hardware."""

import math

import torch

from attention_course.checks.diagnosis import call, devices, dtypes, expect_close, expect_on_device, expect_value_error, passed
from attention_course.kernels import causal as ref

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
HALF_OVERFLOW = (
    "the mask's fill value does not fit in float16 (its largest magnitude is 65504): masked_fill(..., -1e9) or "
    "torch.finfo(torch.float32).min overflow. Fill with float('-inf'), or torch.finfo(scores.dtype).min"
)
WRONG_AXIS = "softmax over the wrong axis: normalize over the keys (dim=-1), so each query's row sums to 1"
MASK_ZERO = "masked scores were set to 0 instead of -inf: exp(0) = 1 still gives future keys weight"
MASK_AFTER = "the mask was applied after the softmax: rows no longer sum to 1; fill masked scores with -inf before it"
FILLED_ALLOWED = (
    "the mask is used the wrong way round: masked_fill fills where its mask is True, so fill the *future* keys "
    "(~causal_mask(...)), not the ones a query may attend (rows left with only -inf give NaN)"
)
CAUSAL_IGNORED = "causal=False must give full attention over every key, but the output is masked"


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _qk_shapes(thorough: bool) -> list[tuple[tuple[int, ...], int, int, int]]:
    """(leading dims, Tq, Tk, d); queries are the last Tq of Tk positions."""
    shapes = [((1,), 5, 5, 8), ((2, 3), 6, 6, 4), ((2,), 3, 7, 8), ((), 4, 4, 16)]  # () : no leading dimension
    if thorough:
        shapes += [((2, 2, 2), 1, 9, 8), ((3,), 11, 11, 32), ((1,), 7, 13, 8)]
    return shapes


def _mask_variant(n_queries: int, n_keys: int, kind: str) -> torch.Tensor:
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


def _weights_variant(q, k, causal=True, scale="sqrt", axis=-1, mask="bottom_right", fill=-math.inf, after=False):
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
    allowed = _mask_variant(q.shape[-2], k.shape[-2], mask).to(q.device)
    if after:
        return torch.softmax(scores, dim=axis) * allowed
    return torch.softmax(scores.masked_fill(~allowed, fill), dim=axis)


def _weights_mistakes(q, k, causal):
    def mistakes():
        found = {
            NO_SCALE: _weights_variant(q, k, causal, scale="none"),
            SCALE_D: _weights_variant(q, k, causal, scale="d"),
            WRONG_AXIS: _weights_variant(q, k, causal, axis=-2),
        }
        if causal:
            found |= {
                FUTURE_LEAK: _weights_variant(q, k, causal, mask=None),
                TOP_LEFT: _weights_variant(q, k, causal, mask="top_left"),
                STRICT: _weights_variant(q, k, causal, mask="strict"),
                LOOKAHEAD: _weights_variant(q, k, causal, mask="lookahead"),
                FILLED_ALLOWED: _weights_variant(q, k, causal, mask="future_only"),
                MASK_ZERO: _weights_variant(q, k, causal, fill=0.0),
                MASK_AFTER: _weights_variant(q, k, causal, after=True),
            }
        else:
            found[CAUSAL_IGNORED] = _weights_variant(q, k, True)
        return found

    return mistakes


def _visible_extras(thorough: bool) -> list[tuple[str, torch.dtype]]:
    """(device, dtype) of the few extra cases a visible check runs after its float32 CPU cases: one in
    float16 and one in bfloat16 (which hidden tests run throughout). The same on every machine, so that
    a check passes or fails alike in Colab and on any grader; a device bug is found by the meta case."""
    return [] if thorough else [("cpu", torch.float16), ("cpu", torch.bfloat16)]


def _qkv_cases(thorough: bool, seed: int):
    """v has dv = d + 2 features: a scale by v's size shows."""
    generator = _generator(seed)

    def draw(lead, n_queries, n_keys, d, device, dtype):
        q = torch.randn(*lead, n_queries, d, generator=generator, dtype=torch.float64)
        k = torch.randn(*lead, n_keys, d, generator=generator, dtype=torch.float64)
        v = torch.randn(*lead, n_keys, d + 2, generator=generator, dtype=torch.float64)
        return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))

    for device in devices(thorough):
        for dtype in dtypes(thorough):
            for lead, n_queries, n_keys, d in _qk_shapes(thorough):
                yield draw(lead, n_queries, n_keys, d, device, dtype)
    for device, dtype in _visible_extras(thorough):  # fewer queries than keys, batch and heads
        yield draw((2, 2), 3, 7, 8, device, dtype)


def _call(fn, *args, what: str, **kwargs):
    """``call``, naming a mask fill that overflows float16."""
    __tracebackhide__ = True
    try:
        return call(fn, *args, what=what, **kwargs)
    except AssertionError as error:
        if "without overflow" in str(error):
            raise AssertionError(f"{what}: {HALF_OVERFLOW}") from error
        raise


def check_causal_mask(causal_mask, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    what = "causal_mask"
    # (1, 1) last: there an inverted mask and a strict one look the same.
    sizes = [(4, 4), (3, 6), (1, 5), (1, 1)]
    if thorough:
        sizes += [(7, 7), (2, 9), (16, 16), (5, 12)]
    for n_queries, n_keys in sizes:
        case = f"{what}({n_queries}, {n_keys})"
        mask = call(causal_mask, n_queries, n_keys, what=case)
        if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
            raise AssertionError(f"{case}: return a bool tensor (True = may attend), got dtype {mask.dtype}")
        expected = ref.causal_mask(n_queries, n_keys)
        expect_close(
            mask,
            expected,
            case,
            lambda: {
                TOP_LEFT: _mask_variant(n_queries, n_keys, "top_left"),
                STRICT: _mask_variant(n_queries, n_keys, "strict"),
                LOOKAHEAD: _mask_variant(n_queries, n_keys, "lookahead"),
                "the mask is inverted: True must mean *may attend*": ~expected,
                "the mask is transposed: query i (row) may attend keys j <= i + (Tk - Tq) (columns)": _mask_variant(
                    n_queries, n_keys, "transposed"
                ),
            },
        )
    for device in devices(True):  # and CUDA in the package's GPU check (diagnosis.CUDA_CHECKS_ENV)
        mask = call(causal_mask, 3, 4, device=device, what=f"{what}(3, 4, device={device!r})")
        expect_close(mask, ref.causal_mask(3, 4, device=device), f"{what}(3, 4, device={device!r})")
    expect_value_error(causal_mask, 5, 3, what=f"{what}(5, 3)", problem="more queries than keys")
    expect_on_device(causal_mask, 3, 4, device="meta", what=f"{what}(3, 4, device='meta')")
    passed(what, len(sizes) + len(devices(True)) + 1)


def check_attention_weights(attention_weights, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    n_cases = 0
    for q, k, _ in _qkv_cases(thorough, seed):
        for causal in (True, False):
            case = f"attention_weights(q{tuple(q.shape)}, k{tuple(k.shape)}, causal={causal}) [{q.dtype}, {q.device}]"
            weights = _call(attention_weights, q, k, causal=causal, what=case)
            expected = _weights_variant(q, k, causal).to(q.dtype)
            expect_close(weights, expected, case, _weights_mistakes(q, k, causal))
            if causal and isinstance(weights, torch.Tensor):
                blocked = ~ref.causal_mask(q.shape[-2], k.shape[-2], device=q.device)
                if (weights[..., blocked] != 0).any():
                    raise AssertionError(f"{case}: masked entries must be exactly 0 (fill scores with -inf, not a large negative number)")
            n_cases += 1
    q = torch.randn(5, 4)  # visible checks too: the exercise asks for it
    expect_value_error(
        attention_weights, q, torch.randn(3, 4), what="attention_weights(q[5, 4], k[3, 4])", problem="more queries than keys"
    )
    expect_on_device(attention_weights, torch.empty(2, 4, 8), torch.empty(2, 6, 8), causal=True, what="attention_weights(q[2, 4, 8], k[2, 6, 8])")
    passed("attention_weights", n_cases + 1)


def check_attention(attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    n_cases = 0
    for q, k, v in _qkv_cases(thorough, seed):
        for causal in (True, False):
            case = f"attention(q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}, causal={causal}) [{q.dtype}, {q.device}]"
            output = _call(attention, q, k, v, causal=causal, what=case)
            weights_mistakes = _weights_mistakes(q, k, causal)

            def mistakes(q=q, k=k, v=v, causal=causal, weights_mistakes=weights_mistakes):
                weights = _weights_variant(q, k, causal)
                found = {message: wrong @ v.double() for message, wrong in weights_mistakes().items()}
                found[SCALE_DV] = _weights_variant(q, k, causal, scale=v.shape[-1]) @ v.double()
                found["the output is the attention weights: multiply them by v"] = weights
                found["the weights multiply the keys, not the values"] = weights @ k.double()
                return found

            expect_close(output, (_weights_variant(q, k, causal) @ v.double()).to(q.dtype), case, mistakes)
            n_cases += 1
    expect_on_device(attention, torch.empty(2, 4, 8), torch.empty(2, 6, 8), torch.empty(2, 6, 5), causal=True, what="attention(q[2, 4, 8], k[2, 6, 8], v[2, 6, 5])")
    passed("attention", n_cases)


def check_split_merge(split_heads, merge_heads, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    generator = _generator(seed)
    shapes = [(2, 5, 12, 3), (1, 4, 8, 2)]
    if thorough:
        shapes += [(3, 7, 64, 4), (1, 1, 6, 6), (2, 3, 8, 1)]
    for device in devices(thorough):
        for batch, length, width, n_heads in shapes:
            x = torch.randn(batch, length, width, generator=generator).to(device)
            head_dim = width // n_heads
            case = f"split_heads(x{tuple(x.shape)}, n_heads={n_heads})"
            heads = call(split_heads, x, n_heads, what=case)
            expect_close(
                heads,
                ref.split_heads(x, n_heads),
                case,
                lambda: {
                    "reshaped straight to [B, H, T, d]: split the features into [H, d] first, then move the head "
                    "axis: x.view(B, T, H, d).transpose(1, 2)": x.reshape(batch, n_heads, length, head_dim),
                    "heads are interleaved: head h must own the contiguous features h*d .. (h+1)*d - 1": x.view(
                        batch, length, head_dim, n_heads
                    ).permute(0, 3, 1, 2),
                },
            )
            y = torch.randn(batch, n_heads, length, head_dim, generator=generator).to(device)
            case = f"merge_heads(x{tuple(y.shape)})"
            expect_close(
                call(merge_heads, y, what=case),
                ref.merge_heads(y),
                case,
                lambda: {
                    "merged without moving the head axis back: transpose(1, 2) to [B, T, H, d] before reshaping "
                    "to [B, T, D]": y.reshape(batch, length, width),
                },
            )
            expect_close(call(merge_heads, ref.split_heads(x, n_heads), what=case), x, "merge_heads(split_heads(x))")
    passed("split_heads / merge_heads", 3 * len(shapes) * len(devices(thorough)))


def _gpt2_variant(x, w_attn, b_attn, w_proj, b_proj, n_heads, order="qkv", split="ok", scale="sqrt", axis=-1,
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
    y = _weights_variant(q, k, True, scale="none" if scale == "none" else "sqrt", axis=axis, mask=mask) @ v
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


def _gpt2_weights(width: int, generator: torch.Generator, dtype, device):
    shapes = [(width, 3 * width), (3 * width,), (width, width), (width,)]
    scale = width**-0.5  # keeps activations O(1), so half-precision tolerances stay meaningful
    return [(scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(device=device, dtype=dtype) for shape in shapes]


def check_gpt2_attention(gpt2_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    generator = _generator(seed)
    shapes = [(2, 6, 16, 4), (1, 5, 12, 3)]
    if thorough:
        shapes += [(3, 9, 32, 8), (1, 1, 8, 2), (2, 12, 24, 1)]
    n_cases = 0
    runs = [(device, dtype, shape) for device in devices(thorough) for dtype in dtypes(thorough) for shape in shapes]
    runs += [(device, dtype, shapes[0]) for device, dtype in _visible_extras(thorough)]
    for device, dtype, (batch, length, width, n_heads) in runs:
        x = torch.randn(batch, length, width, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
        weights = _gpt2_weights(width, generator, dtype, device)
        case = f"gpt2_attention(x{tuple(x.shape)}, ..., n_heads={n_heads}) [{dtype}, {device}]"
        output = _call(gpt2_attention, x, *weights, n_heads, what=case)

        def mistakes(x=x, weights=weights, n_heads=n_heads):
            return {message: _gpt2_variant(x, *weights, n_heads, **kw) for message, kw in GPT2_MISTAKES.items()}

        expect_close(output, _gpt2_variant(x, *weights, n_heads).to(dtype), case, mistakes)
        n_cases += 1
    if thorough:
        n_cases += _check_against_hugging_face(gpt2_attention, generator)
    expect_on_device(gpt2_attention, torch.empty(2, 5, 12), *map(torch.empty, [(12, 36), (36,), (12, 12), (12,)]), 3, what="gpt2_attention(x[2, 5, 12], ..., n_heads=3)")
    passed("gpt2_attention", n_cases)


def _check_against_hugging_face(gpt2_attention, generator: torch.Generator) -> int:
    """The learner's layer equals Hugging Face's GPT2Attention with every parameter randomized
    (the reference in float64, the learner's layer in float32, a dtype of the contract)."""
    __tracebackhide__ = True
    from attention_course.hf_compat import gpt2_attention_layer_output, random_gpt2_attention_layer

    layer = random_gpt2_attention_layer(48, 6, generator)
    with torch.no_grad():
        x = torch.randn(2, 10, 48, generator=generator, dtype=torch.float64)
        expected = gpt2_attention_layer_output(layer, x)
    case = "gpt2_attention vs Hugging Face GPT2Attention (same weights, float32)"
    weights = [t.float() for t in (layer.c_attn.weight, layer.c_attn.bias, layer.c_proj.weight, layer.c_proj.bias)]
    with torch.no_grad():
        output = call(gpt2_attention, x.float(), *weights, 6, what=case)
    expect_close(output, expected.float(), case)
    return 1
