"""The reference kernels of 02_kv_cache (attention_course/kernels/kv_cache.py) and the GPT-2 forward
(attention_course/gpt2_forward.py), read as a spec.

Oracles: the uncached layer of 01 (``gpt2_attention``), Hugging Face ``GPT2Attention`` with every
parameter randomized, ``GPT2LMHeadModel`` logits, ``generate(do_sample=False)`` with and without
its cache, and the bytes of real Hugging Face caches after a forward pass.
"""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

from attention_course.tolerances import tolerance
from attention_course.hf_compat import forward_cache
from attention_course.checks.kv_cache import query_key_products
from attention_course.model_configs import hf_cache_bytes, llama2_7b_config, meta_model
from attention_course.gpt2_forward import GPT2Decoder, count_decode_flops, count_flops, gpt2_block, hf_greedy
from attention_course.hf_compat import cache_keys_values, gpt2_attention_layer_output, use_eager_attention
from attention_course.kernels.causal import gpt2_attention
from attention_course.kernels.kv_cache import KVCache, cached_gpt2_attention, greedy_generate, kv_cache_bytes
from attention_course.models import local_gpt2
from attention_course.exercises.kernel.kv_cache import VOCAB_SIZE, harness_gpt2

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def randn(*shape, seed, dtype=torch.float64, device="cpu", scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(device=device, dtype=dtype)


def layer_weights(width, seed, dtype=torch.float64, device="cpu"):
    shapes = [(width, 3 * width), (3 * width,), (width, width), (width,)]
    return [randn(*s, seed=seed + i, dtype=dtype, device=device, scale=width**-0.5) for i, s in enumerate(shapes)]


def run_chunks(x, weights, n_heads, chunks, dtype=None):
    batch, total, width = x.shape
    cache = KVCache(batch, n_heads, width // n_heads, total, dtype=x.dtype, device=x.device)
    outputs, start = [], 0
    for n in chunks:
        outputs.append(cached_gpt2_attention(x[:, start : start + n], *weights, n_heads, cache))
        start += n
    assert len(cache) == total
    return torch.cat(outputs, dim=1)


# ------------------------------------------------------------------------------------------------
# KVCache
# ------------------------------------------------------------------------------------------------


def test_cache_appends_and_returns_views_of_its_buffers(device):
    cache = KVCache(2, 3, 4, 10, device=device)
    k1, v1 = randn(2, 3, 4, 4, seed=1, dtype=torch.float32, device=device), randn(2, 3, 4, 4, seed=2, dtype=torch.float32, device=device)
    k_all, v_all = cache.update(k1, v1)
    assert len(cache) == 4 and torch.equal(k_all, k1) and torch.equal(v_all, v1)
    k2, v2 = randn(2, 3, 1, 4, seed=3, dtype=torch.float32, device=device), randn(2, 3, 1, 4, seed=4, dtype=torch.float32, device=device)
    k_all, v_all = cache.update(k2, v2)
    assert len(cache) == 5
    assert torch.equal(k_all, torch.cat([k1, k2], dim=2)) and torch.equal(v_all, torch.cat([v1, v2], dim=2))
    # Views into the preallocated buffers: same memory, no copy of the cache.
    assert k_all._base is cache.keys and v_all._base is cache.values
    assert k_all.data_ptr() == cache.keys.data_ptr() and v_all.untyped_storage().data_ptr() == cache.values.untyped_storage().data_ptr()
    assert k_all.device == torch.device(device) or k_all.device.type == torch.device(device).type


def test_cache_refuses_overflow_and_bad_shapes():
    cache = KVCache(1, 2, 4, 5)
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="full"):
        cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    assert len(cache) == 3  # a refused update changes nothing
    cache.update(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))  # exactly full is fine
    with pytest.raises(ValueError):
        cache.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError):
        KVCache(1, 2, 4, 5).update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))  # wrong number of heads
    with pytest.raises(ValueError):
        KVCache(1, 2, 4, 5).update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 2, 4))  # k and v differ


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cache_keeps_its_dtype(dtype):
    cache = KVCache(1, 1, 2, 3, dtype=dtype)
    k_all, v_all = cache.update(torch.ones(1, 1, 2, 2, dtype=dtype), torch.ones(1, 1, 2, 2, dtype=dtype))
    assert k_all.dtype == v_all.dtype == dtype


# ------------------------------------------------------------------------------------------------
# cached_gpt2_attention
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunks", [[5, 1, 1, 1], [1] * 8, [3, 3, 2], [8], [2, 6]])
def test_prefill_plus_steps_equals_the_uncached_layer(device, dtype, chunks):
    x = randn(2, sum(chunks), 24, seed=7, device=device)
    weights = layer_weights(24, seed=8, device=device)
    expected = gpt2_attention(x, *weights, 4)  # float64, uncached
    output = run_chunks(x.to(dtype), [w.to(dtype) for w in weights], 4, chunks)
    assert output.dtype == dtype and output.device.type == torch.device(device).type
    assert_close(output.double(), expected, **tolerance(dtype))


@fixture_ok
@given(chunks=st.lists(st.integers(1, 6), min_size=1, max_size=6), heads=st.sampled_from([1, 2, 4]), batch=st.integers(1, 3))
def test_any_chunking_equals_the_uncached_layer(chunks, heads, batch):
    x = randn(batch, sum(chunks), 16, seed=sum(chunks))
    weights = layer_weights(16, seed=len(chunks))
    assert_close(run_chunks(x, weights, heads, chunks), gpt2_attention(x, *weights, heads), **tolerance(torch.float64))


def test_cached_layer_equals_hugging_face_gpt2_attention():
    config = GPT2Config(n_embd=48, n_head=6, n_positions=64, attn_pdrop=0.0, resid_pdrop=0.0)
    use_eager_attention(config)
    layer = GPT2Attention(config, layer_idx=0).double().eval()
    with torch.no_grad():
        for i, parameter in enumerate(layer.parameters()):
            parameter.copy_(randn(*parameter.shape, seed=100 + i, scale=0.3))
        x = randn(2, 9, 48, seed=99)
        expected = gpt2_attention_layer_output(layer, x)
        # The oracle is causal: changing the last token leaves the first 8 outputs alone.
        x_changed = x.clone()
        x_changed[:, -1] += 1
        assert_close(gpt2_attention_layer_output(layer, x_changed)[:, :-1], expected[:, :-1])
        weights = [layer.c_attn.weight, layer.c_attn.bias, layer.c_proj.weight, layer.c_proj.bias]
        assert_close(run_chunks(x, weights, 6, [4, 1, 3, 1]), expected, **tolerance(torch.float64))


def test_top_left_mask_is_wrong_for_a_cache():
    """The trap the course warns about: is_causal=True with fewer queries than keys."""
    import torch.nn.functional as F

    q, k, v = randn(1, 1, 2, 8, seed=1), randn(1, 1, 6, 8, seed=2), randn(1, 1, 6, 8, seed=3)
    from attention_course.kernels.causal import attention

    assert not torch.allclose(F.scaled_dot_product_attention(q, k, v, is_causal=True), attention(q, k, v))


# ------------------------------------------------------------------------------------------------
# The GPT-2 forward and greedy decoding
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gpt2():
    return local_gpt2(seed=3, device="cpu", n_layer=2, n_head=4, n_embd=64, n_positions=96).model


def test_decoder_logits_equal_hugging_face(small_gpt2):
    decoder = GPT2Decoder(small_gpt2)
    ids = torch.randint(0, 257, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = small_gpt2(ids).logits
    assert_close(decoder(ids), expected, **tolerance(torch.float32))  # both float32
    caches = decoder.new_caches(2, 10)
    stepwise = [decoder(ids[:, :6], caches)] + [decoder(ids[:, t : t + 1], caches) for t in range(6, 10)]
    assert_close(torch.cat(stepwise, dim=1), expected, **tolerance(torch.float32))  # both float32


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_tokens_equal_hugging_face_generate(seed, use_cache):
    model = local_gpt2(seed=seed, device="cpu", n_layer=2, n_head=4, n_embd=64, n_positions=96).model
    prompt = torch.randint(0, 257, (2, 6), generator=torch.Generator().manual_seed(seed))
    output = greedy_generate(GPT2Decoder(model), prompt, 16, use_cache=use_cache)
    assert output.shape == (2, 22) and output.dtype == torch.long and torch.equal(output[:, :6], prompt)
    assert torch.equal(output, hf_greedy(model, prompt, 16, use_cache=use_cache))
    assert torch.equal(output, hf_greedy(model, prompt, 16, use_cache=not use_cache))  # HF agrees with itself


def test_hf_greedy_goes_on_past_end_of_text():
    """A row that greedily reaches the model's end token goes on: exactly max_new_tokens new tokens, as greedy_generate
    makes them (transformers 5 took eos_token_id=None for the model's own end token, and padded such a row after it)."""
    model = copy.deepcopy(harness_gpt2())
    prompt = torch.randint(0, VOCAB_SIZE, (2, 8), generator=torch.Generator().manual_seed(0))
    ours = greedy_generate(GPT2Decoder(model), prompt, 9)
    model.config.eos_token_id = model.generation_config.eos_token_id = int(ours[0, 10])  # row 0 reaches it third
    for use_cache in (True, False):
        assert torch.equal(hf_greedy(model, prompt, 9, use_cache=use_cache), ours)


def test_greedy_generate_uses_the_cache_one_token_at_a_time(small_gpt2):
    calls = []
    decoder = GPT2Decoder(small_gpt2)

    class Recorder:
        new_caches = staticmethod(decoder.new_caches)

        def __call__(self, ids, caches=None):
            calls.append((ids.shape[1], caches is not None))
            return decoder(ids, caches)

    greedy_generate(Recorder(), torch.zeros(1, 5, dtype=torch.long), 4, use_cache=True)
    assert calls == [(5, True), (1, True), (1, True), (1, True)]
    calls.clear()
    greedy_generate(Recorder(), torch.zeros(1, 5, dtype=torch.long), 3, use_cache=False)
    assert calls == [(5, False), (6, False), (7, False)]


def test_decoder_refuses_more_than_n_positions(small_gpt2):
    with pytest.raises(ValueError, match="positions"):
        GPT2Decoder(small_gpt2)(torch.zeros(1, 97, dtype=torch.long))


def test_decoder_numbers_new_tokens_after_the_cached_ones(small_gpt2):
    """The positions of a call's tokens start at len(caches[0]); restarted at 0 (offset_positions=False, the
    lesson's bug) a prefill is unchanged, the next step is not, and uncached calls never see it."""
    ids = torch.randint(0, 257, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = small_gpt2(ids).logits  # Hugging Face: positions 0 .. 7
    right, buggy = GPT2Decoder(small_gpt2), GPT2Decoder(small_gpt2, offset_positions=False)
    caches_right, caches_buggy = right.new_caches(1, 8), buggy.new_caches(1, 8)
    assert torch.equal(right(ids[:, :7], caches_right), buggy(ids[:, :7], caches_buggy))
    step_right, step_buggy = right(ids[:, 7:], caches_right), buggy(ids[:, 7:], caches_buggy)
    assert_close(step_right[:, -1], expected[:, -1], **tolerance(torch.float32))
    assert (step_buggy - step_right).abs().max() > 1e-2
    assert_close(buggy(ids), expected, **tolerance(torch.float32))


@pytest.mark.parametrize("d_model,n_heads", [(768, 12), (64, 4)])
def test_counted_flops_of_a_gpt2_block(d_model, n_heads):
    """FlopCounterMode on a GPT-2 block: 24 T D^2 in the projections and MLP, 4 T^2 D in attention as
    computed (the whole score matrix), the course's block and Hugging Face's alike; a cached step costs
    24 D^2 + 4 T D, so the steps of a decode sum to 4 D per allowed pair, 2 T (T + 1) D."""
    block = gpt2_block(d_model, n_heads, device="meta")
    for t in (1, 7, 64):
        counted = count_flops(block, t)
        assert (counted.projections_mlp, counted.attention) == (24 * t * d_model**2, 4 * t * t * d_model)
        assert counted == count_flops(block, t, hugging_face=True)
        step = count_flops(block, 1, n_cached=t - 1)
        assert (step.projections_mlp, step.attention) == (24 * d_model**2, 4 * t * d_model)
    steps = count_decode_flops(block, 20)
    assert sum(s.attention for s in steps) == 2 * 20 * 21 * d_model
    assert count_flops(gpt2_block(d_model, n_heads, device="cpu"), 5) == count_flops(block, 5)  # real weights, same count


# ------------------------------------------------------------------------------------------------
# kv_cache_bytes against real caches
# ------------------------------------------------------------------------------------------------


def test_kv_cache_bytes_equals_a_real_gpt2_cache(small_gpt2):
    cache = forward_cache(small_gpt2, torch.zeros(3, 7, dtype=torch.long))
    real = sum(t.numel() * t.element_size() for kv in cache_keys_values(cache) for t in kv)
    config = small_gpt2.config
    assert real == kv_cache_bytes(3, config.n_layer, config.n_head, config.n_embd // config.n_head, 7, 4)


def test_kv_cache_bytes_equals_a_real_gqa_cache_in_bfloat16():
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    assert hf_cache_bytes(model, 2, 9) == kv_cache_bytes(2, 3, 2, 16, 9, 2)


def test_quiz_keys_from_meta_models():
    assert hf_cache_bytes(meta_model(GPT2Config()), 1, 1024) == 75_497_472 == kv_cache_bytes(1, 12, 12, 64, 1024, 4)
    assert hf_cache_bytes(meta_model(llama2_7b_config(), torch.bfloat16), 1, 4096) == 2**31
    assert query_key_products(100, use_cache=True) == 100
    assert query_key_products(100, use_cache=False) == 100 * 101 // 2
