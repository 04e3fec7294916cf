"""attention_course/hf_compat.py: the transformers 4.56+ / 5.x differences."""

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config

from attention_course import models
from attention_course.hf_compat import additive_causal_mask, cache_keys_values, forward_cache, use_eager_attention
from attention_course.kernels import causal as ref


@pytest.fixture(scope="module")
def gpt2():
    return models.local_gpt2(seed=0, device="cpu")


def test_cache_keys_values_of_a_real_forward_pass(gpt2):
    config = gpt2.model.config
    batch, length = 2, 7
    head_dim = config.n_embd // config.n_head
    ids = torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(0))
    inputs = {}
    handles = [
        block.attn.register_forward_hook(
            lambda module, args, kwargs, output, i=i: inputs.__setitem__(i, args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True,
        )
        for i, block in enumerate(gpt2.model.transformer.h)
    ]
    try:
        with torch.no_grad():
            cache = forward_cache(gpt2.model, ids)
    finally:
        for handle in handles:
            handle.remove()
    pairs = cache_keys_values(cache)
    assert len(pairs) == config.n_layer
    for i, (keys, values) in enumerate(pairs):
        assert isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)
        assert keys.shape == values.shape == (batch, config.n_head, length, head_dim)
        # keys are the k part of c_attn, values the v part, split into heads [B, H, T, d]
        attn = gpt2.model.transformer.h[i].attn
        with torch.no_grad():
            _, k, v = (inputs[i] @ attn.c_attn.weight + attn.c_attn.bias).split(config.n_embd, dim=-1)
        torch.testing.assert_close(keys, ref.split_heads(k, config.n_head))
        torch.testing.assert_close(values, ref.split_heads(v, config.n_head))


def test_cache_keys_values_grow_with_the_cache(gpt2):
    ids = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cache = forward_cache(gpt2.model, ids[:, :3])
        first = [k.clone() for k, _ in cache_keys_values(cache)]
        cache = forward_cache(gpt2.model, ids[:, 3:], cache)
    for old, (keys, values) in zip(first, cache_keys_values(cache)):
        assert keys.shape[2] == values.shape[2] == 5
        torch.testing.assert_close(keys[:, :, :3], old)


def test_cache_keys_values_older_layouts():
    k0, v0, k1, v1 = (torch.full((1, 2, 3, 4), float(i)) for i in range(4))
    legacy_dynamic = SimpleNamespace(key_cache=[k0, k1], value_cache=[v0, v1])
    legacy_tuple = ((k0, v0), (k1, v1))
    for cache in (legacy_dynamic, legacy_tuple):
        pairs = cache_keys_values(cache)
        assert len(pairs) == 2
        assert pairs[0][0] is k0 and pairs[0][1] is v0 and pairs[1][0] is k1 and pairs[1][1] is v1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_additive_causal_mask_values(dtype):
    mask = additive_causal_mask(2, 4, dtype)
    low = torch.finfo(dtype).min
    expected = torch.tensor([[0.0, 0.0, 0.0, low], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)[None, None]
    assert mask.shape == (1, 1, 2, 4)
    assert mask.dtype == dtype
    assert torch.equal(mask, expected)
    square = additive_causal_mask(3, 3, dtype)[0, 0]
    assert torch.equal(square == 0, ref.causal_mask(3, 3))
    assert bool((square[~ref.causal_mask(3, 3)] == low).all())
    assert torch.isfinite(square).all(), "dtype's minimum, not -inf (no NaN when added to scores)"


def test_additive_causal_mask_blocks_in_a_softmax():
    scores = torch.randn(1, 1, 3, 5, generator=torch.Generator().manual_seed(2))
    weights = torch.softmax(scores + additive_causal_mask(3, 5, torch.float32), dim=-1)
    expected = torch.softmax(scores.masked_fill(~ref.causal_mask(3, 5), float("-inf")), dim=-1)
    torch.testing.assert_close(weights, expected)
    assert bool((weights[..., ~ref.causal_mask(3, 5)] == 0).all())


def test_additive_causal_mask_device(device):
    mask = additive_causal_mask(2, 3, torch.float32, device=device)
    assert mask.device.type == device.type


def test_additive_causal_mask_more_queries_than_keys():
    with pytest.raises(ValueError, match="more queries than keys"):
        additive_causal_mask(4, 3, torch.float32)


def test_use_eager_attention():
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2)
    use_eager_attention(config)
    assert config._attn_implementation == "eager"
