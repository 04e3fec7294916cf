"""Checks for 04_gqa, and the shared ones of 03_mqa (multi-query attention is one group).
``thorough=True`` is what hidden tests use: more shapes, fewer queries than keys, float16 /
bfloat16 (CUDA only in the package's GPU check), ``scaled_dot_product_attention(enable_gqa=True)`` and Hugging Face
``LlamaAttention`` (identity rotary embeddings, every parameter randomized) as oracles."""

import torch

from attention_course.checks.causal_attention import FUTURE_LEAK, NO_SCALE, TOP_LEFT, _visible_extras, _weights_variant
from attention_course.checks.diagnosis import call, devices, dtypes, expect_close, expect_on_device, expect_value_error, passed
from attention_course.kernels import gqa as ref
from attention_course.kernels.kv_cache import KVCache
from attention_course.memory import NewStorages
from attention_course.model_configs import meta_llama_attention, projection_params

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
COPY = (
    "k or v copied once per query head (an H-fold copy): repeat, repeat_interleave, expand(...).contiguous() and also "
    "q @ k.transpose(-2, -1) with k broadcast over the heads (torch.matmul materializes broadcast batch dimensions) all "
    "copy the keys. Fold the query heads into the rows of one product against the shared key head: "
    "q.reshape(B, G, (H/G) * Tq, d) @ k.transpose(-2, -1)"
)
CHUNK_MASK = (
    "the mask of Tq new queries against Tk keys (all cached) is Tq x Tk, bottom-right aligned: causal_mask(Tq, Tk). "
    "A T_new x T_new mask (as in code that slices a stored mask[:T, :T], like nanoGPT's bias or LLMs-from-scratch's "
    "mask[:num_tokens, :num_tokens]) only works for one token at a time"
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


def _group_of_heads(x: torch.Tensor, n_heads: int, pairing: str) -> torch.Tensor:
    """[B, G, T, d] -> [B, H, T, d]: the key/value head of each query head, float64."""
    n_rep = n_heads // x.shape[-3]
    x = x.double()
    return x.repeat_interleave(n_rep, dim=-3) if pairing == "block" else x.repeat(*([1] * (x.dim() - 3)), n_rep, 1, 1)


def _grouped_variant(q, k, v, causal=True, pairing="block", **mistake):
    n_heads = q.shape[-3]
    k, v = _group_of_heads(k, n_heads, pairing), _group_of_heads(v, n_heads, pairing)
    return _weights_variant(q, k, causal, **mistake) @ v


def _grouped_mistakes(q, k, v, causal):
    def mistakes():
        found = {NO_SCALE: _grouped_variant(q, k, v, causal, scale="none")}
        if k.shape[-3] not in (1, q.shape[-3]):
            found[MODULO] = _grouped_variant(q, k, v, causal, pairing="modulo")
        if causal:
            found[FUTURE_LEAK] = _grouped_variant(q, k, v, causal, mask=None)
            found[TOP_LEFT] = _grouped_variant(q, k, v, causal, mask="top_left")
        return found

    return mistakes


def _attention_cases(thorough: bool, kv_heads: list[int] | None):
    """(B, H, G, Tq, Tk, d); ``kv_heads=[1]`` for multi-query attention."""
    cases = [(2, 4, 2, 5, 5, 8), (1, 6, 3, 3, 7, 4), (2, 8, 8, 4, 4, 8), (1, 4, 1, 6, 6, 8)]
    if thorough:
        cases += [(3, 12, 4, 9, 9, 16), (1, 8, 2, 1, 11, 8), (2, 6, 6, 2, 5, 4), (2, 16, 1, 7, 7, 8), (1, 4, 2, 8, 8, 32)]
    if kv_heads is not None:
        cases = [(b, h, g, tq, tk, d) for b, h, _, tq, tk, d in cases for g in kv_heads]
    return cases


def check_grouped_attention(fn, name: str, thorough: bool, seed: int, kv_heads: list[int] | None = None) -> int:
    """``fn(q, k, v, causal)`` against grouped attention in float64; returns the number of cases."""
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    cases = _attention_cases(thorough, kv_heads)
    runs = [(device, dtype, case) for device in devices(thorough) for dtype in dtypes(thorough) for case in cases]
    runs += [(device, dtype, cases[1]) for device, dtype in _visible_extras(thorough)]  # half precision, GPU: one case each
    for device, dtype, (batch, n_heads, n_kv, n_queries, n_keys, head_dim) in runs:
        q = torch.randn(batch, n_heads, n_queries, head_dim, generator=generator, dtype=torch.float64)
        k, v = (torch.randn(batch, n_kv, n_keys, head_dim, generator=generator, dtype=torch.float64) for _ in "kv")
        q, k, v = (t.to(device=device, dtype=dtype) for t in (q, k, v))
        for causal in (True, False):
            case = f"{name}(q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}, causal={causal}) [{dtype}, {device}]"
            try:
                output = call(fn, q, k, v, causal=causal, what=case)
            except AssertionError as error:
                if causal and n_queries < n_keys and "must match the size of tensor" in str(error):
                    raise AssertionError(f"{error}. Hint: {CHUNK_MASK}") from error
                raise
            expected = _grouped_variant(q, k, v, causal)
            if thorough and n_queries == n_keys:  # PyTorch's own grouped kernel must agree with the float64 reference
                sdpa = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                                                        is_causal=causal, enable_gqa=True)
                torch.testing.assert_close(sdpa, expected)
            expect_close(output, expected.to(dtype), case, _grouped_mistakes(q, k, v, causal))
            n_cases += 1
    n_kv = 1 if kv_heads == [1] else 2
    expect_on_device(fn, torch.empty(1, 4, 3, 8), torch.empty(1, n_kv, 5, 8), torch.empty(1, n_kv, 5, 8), causal=True,
                     what=f"{name}(q[1, 4, 3, 8], k[1, {n_kv}, 5, 8], v[1, {n_kv}, 5, 8], causal=True)")
    return n_cases


def check_repeat_kv(repeat_kv, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 2, 5, 4, 3), (1, 3, 4, 8, 2), (2, 4, 3, 2, 1)]
    if thorough:
        shapes += [(3, 8, 7, 16, 4), (1, 1, 6, 8, 12), (2, 5, 2, 4, 2)]
    for device in devices(thorough):
        for batch, n_kv, length, head_dim, n_rep in shapes:
            x = torch.randn(batch, n_kv, length, head_dim, generator=generator).to(device)
            case = f"repeat_kv(x{tuple(x.shape)}, n_rep={n_rep})"
            output = call(repeat_kv, x, n_rep, what=case)
            expect_close(output, ref.repeat_kv(x, n_rep), case, lambda x=x, n_rep=n_rep: {TILED: x.repeat(1, n_rep, 1, 1)})
    passed("repeat_kv", len(shapes) * len(devices(thorough)))


def check_gqa_attention(gqa_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    n_cases = check_grouped_attention(gqa_attention, "gqa_attention", thorough, seed)
    q, k = torch.randn(1, 6, 3, 4), torch.randn(1, 4, 3, 4)
    expect_value_error(gqa_attention, q, k, k, what="gqa_attention(q[1, 6, 3, 4], k[1, 4, 3, 4], ...)",
                       problem="6 query heads that 4 key/value heads cannot share equally")
    passed("gqa_attention", n_cases + 1)


def check_no_kv_copy(fn, name: str, n_kv_heads: int) -> None:
    """One decode-like call (4 queries per head, 512 keys of 64 numbers): no operation may allocate
    as much as half an H/G-fold copy of k, while the scores need 16 times less. Only memory is
    judged here (and the output's shape): the values are the business of the attention checks."""
    __tracebackhide__ = True
    batch, n_heads, n_queries, n_keys, head_dim = 2, 8, 4, 512, 64
    generator = torch.Generator().manual_seed(7)
    q = torch.randn(batch, n_heads, n_queries, head_dim, generator=generator)
    k, v = (torch.randn(batch, n_kv_heads, n_keys, head_dim, generator=generator) for _ in "kv")
    case = f"{name}(q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)})"
    allocations = NewStorages()
    with allocations:
        output = call(fn, q, k, v, causal=True, what=case)
    if not isinstance(output, torch.Tensor) or output.shape != q.shape:
        raise AssertionError(f"{case} should return a tensor of shape {tuple(q.shape)}, got "
                             f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}")
    copy_bytes = k.numel() * k.element_size() * (n_heads // n_kv_heads)
    largest, op = allocations.largest
    if largest >= copy_bytes / 2:
        raise AssertionError(f"{case}: {COPY} (torch.{op} allocated {largest:,} bytes; k itself holds "
                             f"{k.numel() * k.element_size():,}, the scores {batch * n_heads * n_queries * n_keys * 4:,})")
    print(f"✓ {name}: no copy of k or v (largest new tensor {largest:,} bytes, an H-fold copy of k would be {copy_bytes:,})")


# ----------------------------------------------------------------------------------------------
# The attention layer (MultiQueryAttention of 03, GroupedQueryAttention of 04)
# ----------------------------------------------------------------------------------------------


def _module_cases(thorough: bool, kv_heads: list[int] | None):
    """(d_model, H, G, bias)."""
    cases = [(32, 4, 2, False), (48, 6, 3, True), (32, 4, 4, False), (32, 8, 1, True)]
    if thorough:
        cases += [(64, 8, 2, True), (96, 12, 4, False), (24, 6, 6, True), (64, 16, 1, False)]
    if kv_heads is not None:
        cases = list(dict.fromkeys((d, h, g, bias) for d, h, _, bias in cases for g in kv_heads))
    return cases


def _build(cls, d_model: int, n_heads: int, n_kv_heads: int, bias: bool, multi_query: bool):
    __tracebackhide__ = True
    if multi_query:
        return call(cls, d_model, n_heads, bias=bias, what=f"{cls.__name__}({d_model}, {n_heads}, bias={bias})")
    return call(cls, d_model, n_heads, n_kv_heads, bias=bias, what=f"{cls.__name__}({d_model}, {n_heads}, {n_kv_heads}, bias={bias})")


def _expect_llama_layout(module, hf_layer, name: str, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
    """Same attributes, projection names and shapes as ``LlamaAttention``, nothing more."""
    __tracebackhide__ = True
    for attribute, expected in (("n_heads", n_heads), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
        found = getattr(module, attribute, None)
        if found != expected:
            raise AssertionError(f"{name}.{attribute} should be {expected}, got {found!r}")
    theirs = {key: tuple(t.shape) for key, t in module.state_dict().items()}
    expected = {key: tuple(t.shape) for key, t in hf_layer.state_dict().items()}
    if theirs == expected:
        return
    width = n_heads * head_dim
    if n_kv_heads < n_heads and theirs.get("q_proj.weight") == (n_kv_heads * head_dim, width):
        raise AssertionError(f"{name}: {SHARED_QUERIES}")
    if n_kv_heads < n_heads and theirs.get("k_proj.weight") == (width, width):
        raise AssertionError(f"{name}: {KV_FULL_WIDTH}")
    missing = sorted(set(expected) - set(theirs))
    extra = sorted(set(theirs) - set(expected))
    buffers = [key for key in extra if key in dict(module.named_buffers())]
    if buffers:
        raise AssertionError(
            f"{name}: {', '.join(f'`{key}`' for key in buffers)} {'is a persistent buffer' if len(buffers) == 1 else 'are persistent buffers'} "
            f"(register_buffer), so {'it goes' if len(buffers) == 1 else 'they go'} into state_dict and Llama's weights no longer load "
            "into the layer (load_state_dict is strict). The layer's state_dict must hold q_proj, k_proj, v_proj and o_proj only: "
            "compute such a tensor in forward, or register it with persistent=False"
        )
    wrong = {key: (theirs[key], expected[key]) for key in set(theirs) & set(expected) if theirs[key] != expected[key]}
    raise AssertionError(
        f"{name}: parameters differ from Llama's layout (q_proj D -> H*d, k_proj and v_proj D -> G*d, o_proj H*d -> D, "
        f"nn.Linear weights [out, in], biases only with bias=True). Missing: {missing or 'none'}; unexpected: "
        f"{extra or 'none'}; wrong shapes (got, expected): {wrong or 'none'}"
    )


def _module_variant(x, state, n_heads, n_kv_heads, pairing="block", scale="sqrt", mask="bottom_right", project=True):
    """``scale="width"``: the scores divided by sqrt(d_model) instead of sqrt(head_dim)."""
    """The layer as a learner might write it, float64, over the whole sequence x [B, T, D]."""
    def linear(name, t):
        bias = state.get(f"{name}.bias")
        return t @ state[f"{name}.weight"].double().T + (0 if bias is None else bias.double())

    x = x.double()
    batch, length, width = x.shape
    head_dim = width // n_heads

    def heads(t, n):
        return t.view(batch, length, n, head_dim).transpose(1, 2)  # [B, n, T, d]

    q = heads(linear("q_proj", x), n_heads)
    if scale == "width":
        q, scale = q * (head_dim / width) ** 0.5, "sqrt"
    k, v = heads(linear("k_proj", x), n_kv_heads), heads(linear("v_proj", x), n_kv_heads)
    y = _grouped_variant(q, k, v, True, pairing=pairing, scale=scale, mask=mask)  # [B, H, T, d]
    y = y.transpose(1, 2).reshape(batch, length, width)
    return linear("o_proj", y) if project else y


MODULE_MISTAKES = {
    MODULO: {"pairing": "modulo"},
    NO_SCALE: {"scale": "none"},
    SCALE_WIDTH: {"scale": "width"},
    FUTURE_LEAK: {"mask": None},
    NO_OUTPUT_PROJ: {"project": False},
}


def check_attention_layer(cls, thorough: bool, seed: int, multi_query: bool) -> int:
    """The layer class against Hugging Face ``LlamaAttention`` with the same random weights: layout,
    a whole-sequence pass, then a prefill and decode steps through a ``KVCache``. Returns cases run."""
    __tracebackhide__ = True
    from attention_course.hf_compat import llama_attention_layer_output, random_llama_attention_layer

    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for index, (d_model, n_heads, n_kv, bias) in enumerate(_module_cases(thorough, [1] if multi_query else None)):
        head_dim = d_model // n_heads
        hf_layer = random_llama_attention_layer(d_model, n_heads, n_kv, bias, generator, scale=d_model**-0.5)
        name = f"{cls.__name__}({d_model}, {n_heads}{'' if multi_query else f', {n_kv}'}, bias={bias})"
        module = _build(cls, d_model, n_heads, n_kv, bias, multi_query)
        _expect_llama_layout(module, hf_layer, name, n_heads, n_kv, head_dim)
        state = hf_layer.state_dict()
        x64 = torch.randn(2, 7, d_model, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            expected64 = llama_attention_layer_output(hf_layer, x64)
        runs = [(device, dtype) for device in devices(thorough) for dtype in dtypes(thorough)]
        runs += _visible_extras(thorough) if index == 0 else []  # half precision, GPU: the first layer only
        for device, dtype in runs:
            module = _build(cls, d_model, n_heads, n_kv, bias, multi_query)
            call(module.load_state_dict, state, what=f"{name}.load_state_dict(Llama's weights)")
            module = module.to(device=device, dtype=dtype).eval()
            x, expected = x64.to(device=device, dtype=dtype), expected64.to(device=device, dtype=dtype)
            case = f"{name} on x{tuple(x.shape)}, Llama's weights [{dtype}, {device}]"
            with torch.no_grad():
                output = call(module, x, what=case)
            expect_close(output, expected, case,
                         lambda: {m: _module_variant(x64, state, n_heads, n_kv, **kw) for m, kw in MODULE_MISTAKES.items()})
            n_cases += 1 + _check_cached(module, x, expected, name, n_kv, head_dim, dtype, device)
        expect_on_device(lambda m, x, cache=KVCache(2, n_kv, head_dim, 7, device="meta"): [m(x), m(x[:, :3], cache=cache), m(x[:, 3:], cache=cache)],
                         _build(cls, d_model, n_heads, n_kv, bias, multi_query), x64.float(), what=f"{name} on x[2, 7, {d_model}], then a prefill and a step")
    return n_cases


def _top_left_chunk(module, x, start, end, n_kv, head_dim):
    """The layer's output for x[:, start:end] after x[:, :start] was cached, with a top-left mask (query i of the chunk
    sees keys 0..i), computed with the module's own projections."""
    batch = x.shape[0]

    def heads(t, n):
        return t.view(batch, -1, n, head_dim).transpose(1, 2)  # [B, n, T, d]

    q = heads(module.q_proj(x[:, start:end]), module.n_heads)
    k, v = heads(module.k_proj(x[:, :end]), n_kv), heads(module.v_proj(x[:, :end]), n_kv)
    y = _grouped_variant(q, k, v, True, mask="top_left").to(x.dtype)  # [B, H, T_new, d]
    return module.o_proj(y.transpose(1, 2).reshape(batch, end - start, -1))


def _check_cached(module, x, expected, name, n_kv, head_dim, dtype, device) -> int:
    """Prefill 3 tokens, a chunk of 2, then single tokens: the outputs equal the whole-sequence pass."""
    __tracebackhide__ = True
    batch, length, _ = x.shape
    cache = KVCache(batch, n_kv, head_dim, length, dtype=dtype, device=device)
    start = 0
    for n_new in (3, 2, *[1] * (length - 5)):
        end = start + n_new
        case = f"{name}(x[:, {start}:{end}], cache) after {start} cached [{dtype}, {device}]"
        with torch.no_grad():
            try:
                output = call(module, x[:, start:end], cache=cache, what=case)
            except AssertionError as error:
                if start and n_new > 1 and "must match the size of tensor" in str(error):
                    raise AssertionError(f"{error}. Hint: {CHUNK_MASK}") from error
                raise
        if isinstance(output, torch.Tensor) and output.shape == expected[:, start:end].shape and len(cache) != end:
            raise AssertionError(f"{case}: {NOT_UPDATED} (the cache holds {len(cache)} positions, expected {end})")

        def mistakes(start=start, end=end):
            alone = module.__class__.forward(module, x[:, start:end])  # the new tokens attending only to themselves
            found = {NEW_ONLY: alone} if start else {}
            if start and end - start > 1:  # a chunk of new tokens: where a top-left mask differs
                found[TOP_LEFT] = _top_left_chunk(module, x, start, end, n_kv, head_dim)
            return found

        expect_close(output, expected[:, start:end], case, mistakes)
        start = end
    return 1


# ----------------------------------------------------------------------------------------------
# Parameter counts (03) and the MHA -> GQA conversion (04)
# ----------------------------------------------------------------------------------------------


def _kv_params_mistakes(d_model: int, n_heads: int, n_kv_heads: int, bias: bool) -> dict[str, int]:
    """Mistake -> the wrong count it gives (two mistakes may give the same number)."""
    head_dim = d_model // n_heads
    kv_width = n_kv_heads * head_dim
    right = ref.kv_projection_params(d_model, n_heads, n_kv_heads, bias)
    found = {
        SEED_PARAMS: 2 * n_kv_heads * head_dim * head_dim + (2 * kv_width if bias else 0),
        SEED_GQA_PARAMS: 2 * d_model * d_model // n_kv_heads + (2 * kv_width if bias else 0),
        ONE_PROJECTION: right // 2,
    }
    if n_kv_heads != n_heads:
        found[KV_PARAMS_MHA] = ref.kv_projection_params(d_model, n_heads, n_heads, bias)
    if bias:
        found[BIAS_MISSED] = ref.kv_projection_params(d_model, n_heads, n_kv_heads, False)
        found[BIAS_WIDE] = 2 * (d_model * kv_width + d_model)
    return {message: value for message, value in found.items() if value != right}


def check_kv_projection_params(kv_projection_params, thorough: bool = False, seed: int = 0) -> None:
    """Against the parameters of real ``LlamaAttention`` layers built on the ``meta`` device."""
    __tracebackhide__ = True
    configs = [(1024, 8, 8, False), (1024, 8, 1, False), (768, 12, 4, True)]
    if thorough:
        generator = torch.Generator().manual_seed(seed)
        configs += [(4096, 32, 8, False), (8192, 64, 8, False), (4544, 71, 1, False), (2048, 16, 16, True), (512, 8, 2, True)]
        for _ in range(4):
            head_dim, n_kv = (int(torch.randint(1, 9, (1,), generator=generator)) * 8, int(torch.randint(1, 5, (1,), generator=generator)))
            per_group = int(torch.randint(1, 5, (1,), generator=generator))
            configs.append((head_dim * n_kv * per_group, n_kv * per_group, n_kv, bool(torch.randint(0, 2, (1,), generator=generator))))
    failures = []  # (case, answer, expected, the mistakes that explain the answer)
    for d_model, n_heads, n_kv, bias in configs:
        case = f"kv_projection_params({d_model}, {n_heads}, {n_kv}, bias={bias})"
        answer = call(kv_projection_params, d_model, n_heads, n_kv, bias=bias, what=case)
        expected = projection_params(meta_llama_attention(d_model, n_heads, n_kv, bias), "k_proj", "v_proj")
        if isinstance(answer, bool) or not isinstance(answer, int | torch.Tensor) or int(answer) != answer:
            raise AssertionError(f"{case} should return an int, got {answer!r}")
        if int(answer) != expected:
            explained = [m for m, value in _kv_params_mistakes(d_model, n_heads, n_kv, bias).items() if value == int(answer)]
            failures.append((case, int(answer), expected, explained))
    if failures:
        # One formula answers every configuration: name the mistake that explains most wrong answers,
        # shown on the first configuration it explains.
        named = [m for *_, explained in failures for m in explained]
        if named:
            mistake = max(dict.fromkeys(named), key=named.count)
            case, answer, expected, _ = next(f for f in failures if mistake in f[3])
        else:
            mistake, (case, answer, expected, _) = "", failures[0]
        raise AssertionError(f"{case} = {answer:,}, but a real LlamaAttention with these shapes has {expected:,}. {mistake}".rstrip())
    passed("kv_projection_params", len(configs))


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


def check_mha_to_gqa(mha_to_gqa, thorough: bool = False, seed: int = 0) -> None:
    """The converted layer's parameters against the reference pooling (the layer's forward is the
    student's class, checked by its own test)."""
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(seed)
    cases = [(32, 4, 2, True), (48, 6, 3, False), (32, 8, 1, True), (32, 4, 4, False)]
    if thorough:
        cases += [(64, 8, 2, True), (96, 12, 4, True), (64, 16, 8, False)]
    for d_model, n_heads, n_kv, bias in cases:
        head_dim = d_model // n_heads
        mha = ref.GroupedQueryAttention(d_model, n_heads, n_heads, bias=bias).double()
        with torch.no_grad():
            for parameter in mha.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        before = {key: t.clone() for key, t in mha.state_dict().items()}
        case = f"mha_to_gqa(MHA layer ({d_model}, {n_heads} heads, bias={bias}), n_kv_heads={n_kv})"
        gqa = call(mha_to_gqa, mha, n_kv, what=case)
        if any(not torch.equal(before[key], t) for key, t in mha.state_dict().items()):
            raise AssertionError(f"{case}: the MHA layer passed in was changed; build a new layer and leave the original as it is")
        if getattr(gqa, "n_kv_heads", None) != n_kv or not hasattr(gqa, "state_dict"):
            raise AssertionError(f"{case}: should return a GroupedQueryAttention with n_kv_heads={n_kv}, got {gqa!r}")
        expected = ref.mha_to_gqa(mha, n_kv).state_dict()
        theirs = gqa.state_dict()
        if set(theirs) != set(expected):
            raise AssertionError(f"{case}: the returned layer has parameters {sorted(theirs)}, expected {sorted(expected)}")
        for key in ("q_proj.weight", "o_proj.weight", "k_proj.weight", "v_proj.weight", *sorted(k for k in expected if "bias" in k)):
            what = f"{case}: {key}"
            pooled = key.startswith(("k_proj", "v_proj"))

            def mistakes(key=key, pooled=pooled):
                original = before[key]
                if pooled:
                    return {message: _pooled(original, n_kv, head_dim, how) for message, how in POOLING_MISTAKES.items()}
                return {QUERIES_POOLED: _pooled(original, n_kv, head_dim, "mean")} if key.startswith("q_proj") else {}

            expect_close(theirs[key].double() if isinstance(theirs[key], torch.Tensor) else theirs[key], expected[key], what, mistakes)
    passed("mha_to_gqa", len(cases))


def check_grouped_query_attention(GroupedQueryAttention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    n_cases = check_attention_layer(GroupedQueryAttention, thorough, seed, multi_query=False)
    expect_value_error(GroupedQueryAttention, 24, 6, 4, what="GroupedQueryAttention(24, 6, 4)",
                       problem="6 query heads that 4 key/value heads cannot share equally")
    passed("GroupedQueryAttention", n_cases + 1)


__all__ = [
    "check_repeat_kv",
    "check_gqa_attention",
    "check_grouped_query_attention",
    "check_mha_to_gqa",
]
