"""The reference kernels of 03_mqa and 04_gqa (kernels/mqa.py, kernels/gqa.py), read as a spec.

Oracles: ``F.scaled_dot_product_attention(enable_gqa=True)`` (with ``causal_lower_right`` where
Tq < Tk), multi-head attention over explicitly repeated keys and values, Hugging Face
``LlamaAttention`` with identity rotary embeddings and every parameter randomized, real modules
on the ``meta`` device for parameter counts, and the whole-sequence pass for cached decoding.
The variants agree with each other: G = H is MHA, G = 1 is MQA.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right
from torch.testing import assert_close

from attention_course.tolerances import tolerance
from attention_course.hf_compat import llama_attention_layer_output, random_llama_attention_layer
from attention_course.kernels.causal import attention, gpt2_attention
from attention_course.kernels.gqa import (
    GroupedQueryAttention,
    from_gpt2_attention,
    gqa_attention,
    kv_projection_params,
    mha_to_gqa,
    repeat_kv,
)
from attention_course.kernels.kv_cache import KVCache
from attention_course.kernels.mqa import MultiQueryAttention, mqa_attention
from attention_course.memory import NewStorages
from attention_course.model_configs import meta_llama_attention, projection_params



@st.composite
def grouped_shapes(draw):
    """(B, H, G, Tq, Tk, d) with G dividing H and Tq <= Tk."""
    n_kv = draw(st.integers(1, 4))
    n_heads = n_kv * draw(st.integers(1, 4))
    n_keys = draw(st.integers(1, 12))
    return draw(st.integers(1, 3)), n_heads, n_kv, draw(st.integers(1, n_keys)), n_keys, draw(st.sampled_from([1, 4, 8, 16]))


def qkv(batch, n_heads, n_kv, n_queries, n_keys, head_dim, seed=0, dtype=torch.float64, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_heads, n_queries, head_dim, generator=generator, dtype=torch.float64)
    k = torch.randn(batch, n_kv, n_keys, head_dim, generator=generator, dtype=torch.float64)
    v = torch.randn(batch, n_kv, n_keys, head_dim, generator=generator, dtype=torch.float64)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def test_repeat_kv_pairs_query_head_h_with_group_h_div_n_rep():
    x = torch.arange(2 * 3).float().view(1, 2, 3, 1)  # 2 groups
    out = repeat_kv(x, 3)
    assert out.shape == (1, 6, 3, 1)
    for h in range(6):
        assert torch.equal(out[0, h], x[0, h // 3])


@given(shape=grouped_shapes(), seed=st.integers(0, 2**16), causal=st.booleans())
def test_gqa_equals_pytorch_grouped_kernel(shape, seed, causal):
    q, k, v = qkv(*shape, seed=seed)
    n_queries, n_keys = shape[3], shape[4]
    mask = causal_lower_right(n_queries, n_keys) if causal else None
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert_close(gqa_attention(q, k, v, causal), expected)


@given(shape=grouped_shapes(), seed=st.integers(0, 2**16), causal=st.booleans())
def test_gqa_equals_mha_over_repeated_keys_and_values(shape, seed, causal):
    q, k, v = qkv(*shape, seed=seed)
    n_rep = shape[1] // shape[2]
    assert_close(gqa_attention(q, k, v, causal), attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), causal))


def test_g_equals_h_is_mha_and_g_equals_1_is_mqa():
    q, k, v = qkv(2, 6, 6, 5, 5, 8)
    assert_close(gqa_attention(q, k, v), attention(q, k, v))
    q, k, v = qkv(2, 6, 1, 5, 5, 8)
    assert torch.equal(mqa_attention(q, k, v), gqa_attention(q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gqa_keeps_dtype_and_device(dtype, device):
    q, k, v = qkv(2, 8, 2, 3, 7, 16, dtype=dtype, device=device)
    out = gqa_attention(q, k, v)
    assert out.dtype == dtype and out.device == q.device
    expected = gqa_attention(q.double(), k.double(), v.double()).to(dtype)
    assert_close(out, expected, **tolerance(dtype))


def test_h_not_divisible_by_g_raises():
    q, k, v = qkv(1, 6, 4, 3, 3, 4)
    with pytest.raises(ValueError, match="not divisible"):
        gqa_attention(q, k, v)
    with pytest.raises(ValueError, match="not divisible"):
        GroupedQueryAttention(24, 6, 4)
    with pytest.raises(ValueError, match="one key/value head"):
        mqa_attention(*qkv(1, 4, 2, 3, 3, 4))


def test_mqa_and_gqa_make_no_copy_of_k_while_broadcast_matmul_does():
    q, k, v = qkv(2, 8, 1, 4, 512, 64, dtype=torch.float32)
    copy = k.numel() * k.element_size() * 8
    with NewStorages() as ours:
        mqa_attention(q, k, v)
    with NewStorages() as broadcast:
        attention(q, k, v)  # q @ k^T with k's head axis broadcast: torch.matmul materializes it
    assert ours.largest[0] < copy / 8
    assert broadcast.largest[0] >= copy


@pytest.mark.parametrize("n_heads,n_kv,bias", [(8, 8, False), (8, 2, True), (8, 1, False), (6, 3, True)])
def test_layer_equals_hugging_face_llama_attention(n_heads, n_kv, bias):
    generator = torch.Generator().manual_seed(n_heads * 10 + n_kv)
    hf = random_llama_attention_layer(48, n_heads, n_kv, bias, generator)
    ours = GroupedQueryAttention(48, n_heads, n_kv, bias).double()
    ours.load_state_dict(hf.state_dict())  # same names and shapes
    x = torch.randn(2, 9, 48, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        # LlamaAttention's eager softmax runs in float32 whatever the input dtype.
        assert_close(ours(x), llama_attention_layer_output(hf, x), atol=1e-6, rtol=1e-6)


def test_multi_query_layer_is_the_one_group_layer():
    layer = MultiQueryAttention(32, 4, bias=True)
    assert (layer.n_heads, layer.n_kv_heads, layer.head_dim) == (4, 1, 8)
    assert layer.k_proj.weight.shape == (8, 32) and layer.q_proj.weight.shape == (32, 32)


@pytest.mark.parametrize("chunks", [[9], [4, 1, 1, 1, 1, 1], [1] * 9, [2, 5, 2]])
@pytest.mark.parametrize("n_kv", [1, 2, 6])
def test_decoding_through_the_cache_equals_the_whole_sequence(chunks, n_kv, device):
    torch.manual_seed(0)
    layer = GroupedQueryAttention(48, 6, n_kv, bias=True).double().to(device)
    x = torch.randn(2, 9, 48, dtype=torch.float64, device=device)
    cache = KVCache(2, n_kv, 8, 9, dtype=torch.float64, device=device)
    outputs, start = [], 0
    with torch.no_grad():
        for n in chunks:
            outputs.append(layer(x[:, start : start + n], cache))
            start += n
        assert_close(torch.cat(outputs, dim=1), layer(x))
    assert len(cache) == 9


@pytest.mark.parametrize("d_model,n_heads,n_kv,bias", [(1024, 8, 8, False), (1024, 8, 1, False), (8192, 64, 8, False),
                                                      (4544, 71, 1, False), (768, 12, 4, True), (2048, 16, 16, True)])
def test_kv_projection_params_equal_real_llama_attention_on_meta(d_model, n_heads, n_kv, bias):
    real = meta_llama_attention(d_model, n_heads, n_kv, bias)
    assert kv_projection_params(d_model, n_heads, n_kv, bias) == projection_params(real, "k_proj", "v_proj")
    ours = GroupedQueryAttention(d_model, n_heads, n_kv, bias).to("meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in real.parameters())


def test_seed_quiz_numbers_mha_and_mqa():
    """The study notebook's Q2 (H = 8, D = 1024): MHA 2,097,152 and MQA 262,144 K/V parameters."""
    assert kv_projection_params(1024, 8, 8) == 2_097_152
    assert kv_projection_params(1024, 8, 1) == 262_144


def test_mha_to_gqa_keeps_the_layer_at_g_equals_h_and_pools_consecutive_heads():
    torch.manual_seed(1)
    mha = GroupedQueryAttention(32, 4, 4, bias=True).double()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    before = {k: t.clone() for k, t in mha.state_dict().items()}
    with torch.no_grad():
        assert_close(mha_to_gqa(mha, 4)(x), mha(x))
    gqa = mha_to_gqa(mha, 2)
    assert all(torch.equal(before[k], t) for k, t in mha.state_dict().items())
    heads = mha.k_proj.weight.view(4, 8, 32)
    assert_close(gqa.k_proj.weight.view(2, 8, 32)[1], (heads[2] + heads[3]) / 2)
    assert_close(gqa.v_proj.bias.view(2, 8)[0], mha.v_proj.bias.view(4, 8)[:2].mean(0))
    assert torch.equal(gqa.q_proj.weight, mha.q_proj.weight) and torch.equal(gqa.o_proj.bias, mha.o_proj.bias)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_gqa_layer_with_identical_heads_in_each_group_loses_nothing_in_conversion(seed):
    """Pooling is exact when a group's key/value heads are already equal: the conversion's error
    comes only from how much the heads of a group differ."""
    generator = torch.Generator().manual_seed(seed)
    mha = GroupedQueryAttention(32, 4, 4).double()
    with torch.no_grad():
        for proj in (mha.k_proj, mha.v_proj):
            group_heads = torch.randn(2, 1, 8, 32, generator=generator, dtype=torch.float64)
            proj.weight.copy_(group_heads.expand(2, 2, 8, 32).reshape(32, 32))
    x = torch.randn(1, 5, 32, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        assert_close(mha_to_gqa(mha, 2)(x), mha(x))


def test_from_gpt2_attention_equals_gpt2_layer():
    generator = torch.Generator().manual_seed(3)
    weights = [0.2 * torch.randn(s, generator=generator, dtype=torch.float64) for s in [(32, 96), (96,), (32, 32), (32,)]]
    x = torch.randn(2, 7, 32, generator=generator, dtype=torch.float64)
    layer = from_gpt2_attention(*weights, n_heads=4)
    with torch.no_grad():
        assert_close(layer(x), gpt2_attention(x, *weights, 4))
