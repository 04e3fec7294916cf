"""The checks of 02_kv_cache: the reference passes them (visible and thorough), and each typical
mistake fails with feedback that names it."""

import pytest
import torch
import torch.nn.functional as F

from attention_course.checks import kv_cache as checks
from attention_course.kernels import kv_cache as ref
from attention_course.exercises.kv_cache import GENERATE, _exact_gpt2, greedy_throughout, hf_tokens
from attention_course.kernels.causal import attention, merge_heads, split_heads


@pytest.mark.parametrize("thorough", [False, True])
def test_reference_passes(thorough, capsys):
    checks.check_kv_cache(ref.KVCache, thorough=thorough, seed=1)
    checks.check_cached_gpt2_attention(ref.cached_gpt2_attention, thorough=thorough, seed=2)
    checks.check_greedy_generate(ref.greedy_generate, thorough=thorough, seed=3)
    checks.check_kv_cache_bytes(ref.kv_cache_bytes, thorough=thorough, seed=4)
    assert capsys.readouterr().out.count("✓") == 4


def fails_naming(phrase, check, fn, thorough=False):
    with pytest.raises(AssertionError) as error:
        check(fn, thorough=thorough)
    assert phrase in str(error.value).splitlines()[0], str(error.value)


# ------------------------------------------------------------------------------------------------
# KVCache mistakes
# ------------------------------------------------------------------------------------------------


class NotAppended(ref.KVCache):
    def update(self, k_new, v_new):
        super().update(k_new, v_new)
        return k_new, v_new


class WholeBuffer(ref.KVCache):
    def update(self, k_new, v_new):
        super().update(k_new, v_new)
        return self.keys, self.values


class Swapped(ref.KVCache):
    def update(self, k_new, v_new):
        k_all, v_all = super().update(k_new, v_new)
        return v_all, k_all


class Concatenating:
    """Correct values, but a new tensor of everything cached at every step."""

    def __init__(self, batch_size, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        self.keys = self.values = None
        self.max_len = max_len

    def __len__(self):
        return 0 if self.keys is None else self.keys.shape[2]

    def update(self, k_new, v_new):
        if len(self) + k_new.shape[2] > self.max_len:
            raise ValueError("full")
        self.keys = k_new if self.keys is None else torch.cat([self.keys, k_new], dim=2)
        self.values = v_new if self.values is None else torch.cat([self.values, v_new], dim=2)
        return self.keys, self.values


class NoOverflowCheck(ref.KVCache):
    def update(self, k_new, v_new):
        end = self.length + k_new.shape[2]
        self.keys[:, :, self.length : end] = k_new
        self.values[:, :, self.length : end] = v_new
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class LengthNotCounted(ref.KVCache):
    def __len__(self):
        return self.max_len


@pytest.mark.parametrize(
    "cls, phrase",
    [
        (NotAppended, "cache not appended"),
        (WholeBuffer, "whole buffer returned including empty slots"),
        (Swapped, "keys and values swapped"),
        (Concatenating, "update copies the whole cache"),
        (NoOverflowCheck, "should raise ValueError"),
        (LengthNotCounted, "len("),
    ],
)
def test_cache_mistakes_are_named(cls, phrase):
    fails_naming(phrase, checks.check_kv_cache, cls)


def test_cloning_cache_is_named_in_thorough_mode():
    class Cloning(ref.KVCache):
        def update(self, k_new, v_new):
            return tuple(t.clone() for t in super().update(k_new, v_new))

    fails_naming("update copies the whole cache", checks.check_kv_cache, Cloning, thorough=True)


# ------------------------------------------------------------------------------------------------
# cached_gpt2_attention mistakes
# ------------------------------------------------------------------------------------------------


def cached_variant(x_new, w_attn, b_attn, w_proj, b_proj, n_heads, cache, *, keys="all", mask="right", update=True):
    width = x_new.shape[-1]
    q, k, v = (split_heads(t, n_heads) for t in (x_new @ w_attn + b_attn).split(width, dim=-1))
    k_all, v_all = cache.update(k, v) if update else (k, v)
    if keys == "new":
        k_all, v_all = k, v
    if mask == "top_left":
        y = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
    else:
        y = attention(q, k_all, v_all)
    return merge_heads(y) @ w_proj + b_proj


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(keys="new"), "the new tokens only attended to"),
        (dict(mask="top_left"), "top-left mask during chunked prefill"),
        (dict(update=False), "were not appended to the cache"),
    ],
)
def test_cached_attention_mistakes_are_named(kwargs, phrase):
    fails_naming(phrase, checks.check_cached_gpt2_attention, lambda *a: cached_variant(*a, **kwargs))


def test_forgotten_update_with_full_attention_is_named():
    """Attends over the buffers it was given but never appends: named by the cache's length."""

    def forgot(x_new, w_attn, b_attn, w_proj, b_proj, n_heads, cache):
        out = ref.cached_gpt2_attention(x_new, w_attn, b_attn, w_proj, b_proj, n_heads, cache)
        cache.length -= x_new.shape[1]
        return out

    fails_naming("were not appended to the cache", checks.check_cached_gpt2_attention, forgot)


# ------------------------------------------------------------------------------------------------
# greedy_generate mistakes
# ------------------------------------------------------------------------------------------------


def generate_variant(model, input_ids, max_new_tokens, use_cache=True, *, extra=0, only_new=False, feed_all=False, first_logits=False):
    ids = input_ids
    caches = model.new_caches(ids.shape[0], ids.shape[1] + max_new_tokens + extra) if use_cache else None
    logits = model(ids, caches)
    for _ in range(max_new_tokens + extra):
        next_id = logits[:, 0 if first_logits else -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        logits = model(ids if feed_all or not use_cache else next_id, caches if not feed_all else None)
    return ids[:, input_ids.shape[1] :] if only_new else ids


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(extra=1), "decode loop off by one"),
        (dict(extra=-1), "decode loop off by one"),
        (dict(only_new=True), "returned only the new tokens"),
        (dict(feed_all=True), "each decode step must feed only the newest token"),
        (dict(first_logits=True), "differ from Hugging Face generate"),
    ],
)
def test_generate_mistakes_are_named(kwargs, phrase):
    fails_naming(phrase, checks.check_greedy_generate, lambda *a, **k: generate_variant(*a, **k, **kwargs))


def test_greedy_tokens_are_judged_by_the_exact_logits():
    """Each new token must be the argmax of the exact logits (float64) before it, up to float32 rounding: Hugging
    Face's tokens are; the same tokens with one replaced by the runner-up are not."""
    case = GENERATE.cases(torch.Generator().manual_seed(0), True)[2]
    tokens = hf_tokens(case)
    assert greedy_throughout(case["prompt"], case["n_new"], tokens)
    with torch.no_grad():
        logits = _exact_gpt2()(tokens[:, :-1]).logits[:, -1]  # [B, V]: what chose the last token
    runner_up = tokens.clone()
    runner_up[:, -1] = logits.topk(2, dim=-1).indices[:, 1]
    assert not greedy_throughout(case["prompt"], case["n_new"], runner_up)
    assert not greedy_throughout(case["prompt"], case["n_new"], tokens[:, case["prompt"].shape[1]:])  # the new tokens only
    assert not greedy_throughout(case["prompt"], case["n_new"] - 1, tokens)  # one token too many


def test_overflowing_the_cache_is_explained():
    def overflow(model, input_ids, max_new_tokens, use_cache=True):
        caches = model.new_caches(input_ids.shape[0], input_ids.shape[1])
        model(input_ids, caches)
        model(input_ids[:, -1:], caches)

    fails_naming("each decode step must feed only the newest token", checks.check_greedy_generate, overflow)


# ------------------------------------------------------------------------------------------------
# kv_cache_bytes mistakes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, phrase",
    [
        (lambda b, l, g, d, s, n: b * l * g * s * 2 * 2, "leaves out head_dim"),
        (lambda b, l, g, d, s, n: 2 * b * l * g * s * n, "leaves out head_dim"),
        (lambda b, l, g, d, s, n: b * l * g * d * s * n, "keys only"),
        (lambda b, l, g, d, s, n: 2 * b * l * g * d * s, "elements, not bytes"),
        (lambda b, l, g, d, s, n: 16 * b * l * g * d * s * n, "in bits"),
        (lambda b, l, g, d, s, n: 2.5, "is 2.5, expected"),
    ],
)
def test_bytes_mistakes_are_named(fn, phrase):
    fails_naming(phrase, checks.check_kv_cache_bytes, fn)


def test_not_implemented_is_reported():
    def todo(*args, **kwargs):
        raise NotImplementedError()

    for check in (checks.check_kv_cache, checks.check_cached_gpt2_attention, checks.check_greedy_generate, checks.check_kv_cache_bytes):
        fails_naming("not implemented yet", check, todo)
