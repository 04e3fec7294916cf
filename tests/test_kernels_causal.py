"""The reference kernels of 01_causal_attention (attention_course/kernels/causal.py), read as a spec.

Oracles: written-out small examples, ``F.scaled_dot_product_attention`` (``is_causal=True`` only
where Tq == Tk: it aligns top-left), ``causal_lower_right`` and an explicit bottom-right mask,
a float64 computation written independently below, and Hugging Face ``GPT2Attention`` with
every parameter randomized. The oracle set-up is tested too.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right
from torch.testing import assert_close
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

from attention_course.tolerances import LOW_PRECISION, tolerance
from attention_course.hf_compat import gpt2_attention_layer_output, use_eager_attention
from attention_course.kernels import causal as ref

T, F_ = True, False

# Tolerances of a kernel run in `dtype` against a float64 reference computed from the same
# (already rounded) inputs: a few units of the dtype's epsilon (fp16 9.8e-4, bf16 7.8e-3), for
# O(1) values. Over 1500 random shapes the reference kernels use under half of each budget.
ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# Functions are independent of hypothesis' generated devices: property tests take the `device`
# fixture, which is a plain value, so the function-scoped-fixture health check does not apply.
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------------------------
# Independent float64 oracle (no masked_fill, no torch.softmax)
# ----------------------------------------------------------------------------------------------


def bottom_right(n_queries: int, n_keys: int) -> torch.Tensor:
    """The causal convention written out element by element: query i sees key j iff j <= i + Tk - Tq."""
    offset = n_keys - n_queries
    return torch.tensor([[j <= i + offset for j in range(n_keys)] for i in range(n_queries)], dtype=torch.bool)


def explicit_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    q, k = q.double().cpu(), k.double().cpu()
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])
    allowed = bottom_right(q.shape[-2], k.shape[-2]) if causal else torch.ones(scores.shape[-2:], dtype=torch.bool)
    row_max = torch.where(allowed, scores, torch.full_like(scores, -1e300)).amax(dim=-1, keepdim=True)
    e = torch.where(allowed, torch.exp(scores - row_max), torch.zeros_like(scores))
    return e / e.sum(dim=-1, keepdim=True)


def explicit_attention(q, k, v, causal: bool = True) -> torch.Tensor:
    return torch.einsum("...qk,...kv->...qv", explicit_weights(q, k, causal), v.double().cpu())


def randn(*shape, seed: int, dtype=torch.float64, device="cpu", scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(device=device, dtype=dtype)


def qkv(lead, n_queries, n_keys, d, dv=None, seed=0, dtype=torch.float64, device="cpu"):
    dv = d if dv is None else dv
    q = randn(*lead, n_queries, d, seed=seed, dtype=dtype, device=device)
    k = randn(*lead, n_keys, d, seed=seed + 1, dtype=dtype, device=device)
    v = randn(*lead, n_keys, dv, seed=seed + 2, dtype=dtype, device=device)
    return q, k, v


# ----------------------------------------------------------------------------------------------
# causal_mask
# ----------------------------------------------------------------------------------------------


def test_causal_mask_square_3x3():
    expected = torch.tensor([[T, F_, F_], [T, T, F_], [T, T, T]])
    mask = ref.causal_mask(3, 3)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_causal_mask_bottom_right_2x4():
    # Two queries are the last two of four positions: query 0 is position 2, query 1 is position 3.
    expected = torch.tensor([[T, T, T, F_], [T, T, T, T]])
    assert torch.equal(ref.causal_mask(2, 4), expected)


def test_causal_mask_3x5():
    expected = torch.tensor([[T, T, T, F_, F_], [T, T, T, T, F_], [T, T, T, T, T]])
    assert torch.equal(ref.causal_mask(3, 5), expected)


@pytest.mark.parametrize("n_keys", [1, 2, 7])
def test_causal_mask_single_query_sees_every_key(n_keys):
    # One new token (a KV-cache decode step) attends to the whole cache and itself.
    assert torch.equal(ref.causal_mask(1, n_keys), torch.ones(1, n_keys, dtype=torch.bool))


@pytest.mark.parametrize("n_queries, n_keys", [(1, 1), (4, 4), (3, 6), (5, 12), (16, 16), (2, 9)])
def test_causal_mask_is_shifted_lower_triangle(n_queries, n_keys):
    mask = ref.causal_mask(n_queries, n_keys)
    assert mask.shape == (n_queries, n_keys)
    assert torch.equal(mask, bottom_right(n_queries, n_keys))
    assert torch.equal(mask, torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=n_keys - n_queries))
    # The last query is the newest position: it sees everything.
    assert bool(mask[-1].all())


@pytest.mark.parametrize("n_queries, n_keys", [(2, 1), (5, 3), (9, 8)])
def test_causal_mask_more_queries_than_keys_is_a_value_error(n_queries, n_keys):
    with pytest.raises(ValueError, match="more queries than keys"):
        ref.causal_mask(n_queries, n_keys)


def test_causal_mask_device_honoured(device):
    mask = ref.causal_mask(3, 4, device=device)
    assert mask.device.type == device.type
    assert torch.equal(mask.cpu(), bottom_right(3, 4))


def test_causal_mask_default_device_is_cpu():
    assert ref.causal_mask(2, 2).device.type == "cpu"


# ----------------------------------------------------------------------------------------------
# The oracles themselves: SDPA is_causal is top-left, causal_lower_right is bottom-right
# ----------------------------------------------------------------------------------------------


def test_oracle_sdpa_is_causal_is_top_left_when_fewer_queries():
    """Why is_causal=True is no oracle for Tq < Tk: it lets query i see only keys 0..i."""
    q, k, v = qkv((2,), 3, 7, 8, seed=1)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    explicit_top_left = torch.softmax(
        (q @ k.mT / math.sqrt(8)).masked_fill(~torch.ones(3, 7, dtype=torch.bool).tril(), -math.inf), dim=-1
    ) @ v
    assert_close(top_left, explicit_top_left, **tolerance(torch.float64))
    assert not torch.allclose(top_left, ref.attention(q, k, v), atol=1e-3)


def test_oracle_causal_lower_right_is_bottom_right():
    assert torch.equal(causal_lower_right(2, 4)._materialize(), bottom_right(2, 4))
    q, k, v = qkv((2, 3), 4, 9, 8, seed=2)
    assert_close(
        F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(4, 9)),
        explicit_attention(q, k, v),
        **tolerance(torch.float64),
    )


# ----------------------------------------------------------------------------------------------
# attention / attention_weights / fused_attention on fixed seeded examples
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lead, length, d", [((1, 1), 1, 4), ((2, 3), 5, 8), ((1, 4), 11, 16)])
def test_attention_equals_sdpa_is_causal_when_square(device, dtype, lead, length, d):
    q, k, v = qkv(lead, length, length, d, seed=3, dtype=dtype, device=device)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(ref.attention(q, k, v), expected, **tolerance(dtype))
    assert_close(ref.fused_attention(q, k, v), expected, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lead, n_queries, n_keys, d", [((2,), 1, 6, 8), ((2, 3), 3, 7, 8), ((1, 2), 5, 12, 4)])
def test_attention_equals_sdpa_with_bottom_right_mask(device, dtype, lead, n_queries, n_keys, d):
    q, k, v = qkv(lead, n_queries, n_keys, d, dv=d + 3, seed=4, dtype=dtype, device=device)
    explicit_mask = bottom_right(n_queries, n_keys).to(device)
    with_mask = F.scaled_dot_product_attention(q, k, v, attn_mask=explicit_mask)
    with_bias = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(n_queries, n_keys))
    assert_close(with_mask, with_bias, **tolerance(dtype))
    output = ref.attention(q, k, v)
    assert output.shape == (*lead, n_queries, d + 3)
    assert_close(output, with_mask, **tolerance(dtype))
    assert_close(ref.fused_attention(q, k, v), with_mask, **tolerance(dtype))


def test_attention_weights_written_out_example():
    """One query over two keys, by hand: scores (1*1, 1*-1)/sqrt(1) -> softmax(1, -1)."""
    q = torch.tensor([[1.0]], dtype=torch.float64)
    k = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    e1, e2 = math.exp(1.0), math.exp(-1.0)
    expected = torch.tensor([[e1 / (e1 + e2), e2 / (e1 + e2)]], dtype=torch.float64)
    assert_close(ref.attention_weights(q, k), expected, atol=1e-15, rtol=0)
    # With two queries over two keys, query 0 sees only key 0.
    q2 = torch.tensor([[3.0], [1.0]], dtype=torch.float64)
    assert_close(ref.attention_weights(q2, k), torch.cat([torch.tensor([[1.0, 0.0]], dtype=torch.float64), expected]))


def test_attention_weights_scale_uses_head_size():
    """Identical keys except one: the scale 1/sqrt(d) sets how peaked a row is."""
    d = 16
    q = torch.ones(1, d, dtype=torch.float64)
    k = torch.stack([torch.ones(d), torch.zeros(d)]).double()  # scores d and 0 before scaling
    weights = ref.attention_weights(q, k, causal=False)
    s = d / math.sqrt(d)
    assert_close(weights, torch.tensor([[1 / (1 + math.exp(-s)), 1 / (1 + math.exp(s))]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("n_queries, n_keys", [(6, 6), (3, 8), (1, 5)])
def test_masked_weights_are_exactly_zero_and_rows_sum_to_one(device, dtype, n_queries, n_keys):
    q, k, _ = qkv((2, 3), n_queries, n_keys, 8, seed=5, dtype=dtype, device=device)
    weights = ref.attention_weights(q, k)
    assert weights.shape == (2, 3, n_queries, n_keys)
    blocked = ~bottom_right(n_queries, n_keys).to(device)
    assert bool((weights[..., blocked] == 0).all()), "masked entries must be exactly 0"
    assert bool((weights[..., ~blocked] > 0).all()), "every allowed key keeps some weight"
    sums = weights.double().sum(dim=-1)
    assert_close(sums, torch.ones_like(sums), **tolerance(dtype))


@pytest.mark.parametrize("n_queries, n_keys", [(5, 5), (2, 7)])
def test_non_causal_is_plain_softmax(device, n_queries, n_keys):
    q, k, v = qkv((2, 2), n_queries, n_keys, 8, seed=6, device=device)
    plain = torch.softmax(q @ k.mT / math.sqrt(8), dim=-1)
    assert_close(ref.attention_weights(q, k, causal=False), plain, **tolerance(torch.float64))
    assert_close(ref.attention(q, k, v, causal=False), plain @ v, **tolerance(torch.float64))
    assert_close(ref.attention(q, k, v, causal=False), F.scaled_dot_product_attention(q, k, v), **tolerance(torch.float64))
    assert_close(ref.fused_attention(q, k, v, causal=False), plain @ v, **tolerance(torch.float64))
    # and it differs from the causal result: the flag is not ignored
    assert not torch.allclose(ref.attention(q, k, v, causal=True), plain @ v, atol=1e-6)


def test_causal_mask_keeps_the_future_out():
    """Changing the last keys/values leaves every query that may not see them unchanged."""
    q, k, v = qkv((2,), 4, 6, 8, seed=7)
    k2, v2 = k.clone(), v.clone()
    k2[..., -1, :] += 5.0
    v2[..., -1, :] -= 3.0
    before, after = ref.attention(q, k, v), ref.attention(q, k2, v2)
    # Only the last query (position 5) sees key 5.
    assert torch.equal(before[..., :-1, :], after[..., :-1, :])
    assert not torch.allclose(before[..., -1, :], after[..., -1, :])


@pytest.mark.parametrize("fn", [ref.attention_weights, ref.attention, ref.fused_attention], ids=lambda f: f.__name__)
def test_more_queries_than_keys_is_a_value_error(fn):
    q, k, v = qkv((2,), 5, 3, 4)
    args = (q, k) if fn is ref.attention_weights else (q, k, v)
    with pytest.raises(ValueError, match="more queries than keys"):
        fn(*args)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_fused_attention_equals_attention(device, dtype, causal):
    for seed, (lead, n_queries, n_keys, d) in enumerate([((), 4, 4, 8), ((3,), 2, 9, 16), ((2, 2, 2), 7, 7, 4)]):
        q, k, v = qkv(lead, n_queries, n_keys, d, seed=10 * seed, dtype=dtype, device=device)
        fused = ref.fused_attention(q, k, v, causal=causal)
        assert fused.dtype == dtype and fused.device.type == device.type
        assert_close(fused, ref.attention(q, k, v, causal=causal), **tolerance(dtype))


# ----------------------------------------------------------------------------------------------
# Property-based: any leading batch shape, Tq <= Tk, any head size
# ----------------------------------------------------------------------------------------------


@st.composite
def attention_shapes(draw, max_lead_dims=3):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=max_lead_dims)))
    n_keys = draw(st.integers(1, 12))
    n_queries = draw(st.integers(1, n_keys))
    d = draw(st.integers(1, 32))
    dv = draw(st.integers(1, 16))
    return lead, n_queries, n_keys, d, dv


seeds = st.integers(0, 2**31 - 1)


@fixture_ok
@given(shape=attention_shapes(), seed=seeds, causal=st.booleans())
def test_property_float64_equals_explicit_computation(device, shape, seed, causal):
    lead, n_queries, n_keys, d, dv = shape
    q, k, v = qkv(lead, n_queries, n_keys, d, dv, seed=seed, device=device)
    expected_weights = explicit_weights(q, k, causal)
    weights = ref.attention_weights(q, k, causal=causal)
    assert weights.shape == (*lead, n_queries, n_keys)
    assert_close(weights.cpu(), expected_weights, **tolerance(torch.float64))
    if causal:
        assert bool((weights.cpu()[..., ~bottom_right(n_queries, n_keys)] == 0).all())
    expected = explicit_attention(q, k, v, causal)
    for fn in (ref.attention, ref.fused_attention):
        output = fn(q, k, v, causal=causal)
        assert output.shape == (*lead, n_queries, dv)
        assert output.dtype == torch.float64 and output.device == q.device
        assert_close(output.cpu(), expected, **tolerance(torch.float64))


@fixture_ok
@given(shape=attention_shapes(), seed=seeds, causal=st.booleans(), dtype=st.sampled_from([torch.float32, *LOW_PRECISION]))
def test_property_lower_precision_against_float64_reference(device, shape, seed, causal, dtype):
    lead, n_queries, n_keys, d, dv = shape
    q, k, v = qkv(lead, n_queries, n_keys, d, dv, seed=seed, dtype=dtype, device=device)
    # The reference starts from the same rounded inputs, so only the kernel's arithmetic is judged.
    expected = explicit_attention(q, k, v, causal)
    expected_weights = explicit_weights(q, k, causal)
    weights = ref.attention_weights(q, k, causal=causal)
    assert weights.dtype == dtype and weights.device == q.device
    assert_close(weights.cpu().double(), expected_weights, **tolerance(dtype))
    if causal:
        assert bool((weights.cpu()[..., ~bottom_right(n_queries, n_keys)] == 0).all())
    for fn in (ref.attention, ref.fused_attention):
        output = fn(q, k, v, causal=causal)
        assert output.dtype == dtype and output.device == q.device
        assert output.shape == (*lead, n_queries, dv)
        assert_close(output.cpu().double(), expected, **tolerance(dtype))


@given(shape=attention_shapes(), seed=seeds)
def test_property_appending_keys_leaves_earlier_queries_unchanged(shape, seed):
    """KV-cache view: the rows of the old queries do not change when a token is appended."""
    lead, n_queries, n_keys, d, dv = shape
    q, k, v = qkv(lead, n_keys + 1, n_keys + 1, d, dv, seed=seed)
    full = ref.attention(q, k, v)
    prefix = ref.attention(q[..., :n_keys, :], k[..., :n_keys, :], v[..., :n_keys, :])
    assert_close(full[..., :n_keys, :], prefix, **tolerance(torch.float64))
    # the last Tq queries alone, over all keys, equal the last Tq rows of the full computation
    tail = ref.attention(q[..., -n_queries:, :], k, v)
    assert_close(tail, full[..., -n_queries:, :], **tolerance(torch.float64))


# ----------------------------------------------------------------------------------------------
# split_heads / merge_heads
# ----------------------------------------------------------------------------------------------


@given(
    batch=st.integers(1, 3), length=st.integers(1, 6), n_heads=st.integers(1, 6), head_dim=st.integers(1, 8), seed=seeds
)
def test_split_merge_round_trip(batch, length, n_heads, head_dim, seed):
    x = randn(batch, length, n_heads * head_dim, seed=seed)
    heads = ref.split_heads(x, n_heads)
    assert heads.shape == (batch, n_heads, length, head_dim)
    assert torch.equal(ref.merge_heads(heads), x)
    y = randn(batch, n_heads, length, head_dim, seed=seed + 1)
    assert torch.equal(ref.split_heads(ref.merge_heads(y), n_heads), y)


@pytest.mark.parametrize("n_heads", [1, 2, 3, 4, 12])
def test_split_heads_head_owns_contiguous_features(n_heads):
    batch, length, width = 2, 3, 12
    head_dim = width // n_heads
    x = torch.arange(width, dtype=torch.float32).expand(batch, length, width) + 100 * torch.arange(length)[:, None]
    heads = ref.split_heads(x, n_heads)
    for h in range(n_heads):
        for t in range(length):
            expected = torch.arange(h * head_dim, (h + 1) * head_dim, dtype=torch.float32) + 100 * t
            assert torch.equal(heads[:, h, t], expected.expand(batch, head_dim))


def test_split_heads_written_out():
    x = torch.arange(8.0).reshape(1, 2, 4)  # two positions, features [0 1 2 3], [4 5 6 7]
    expected = torch.tensor([[[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]]]])  # [B=1, H=2, T=2, d=2]
    assert torch.equal(ref.split_heads(x, 2), expected)
    assert torch.equal(ref.merge_heads(expected), x)


@pytest.mark.parametrize("width, n_heads", [(10, 3), (12, 5), (7, 2)])
def test_split_heads_indivisible_width_is_a_value_error(width, n_heads):
    with pytest.raises(ValueError, match="divisible"):
        ref.split_heads(torch.zeros(1, 2, width), n_heads)


def test_split_merge_keep_device_and_dtype(device):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = randn(2, 3, 8, seed=0, dtype=dtype, device=device)
        heads = ref.split_heads(x, 4)
        merged = ref.merge_heads(heads)
        assert heads.dtype == merged.dtype == dtype
        assert heads.device == merged.device == x.device
        assert torch.equal(merged, x)


# ----------------------------------------------------------------------------------------------
# gpt2_attention vs Hugging Face GPT2Attention (every parameter randomized, float64)
# ----------------------------------------------------------------------------------------------

WIDTH, HEADS = 48, 6


def small_gpt2_config(attn_implementation: str = "eager", **overrides) -> GPT2Config:
    config = GPT2Config(
        vocab_size=97,
        n_positions=32,
        n_embd=WIDTH,
        n_head=HEADS,
        n_layer=2,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        **overrides,
    )
    if attn_implementation == "eager":
        use_eager_attention(config)
    else:
        config._attn_implementation = attn_implementation
    return config


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Every parameter random: fresh HF modules start with zero biases (a forgotten bias would go unseen)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))


@pytest.fixture
def hf_layer() -> GPT2Attention:
    layer = GPT2Attention(small_gpt2_config(), layer_idx=0).double().eval()
    randomize_(layer, seed=11)
    return layer


def layer_weights(layer):
    return [layer.c_attn.weight, layer.c_attn.bias, layer.c_proj.weight, layer.c_proj.bias]


def test_hf_layer_has_every_parameter_randomized(hf_layer):
    names = dict(hf_layer.named_parameters())
    assert set(names) == {"c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"}
    for name, parameter in names.items():
        assert parameter.dtype == torch.float64
        assert bool((parameter != 0).all()), f"{name} still has zeros: randomize it"
    # Conv1D stores weights [in, out]
    assert names["c_attn.weight"].shape == (WIDTH, 3 * WIDTH)
    assert names["c_proj.weight"].shape == (WIDTH, WIDTH)


@pytest.mark.parametrize("batch, length", [(1, 1), (2, 10), (3, 17)])
def test_gpt2_attention_equals_hugging_face(hf_layer, batch, length):
    x = randn(batch, length, WIDTH, seed=12 + length)
    with torch.no_grad():
        expected = gpt2_attention_layer_output(hf_layer, x)
        output = ref.gpt2_attention(x, *layer_weights(hf_layer), HEADS)
    assert output.shape == (batch, length, WIDTH)
    assert_close(output, expected, **tolerance(torch.float64))


@pytest.mark.parametrize("which", range(4), ids=["c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"])
def test_hf_comparison_sees_every_parameter(hf_layer, which):
    """Dropping any one parameter (e.g. a forgotten bias) breaks the match: the oracle can see it."""
    x = randn(2, 6, WIDTH, seed=13)
    weights = layer_weights(hf_layer)
    weights[which] = torch.zeros_like(weights[which])
    with torch.no_grad():
        expected = gpt2_attention_layer_output(hf_layer, x)
        output = ref.gpt2_attention(x, *weights, HEADS)
    assert (output - expected).abs().max() > 1e-3


def test_hf_oracle_is_causal(hf_layer):
    """Changing future tokens leaves the oracle's earlier outputs unchanged (and changes later ones)."""
    x = randn(2, 9, WIDTH, seed=14)
    x2 = x.clone()
    x2[:, 5:] = randn(2, 4, WIDTH, seed=15)
    with torch.no_grad():
        before, after = gpt2_attention_layer_output(hf_layer, x), gpt2_attention_layer_output(hf_layer, x2)
    assert_close(before[:, :5], after[:, :5], atol=0, rtol=0)
    assert (before[:, 5:] - after[:, 5:]).abs().amin(dim=-1).min() > 0


@pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="transformers 4.x GPT2Attention masking differs; the no-mask note is about 5.x",
)
def test_bare_hf_layer_without_a_mask_is_not_causal(hf_layer):
    """Why the oracle passes an explicit mask: in 5.x a bare eager GPT2Attention masks nothing."""
    x = randn(1, 6, WIDTH, seed=16)
    with torch.no_grad():
        unmasked = hf_layer(x)[0]
        masked = gpt2_attention_layer_output(hf_layer, x)
        full = ref.merge_heads(
            ref.attention(
                *(ref.split_heads(t, HEADS) for t in (x @ hf_layer.c_attn.weight + hf_layer.c_attn.bias).split(WIDTH, -1)),
                causal=False,
            )
        ) @ hf_layer.c_proj.weight + hf_layer.c_proj.bias
    assert_close(unmasked, full, **tolerance(torch.float64))
    assert not torch.allclose(unmasked[:, :-1], masked[:, :-1], atol=1e-6)
    assert_close(unmasked[:, -1], masked[:, -1], **tolerance(torch.float64))  # the last query sees everything anyway


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_hf_oracle_matches_the_attention_layer_inside_gpt2(attn_implementation):
    """Validate the oracle set-up against the model's own masking: inside GPT2LMHeadModel, each
    attention layer's output (captured by a forward hook) equals the bare layer given the explicit
    mask, and equals the reference kernel."""
    model = GPT2LMHeadModel(small_gpt2_config(attn_implementation)).double().eval()
    randomize_(model, seed=17)
    captured = {}

    def hook(index):
        def capture(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured[index] = (hidden.detach().clone(), output[0].detach().clone())

        return capture

    handles = [
        block.attn.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(model.transformer.h)
    ]
    try:
        input_ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(18))
        with torch.no_grad():
            model(input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(captured) == list(range(len(model.transformer.h)))
    for index, block in enumerate(model.transformer.h):
        layer_input, layer_output = captured[index]
        assert layer_input.shape == layer_output.shape == (2, 11, WIDTH)
        with torch.no_grad():
            oracle = gpt2_attention_layer_output(block.attn, layer_input)
            output = ref.gpt2_attention(layer_input, *layer_weights(block.attn), HEADS)
        assert_close(oracle, layer_output, **tolerance(torch.float64))
        assert_close(output, layer_output, **tolerance(torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
def test_gpt2_attention_keeps_dtype_and_device(device, dtype):
    x = randn(2, 7, WIDTH, seed=19)
    weights = [randn(*shape, seed=20 + i, scale=WIDTH**-0.5) for i, shape in enumerate([(WIDTH, 3 * WIDTH), (3 * WIDTH,), (WIDTH, WIDTH), (WIDTH,)])]
    cast = [t.to(device=device, dtype=dtype) for t in (x, *weights)]
    output = ref.gpt2_attention(cast[0], *cast[1:], HEADS)
    assert output.dtype == dtype and output.device == cast[0].device
    # reference from the same rounded inputs
    expected = ref.gpt2_attention(*(t.double().cpu() for t in cast), HEADS)
    assert_close(output.cpu().double(), expected, **tolerance(dtype))
