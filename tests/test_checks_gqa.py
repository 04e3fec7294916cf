"""The checks of 03_mqa and 04_gqa: the reference passes them (visible and thorough), and each
typical mistake fails with feedback that names it."""

import math

import pytest
import torch
from torch import nn

from attention_course.checks import gqa as checks
from attention_course.checks import mqa as mqa_checks
from attention_course.kernels import gqa as ref
from attention_course.kernels import mqa as mqa_ref
from attention_course.kernels.causal import attention


@pytest.mark.parametrize("thorough", [False, True])
def test_reference_passes(thorough, capsys):
    checks.check_repeat_kv(ref.repeat_kv, thorough=thorough, seed=1)
    checks.check_gqa_attention(ref.gqa_attention, thorough=thorough, seed=2)
    checks.check_grouped_query_attention(ref.GroupedQueryAttention, thorough=thorough, seed=3)
    checks.check_mha_to_gqa(ref.mha_to_gqa, thorough=thorough, seed=4)
    mqa_checks.check_mqa_attention(mqa_ref.mqa_attention, thorough=thorough, seed=5)
    mqa_checks.check_mqa_no_copy(mqa_ref.mqa_attention)
    mqa_checks.check_multi_query_attention(mqa_ref.MultiQueryAttention, thorough=thorough, seed=6)
    mqa_checks.check_kv_projection_params(mqa_ref.kv_projection_params, thorough=thorough, seed=7)
    assert capsys.readouterr().out.count("✓") == 8


def fails_naming(phrase, check, fn, **kwargs):
    with pytest.raises(AssertionError) as error:
        check(fn, **kwargs)
    assert phrase in str(error.value), str(error.value)
    return str(error.value)


def test_repeat_instead_of_repeat_interleave():
    fails_naming("repeat instead of repeat_interleave", checks.check_repeat_kv, lambda x, n: x.repeat(1, n, 1, 1))


def modulo_pairing(q, k, v, causal=True):
    n_rep = q.shape[1] // k.shape[1]
    return attention(q, k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1), causal)


def test_query_head_paired_with_group_h_mod_g():
    fails_naming("paired with key/value group h % G", checks.check_gqa_attention, modulo_pairing)


def test_unscaled_and_unmasked_grouped_attention():
    def unscaled(q, k, v, causal=True):
        return ref.gqa_attention(q * math.sqrt(q.shape[-1]), k, v, causal)

    def unmasked(q, k, v, causal=True):
        return ref.gqa_attention(q, k, v, causal=False)

    fails_naming("not scaled", checks.check_gqa_attention, unscaled)
    fails_naming("future keys", checks.check_gqa_attention, unmasked)


def test_top_left_mask_when_fewer_queries_than_keys():
    def top_left(q, k, v, causal=True):
        if not causal:
            return ref.gqa_attention(q, k, v, False)
        n_rep = q.shape[1] // k.shape[1]
        return torch.nn.functional.scaled_dot_product_attention(q, ref.repeat_kv(k, n_rep), ref.repeat_kv(v, n_rep), is_causal=True)

    fails_naming("aligned top-left", checks.check_gqa_attention, top_left)


def test_no_value_error_when_heads_do_not_divide():
    def lenient(q, k, v, causal=True):
        if q.shape[1] % k.shape[1]:
            return q
        return ref.gqa_attention(q, k, v, causal)

    fails_naming("should raise ValueError", checks.check_gqa_attention, lenient)


def test_h_fold_copies_are_named():
    def repeated(q, k, v, causal=True):
        return attention(q, k.repeat_interleave(q.shape[1], 1), v.repeat_interleave(q.shape[1], 1), causal)

    fails_naming("copied once per query head", mqa_checks.check_mqa_no_copy, repeated)
    fails_naming("copied once per query head", mqa_checks.check_mqa_no_copy, attention)  # broadcast matmul copies too


class FullWidthKV(ref.GroupedQueryAttention):
    def __init__(self, d_model, n_heads, n_kv_heads, bias=False):
        super().__init__(d_model, n_heads, n_heads, bias)
        self.n_kv_heads = n_kv_heads


class SharedQueries(nn.Module):
    def __init__(self, d_model, n_heads, bias=False):
        super().__init__()
        head_dim = d_model // n_heads
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, 1, head_dim
        self.q_proj = nn.Linear(d_model, head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)


def test_layer_layout_mistakes():
    fails_naming("k_proj and v_proj map D -> D", checks.check_grouped_query_attention, FullWidthKV)
    fails_naming("queries are shared instead", mqa_checks.check_multi_query_attention, SharedQueries)


class NoOutputProjection(ref.GroupedQueryAttention):
    def forward(self, x, cache=None):
        saved, self.o_proj = self.o_proj, nn.Identity()
        try:
            return super().forward(x, cache)
        finally:
            self.o_proj = saved


class IgnoresCache(ref.GroupedQueryAttention):
    def forward(self, x, cache=None):
        return super().forward(x)


class AttendsToNewTokensOnly(ref.GroupedQueryAttention):
    def forward(self, x, cache=None):
        if cache is not None:
            q_len = x.shape[1]
            k = self._heads(self.k_proj(x), self.n_kv_heads)
            cache.update(k, self._heads(self.v_proj(x), self.n_kv_heads))
            assert q_len == x.shape[1]
        return super().forward(x)


def test_layer_forward_mistakes():
    fails_naming("o_proj was not applied", checks.check_grouped_query_attention, NoOutputProjection)
    fails_naming("not appended to the cache", checks.check_grouped_query_attention, IgnoresCache)
    fails_naming("attend over everything cached", checks.check_grouped_query_attention, AttendsToNewTokensOnly)


@pytest.mark.parametrize("formula,phrase", [
    (lambda D, H, G, bias=False: 2 * G * (D // H) ** 2, "study notebook's 2 * d * d * H"),
    (lambda D, H, G, bias=False: 2 * D * D // G, "study notebook's 2 * D * D / G"),
    (lambda D, H, G, bias=False: D * G * (D // H), "one projection"),
    (lambda D, H, G, bias=False: 2 * D * G * (D // H), "With bias=True"),
    (lambda D, H, G, bias=False: 2 * (D * G * (D // H) + (D if bias else 0)), "G * head_dim each, not D"),
])
def test_parameter_count_misconceptions(formula, phrase):
    fails_naming(phrase, mqa_checks.check_kv_projection_params, formula, thorough=True)


def pooled_strided(mha, n_kv_heads):
    gqa = ref.mha_to_gqa(mha, n_kv_heads)
    per_group, d = mha.n_heads // n_kv_heads, mha.head_dim
    with torch.no_grad():
        for name in ("k_proj", "v_proj"):
            weight = getattr(mha, name).weight.view(per_group, n_kv_heads, d, -1)
            getattr(gqa, name).weight.copy_(weight.mean(0).reshape(n_kv_heads * d, -1))
    return gqa


def first_head(mha, n_kv_heads):
    gqa = ref.mha_to_gqa(mha, n_kv_heads)
    per_group, d = mha.n_heads // n_kv_heads, mha.head_dim
    with torch.no_grad():
        for name in ("k_proj", "v_proj"):
            getattr(gqa, name).weight.copy_(getattr(mha, name).weight.view(n_kv_heads, per_group, d, -1)[:, 0].reshape(n_kv_heads * d, -1))
    return gqa


def in_place(mha, n_kv_heads):
    with torch.no_grad():
        mha.q_proj.weight.mul_(1.0)
        mha.o_proj.weight.add_(1.0)
    return ref.mha_to_gqa(mha, n_kv_heads)


@pytest.mark.parametrize("convert,phrase", [(pooled_strided, "pooled the wrong heads"), (first_head, "kept the first head"),
                                            (in_place, "was changed")])
def test_conversion_mistakes(convert, phrase):
    fails_naming(phrase, checks.check_mha_to_gqa, convert)


class WithMaskBuffer(ref.GroupedQueryAttention):
    """A causal mask kept as a persistent buffer, as nanoGPT's CausalSelfAttention keeps `bias`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones(64, 64, dtype=torch.bool).tril())


class MQAWithMaskBuffer(mqa_ref.MultiQueryAttention):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("causal_bias", torch.ones(64, 64).tril())


class WithNonPersistentBuffer(ref.GroupedQueryAttention):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones(64, 64, dtype=torch.bool).tril(), persistent=False)


def test_an_extra_persistent_buffer_is_named_and_a_non_persistent_one_passes(capsys):
    message = fails_naming("`mask` is a persistent buffer", checks.check_grouped_query_attention, WithMaskBuffer)
    assert "persistent=False" in message
    fails_naming("`causal_bias` is a persistent buffer", mqa_checks.check_multi_query_attention, MQAWithMaskBuffer)
    checks.check_grouped_query_attention(WithNonPersistentBuffer)
    assert "✓" in capsys.readouterr().out


class ScaledByModelWidth(ref.GroupedQueryAttention):
    """Scores divided by sqrt(d_model): nanoGPT-style code with C (the model width) where it means the head size."""

    def forward(self, x, cache=None):
        batch, length, width = x.shape
        q = self._heads(self.q_proj(x), self.n_heads) * math.sqrt(self.head_dim / width)  # ref divides by sqrt(d) again
        k, v = self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        y = ref.gqa_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


def test_scores_scaled_by_model_width_are_named():
    fails_naming("divided by sqrt(d_model)", checks.check_grouped_query_attention, ScaledByModelWidth)


def test_visible_checks_run_half_precision_too():
    def wrong_only_in_half(q, k, v, causal=True):
        y = ref.gqa_attention(q, k, v, causal)
        return y * 1.5 if q.dtype in (torch.float16, torch.bfloat16) else y

    message = fails_naming("values differ", checks.check_gqa_attention, wrong_only_in_half)
    assert "torch.float16" in message


class SlicedSquareMask(ref.GroupedQueryAttention):
    """LLMs-from-scratch's mask[:num_tokens, :num_tokens] kept with a cache: a T_new x T_new mask."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones(64, 64).triu(diagonal=1), persistent=False)

    def forward(self, x, cache=None):
        batch, length, _ = x.shape
        q = self._heads(self.q_proj(x), self.n_heads)
        k, v = self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = ref.repeat_kv(k, self.n_heads // self.n_kv_heads), ref.repeat_kv(v, self.n_heads // self.n_kv_heads)
        scores = (q @ k.transpose(-2, -1)).masked_fill(self.mask.bool()[:length, :length], float("-inf"))
        y = torch.softmax(scores / self.head_dim**0.5, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


class TopLeftWithCache(ref.GroupedQueryAttention):
    """nanoGPT's bias[:, :, :T, :T] adapted to a cache as bias[:Tq, :Tk]: top-left aligned."""

    def forward(self, x, cache=None):
        batch, length, _ = x.shape
        q = self._heads(self.q_proj(x), self.n_heads)
        k, v = self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        k, v = ref.repeat_kv(k, self.n_heads // self.n_kv_heads), ref.repeat_kv(v, self.n_heads // self.n_kv_heads)
        allowed = torch.ones(64, 64, dtype=torch.bool, device=x.device).tril()[:length, : k.shape[-2]]
        scores = (q @ k.transpose(-2, -1) / self.head_dim**0.5).masked_fill(~allowed, float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


def test_masks_sliced_for_tq_equal_tk_are_named_with_a_cache():
    fails_naming("is Tq x Tk, bottom-right aligned", checks.check_grouped_query_attention, SlicedSquareMask)

    def square_mask(q, k, v, causal=True):  # a Tq x Tq mask against Tk keys
        scores = q @ ref.repeat_kv(k, q.shape[1] // k.shape[1]).transpose(-2, -1) / q.shape[-1] ** 0.5
        if causal:
            scores = scores.masked_fill(~torch.ones(q.shape[-2], q.shape[-2], dtype=torch.bool).tril(), float("-inf"))
        return torch.softmax(scores, dim=-1) @ ref.repeat_kv(v, q.shape[1] // k.shape[1])

    fails_naming("is Tq x Tk, bottom-right aligned", mqa_checks.check_mqa_attention, square_mask)
    fails_naming("aligned top-left", checks.check_grouped_query_attention, TopLeftWithCache)
