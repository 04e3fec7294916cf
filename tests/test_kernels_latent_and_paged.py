"""07's reference kernels against Hugging Face's DeepseekV3Attention (the same weights, every parameter drawn at
random, with and without its own cache), the absorbed form against the plain one, and the paged cache against a
contiguous one (tolerances: attention_course.tolerances)."""

import pytest
import torch

from attention_course.exercises.kernel.allocations import NewStorages
from attention_course.hf_compat import (deepseek_attention_output, deepseek_cache_holds_latent,
                                        random_deepseek_attention_layer)
from attention_course.kernels.gqa import gqa_attention
from attention_course.kernels.latent_and_paged import (LatentCache, MultiHeadLatentAttention, PagedKVCache, apply_rotary,
                                                       blocks_needed, mla_cache_bytes, paged_attention, rotary_cos_sin)
from attention_course.tolerances import tolerance

SIZES = [(32, 4, 16, 8, 6, 10, None), (48, 3, 24, 8, 8, 8, 12), (64, 8, 32, 16, 8, 16, 24)]  # D, H, r, dn, dr, dv, q_lora


def _pair(size, seed=0):
    *shape, q_rank = size
    hf = random_deepseek_attention_layer(*shape, q_rank, torch.Generator().manual_seed(seed))
    ours = MultiHeadLatentAttention(*shape, q_lora_rank=q_rank).double()
    ours.load_state_dict(hf.state_dict())  # strict: Hugging Face's names and layouts
    return hf, ours


@pytest.mark.parametrize("size", SIZES)
def test_mla_equals_deepseek_v3_attention_whole_cached_and_absorbed(size):
    hf, ours = _pair(size)
    x = torch.randn(2, 9, size[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = deepseek_attention_output(hf, x)
        # Hugging Face computes the rotary angles in float32: float32's tolerance, not float64's.
        for absorbed in (False, True):
            torch.testing.assert_close(ours(x, absorbed=absorbed), expected, **tolerance(torch.float32))
            cache, outputs = LatentCache(2, size[2], size[4], 9, dtype=torch.float64), []
            for start, end in ((0, 4), (4, 6), (6, 7), (7, 8), (8, 9)):
                outputs.append(ours(x[:, start:end], cache, absorbed=absorbed))
            torch.testing.assert_close(torch.cat(outputs, 1), expected, **tolerance(torch.float32))
            assert len(cache) == 9


def test_deepseek_v3_attention_with_its_own_cache_equals_it_without():
    from transformers import DynamicCache

    hf, _ = _pair(SIZES[1])
    x = torch.randn(1, 6, SIZES[1][0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cache = DynamicCache()
    with torch.no_grad():
        steps = [deepseek_attention_output(hf, x[:, :3], cache=cache)]
        steps += [deepseek_attention_output(hf, x[:, t:t + 1], start=t, cache=cache) for t in range(3, 6)]
        torch.testing.assert_close(torch.cat(steps, 1), deepseek_attention_output(hf, x), **tolerance(torch.float64))


def test_the_cache_holds_the_normalized_latent_and_the_rotated_key_only():
    hf, ours = _pair(SIZES[0])
    x = torch.randn(2, 5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cache = LatentCache(2, 16, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        ours(x, cache)
        latent, k_rot = ours.kv_a_proj_with_mqa(x).split([16, 6], dim=-1)
        # Hugging Face's RMSNorm computes in float32 whatever the input: float32's tolerance.
        torch.testing.assert_close(cache.latent, hf.kv_a_layernorm(latent), **tolerance(torch.float32))
        cos, sin = rotary_cos_sin(torch.arange(5), 6, dtype=torch.float64)
        torch.testing.assert_close(cache.k_rot, apply_rotary(k_rot, cos, sin), **tolerance(torch.float64))
    cached = sum(t.numel() for t in (cache.latent, cache.k_rot))
    assert cached == mla_cache_bytes(2, 1, 16, 6, 5, 1)
    if deepseek_cache_holds_latent():  # 5.x: Hugging Face's cache holds the same numbers
        from transformers import DynamicCache

        from attention_course.hf_compat import cache_keys_values

        hf_cache = DynamicCache()
        with torch.no_grad():
            deepseek_attention_output(hf, x, cache=hf_cache)
        assert sum(t.numel() for t in cache_keys_values(hf_cache)[0]) == cached


def test_rotary_is_hugging_faces_rotate_half():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    hf, _ = _pair(SIZES[2])
    x = torch.zeros(1, 40, 1)
    cos, sin = DeepseekV3RotaryEmbedding(hf.config)(x, torch.arange(40)[None])
    ours = rotary_cos_sin(torch.arange(40), 8)
    torch.testing.assert_close(ours[0], cos[0], **tolerance(torch.float32))
    torch.testing.assert_close(ours[1], sin[0], **tolerance(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_absorbed_equals_plain_in_every_dtype(dtype):
    _, ours = _pair(SIZES[2])
    x = torch.randn(2, 7, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = ours(x).to(dtype)
        ours = ours.to(dtype)
        for absorbed in (False, True):
            torch.testing.assert_close(ours(x.to(dtype), absorbed=absorbed), expected, **tolerance(dtype, expected))


def test_an_absorbed_decode_step_makes_no_per_head_keys():
    _, ours = _pair(SIZES[2])
    ours = ours.float()
    x = torch.randn(2, 513, 64, generator=torch.Generator().manual_seed(5))
    cache = LatentCache(2, 32, 8, 513)
    with torch.no_grad():
        ours(x[:, :512], cache)
        largest = {}
        for absorbed in (True, False):
            mode = NewStorages()
            with mode:
                ours(x[:, 512:], cache, absorbed=absorbed)
            cache.length -= 1
            largest[absorbed] = mode.largest[0]
    per_head_keys = 2 * 8 * 513 * 16 * 4  # [B, H, T, dn] float32
    assert largest[False] >= per_head_keys > 8 * largest[True]


def test_paged_cache_equals_a_contiguous_one():
    generator = torch.Generator().manual_seed(6)
    cache = PagedKVCache(n_blocks=12, block_size=4, n_kv_heads=2, head_dim=8, dtype=torch.float64)
    plan = {0: [5, 1, 1, 3], 1: [4, 4], 2: [1, 1, 1]}
    whole = {seq_id: [] for seq_id in plan}
    for seq_id in plan:
        cache.allocate(seq_id)
    for step in range(max(map(len, plan.values()))):  # the sequences append in turns: their blocks interleave in the pool
        for seq_id, chunks in plan.items():
            if step < len(chunks):
                k, v = torch.randn(2, chunks[step], 2, 8, dtype=torch.float64, generator=generator)
                cache.append(seq_id, k, v)
                whole[seq_id].append((k, v))
    assert cache.n_free_blocks == 12 - blocks_needed([10, 8, 3], 4) == 12 - 3 - 2 - 1
    for seq_id, parts in whole.items():
        k = torch.cat([p[0] for p in parts]).transpose(0, 1)  # [G, T, d]
        v = torch.cat([p[1] for p in parts]).transpose(0, 1)
        torch.testing.assert_close(cache.gather(seq_id), (k, v), rtol=0, atol=0)
        q = torch.randn(6, 2, 8, dtype=torch.float64, generator=generator)
        torch.testing.assert_close(paged_attention(q, cache, seq_id), gqa_attention(q[None], k[None], v[None])[0],
                                   **tolerance(torch.float64))
    cache.free(0)
    assert cache.n_free_blocks == 12 - 3
    cache.allocate(3)
    k, v = torch.randn(2, 26, 2, 8, dtype=torch.float64, generator=generator)  # 7 blocks: the 6 never used, then a freed one
    cache.append(3, k, v)
    table = cache.block_tables[3]
    assert sorted(table) == sorted(set(table)) and table != sorted(table)  # freed blocks reused, out of pool order
    q = torch.randn(6, 2, 8, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(paged_attention(q, cache, 3), gqa_attention(q[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None])[0],
                               **tolerance(torch.float64))
    with pytest.raises(ValueError, match="out of blocks"):
        cache.append(3, *torch.randn(2, 4 * 7, 2, 8, dtype=torch.float64, generator=generator))
    with pytest.raises(ValueError):
        cache.allocate(3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's paged varlen_attn runs on CUDA only")
def test_paged_attention_equals_torchs_varlen_attn_with_a_block_table():
    import inspect

    from torch.nn.attention.varlen import varlen_attn

    if "block_table" not in inspect.signature(varlen_attn).parameters:
        pytest.skip("this torch's varlen_attn takes no block table")
    generator = torch.Generator().manual_seed(7)
    cache = PagedKVCache(16, 16, 2, 64, dtype=torch.bfloat16, device="cuda")
    cache.allocate(0)
    cache.append(0, *torch.randn(2, 37, 2, 64, generator=generator).to("cuda", torch.bfloat16))
    q = torch.randn(8, 1, 64, generator=generator).to("cuda", torch.bfloat16)
    table = torch.tensor([cache.block_tables[0]], dtype=torch.int32, device="cuda")
    ours = paged_attention(q, cache, 0)
    theirs = varlen_attn(q.transpose(0, 1), cache.keys, cache.values, torch.tensor([0, 1], dtype=torch.int32, device="cuda"),
                         torch.tensor([0, 37], dtype=torch.int32, device="cuda"), 1, 37, window_size=(-1, 0), enable_gqa=True,
                         seqused_k=torch.tensor([37], dtype=torch.int32, device="cuda"), block_table=table)
    torch.testing.assert_close(theirs.transpose(0, 1), ours, **tolerance(torch.bfloat16, ours, rounded_twice=True))
