"""The reference kernels of 06_long_context (kernels/long_context.py), read as a spec.

Oracles: Hugging Face's ``LlamaRotaryEmbedding`` frequencies and ``rotate_half``; ``LlamaAttention``
with its real rotary embedding, and ``MistralAttention`` with a sliding window and Hugging Face's own
mask function, each with every parameter randomized, over whole sequences and through a
``DynamicCache`` in chunks; the full-cache pass for the rolling and sink caches (what they return
is the last keys of a full cache); rotation as a product of 2 x 2 rotation matrices, float64.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from attention_course.hf_compat import random_rotary_attention_layer, rotary_attention_layer_output
from attention_course.kernels.causal import causal_mask
from attention_course.kernels.kv_cache import KVCache
from attention_course.kernels.long_context import (
    RollingKVCache,
    RotaryGQA,
    SinkKVCache,
    apply_rope,
    cache_bytes,
    rope_frequencies,
    sliding_window_mask,
)
from attention_course.tolerances import tolerance


def test_frequencies_are_hugging_faces_inv_freq():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for head_dim, theta in ((8, 10000.0), (64, 10000.0), (128, 500000.0)):
        config = LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim, rope_theta=theta)
        assert_close(rope_frequencies(head_dim, theta), LlamaRotaryEmbedding(config).inv_freq)
    assert rope_frequencies(128)[32].item() == pytest.approx(0.01)  # 10000 ** (-64 / 128)


def test_odd_head_dim_and_misshaped_positions_raise():
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="one position per row"):
        apply_rope(torch.zeros(2, 5, 8), torch.arange(4))


@settings(max_examples=50, deadline=None)
@given(length=st.integers(1, 9), half=st.integers(1, 8), start=st.integers(0, 50), theta=st.sampled_from([100.0, 1e4, 5e5]))
def test_rope_turns_each_pair_i_and_i_plus_half_by_position_times_frequency(length, half, start, theta):
    head_dim = 2 * half
    x = torch.randn(2, 3, length, head_dim, dtype=torch.float64)
    positions = torch.arange(start, start + length)
    angles = positions[:, None].double() * theta ** (-2 * torch.arange(half).double() / head_dim)  # [T, d/2]
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half], x[..., half:]
    expected = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)  # a 2 x 2 rotation per pair
    assert_close(apply_rope(x, positions, theta), expected, **tolerance(torch.float32))  # angles in float32, as HF


def test_rope_makes_scores_depend_on_relative_position_only():
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)
    scores = [(apply_rope(q, torch.tensor([m + 5])) * apply_rope(k, torch.tensor([m]))).sum() for m in (0, 7, 30)]
    for score in scores[1:]:
        assert_close(score, scores[0], **tolerance(torch.float32))
    assert_close(apply_rope(q, torch.tensor([0])), q)  # position 0: no turn


def test_window_mask_is_hugging_faces_bottom_right():
    from transformers import masking_utils

    for n_queries, n_keys, window in ((5, 5, 2), (3, 9, 4), (1, 6, 3), (4, 4, 10), (6, 8, 1)):
        offset = n_keys - n_queries
        allowed = masking_utils.sliding_window_causal_mask_function(window)(
            0, 0, torch.arange(offset, n_keys)[:, None], torch.arange(n_keys)[None, :])
        assert torch.equal(sliding_window_mask(n_queries, n_keys, window), allowed)
        assert (sliding_window_mask(n_queries, n_keys, window).sum(-1) <= window).all()
    assert torch.equal(sliding_window_mask(6, 6, 6), causal_mask(6, 6))
    for bad in ((3, 2, 2), (2, 3, 0)):
        with pytest.raises(ValueError):
            sliding_window_mask(*bad)


def _feed(cache, chunks, dtype=torch.float64):
    """Feed keys whose every entry is its position, one chunk at a time; yield the positions each update returned."""
    start = 0
    for n_new in chunks:
        positions = torch.arange(start, start + n_new, dtype=dtype)
        k = positions.view(1, 1, -1, 1).expand(2, 3, -1, 4).contiguous()  # [B, G, T_new, d], entry = position
        k_out, v_out = cache.update(k, -k)
        assert torch.equal(v_out, -k_out)
        yield k_out[0, 0, :, 0].long().tolist()
        start += n_new


@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("chunks", [(1,) * 12, (4, 1, 1, 7, 1, 2), (9, 1, 1), (2, 2, 2, 2, 2, 2)])
def test_rolling_cache_reads_the_window_in_order_and_writes_slot_p_mod_w(window, chunks):
    cache = RollingKVCache(2, 3, 4, window, dtype=torch.float64)
    start = 0
    for n_new, got in zip(chunks, _feed(cache, chunks)):
        end = start + n_new
        assert got == list(range(max(0, start - window + 1), end))
        held = cache.keys[0, 0, :, 0].long().tolist()
        for position in range(max(0, end - window), end):
            assert held[position % window] == position
        assert len(cache) == end and cache.keys.shape == (2, 3, window, 4)
        start = end


@pytest.mark.parametrize("n_sink,window", [(0, 3), (2, 3), (4, 1), (3, 6)])
@pytest.mark.parametrize("chunks", [(1,) * 14, (5, 1, 1, 8, 1), (2, 9, 1)])
def test_sink_cache_keeps_the_first_positions_and_a_window(n_sink, window, chunks):
    cache = SinkKVCache(2, 3, 4, n_sink, window, dtype=torch.float64)
    start = 0
    for n_new, got in zip(chunks, _feed(cache, chunks)):
        end = start + n_new
        sinks = list(range(min(start, n_sink)))
        assert got == sinks + list(range(max(n_sink, start - window + 1), start)) + list(range(start, end))
        assert cache.keys.shape == (2, 3, n_sink + window, 4) and len(cache) == end
        start = end
    if n_sink == 0:  # no sinks: the rolling cache
        assert list(_feed(SinkKVCache(2, 3, 4, 0, window, dtype=torch.float64), chunks)) == \
            list(_feed(RollingKVCache(2, 3, 4, window, dtype=torch.float64), chunks))


def test_caches_refuse_misshaped_updates():
    for cache in (RollingKVCache(1, 2, 4, 3), SinkKVCache(1, 2, 4, 1, 3)):
        with pytest.raises(ValueError, match="same shape"):
            cache.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 2, 4))
        with pytest.raises(ValueError, match="expected"):
            cache.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))


def test_rolling_cache_memory_is_flat_in_context():
    sizes = []
    for n_tokens in (10, 100, 1000):
        cache = RollingKVCache(1, 2, 8, 16)
        for _ in range(n_tokens):
            cache.update(torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 1, 8))
        sizes.append(cache_bytes(cache))
    assert sizes == [2 * 2 * 16 * 8 * 4] * 3


LAYERS = [  # (D, H, G, bias, rope_theta, sliding_window)
    (32, 4, 2, False, 10000.0, None), (48, 6, 3, True, 500.0, None), (64, 8, 1, True, 1e6, None),
    (32, 4, 2, False, 10000.0, 3), (48, 6, 6, False, 100.0, 1), (64, 8, 4, False, 10000.0, 5),
]


@pytest.mark.parametrize("config", LAYERS, ids=str)
def test_layer_equals_hugging_face_with_and_without_a_cache(config):
    d_model, n_heads, n_kv, bias, theta, window = config
    hf, rotary = random_rotary_attention_layer(d_model, n_heads, n_kv, bias, theta, window, torch.Generator().manual_seed(1))
    ours = RotaryGQA(d_model, n_heads, n_kv, rope_theta=theta, sliding_window=window, bias=bias).double().eval()
    ours.load_state_dict(hf.state_dict())  # strict: Llama's layout
    x = torch.randn(2, 11, d_model, dtype=torch.float64)
    from transformers import DynamicCache

    with torch.no_grad():
        whole = rotary_attention_layer_output(hf, rotary, x)
        assert_close(ours(x), whole, **tolerance(torch.float32))
        hf_cache, our_cache, start = DynamicCache(), KVCache(2, n_kv, d_model // n_heads, 11, dtype=torch.float64), 0
        for n_new in (4, 1, 3, 1, 2):
            chunk = x[:, start:start + n_new]
            hf_chunk = rotary_attention_layer_output(hf, rotary, chunk, start, hf_cache)
            assert_close(hf_chunk, whole[:, start:start + n_new], **tolerance(torch.float32))
            assert_close(ours(chunk, cache=our_cache), hf_chunk, **tolerance(torch.float32))
            start += n_new


@pytest.mark.parametrize("window", [1, 3, 4])
def test_sliding_window_layer_through_a_rolling_cache_equals_mistral(window):
    hf, rotary = random_rotary_attention_layer(32, 4, 2, False, 10000.0, window, torch.Generator().manual_seed(2))
    ours = RotaryGQA(32, 4, 2, sliding_window=window).double().eval()
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(1, 13, 32, dtype=torch.float64)
    cache, start = RollingKVCache(1, 2, 8, window, dtype=torch.float64), 0
    with torch.no_grad():
        whole = rotary_attention_layer_output(hf, rotary, x)
        for n_new in (5, 1, 1, 4, 1, 1):
            assert_close(ours(x[:, start:start + n_new], cache=cache), whole[:, start:start + n_new], **tolerance(torch.float32))
            start += n_new
    assert cache.keys.shape[2] == window


def test_layer_in_half_precision_and_its_errors():
    layer = RotaryGQA(32, 4, 2).eval()
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        expected = layer.double()(x.double())
        for dtype in (torch.float16, torch.bfloat16):
            got = layer.to(dtype)(x.to(dtype))
            assert_close(got, expected.to(dtype), **tolerance(dtype, expected))
    for bad in ((24, 6, 4), (30, 6, 3), (32, 4, 2, 10000.0, 0)):
        with pytest.raises(ValueError):
            RotaryGQA(*bad)


def test_cache_bytes_of_mistral_like_sizes():
    assert cache_bytes(RollingKVCache(1, 8, 128, 4096, dtype=torch.bfloat16, device="meta")) == 2 * 8 * 128 * 4096 * 2
    assert math.isclose(cache_bytes(KVCache(1, 8, 128, 100, dtype=torch.bfloat16, device="meta")), 2 * 8 * 128 * 100 * 2)
