"""The checks of 07_latent_and_paged: the reference passes them (visible and thorough), and each named
mistake fails with feedback that names it."""

import functools

import pytest
import torch

from attention_course.checks import latent_and_paged as checks
from attention_course.exercises import latent_and_paged as spec
from attention_course.kernels import latent_and_paged as ref
from attention_course.kernels.causal import causal_mask


@pytest.mark.parametrize("thorough", [False, True])
def test_reference_passes(thorough, capsys):
    checks.check_mla_cache_bytes(ref.mla_cache_bytes, thorough=thorough, seed=1)
    checks.check_latent_attention(ref.MultiHeadLatentAttention, ref.LatentCache, thorough=thorough, seed=2)
    checks.check_absorbed(ref.MultiHeadLatentAttention, ref.LatentCache, thorough=thorough, seed=3)
    checks.check_paged_cache(ref.PagedKVCache, thorough=thorough, seed=4)
    checks.check_paged_attention(ref.paged_attention, thorough=thorough, seed=5)
    assert capsys.readouterr().out.count("✓") == 5


def fails_naming(phrase, check, *fns, **kwargs):
    with pytest.raises(AssertionError) as error:
        check(*fns, **kwargs)
    assert phrase in str(error.value), str(error.value)
    return str(error.value)


# ----------------------------------------------------------------------------------------------
# mla_cache_bytes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("message, wrong", [
    (spec.LATENT_TWICE, lambda b, n, r, dr, t, s: 2 * b * n * (r + dr) * t * s),
    (spec.ROPE_KEY_MISSED, lambda b, n, r, dr, t, s: b * n * r * t * s),
    (spec.NO_BYTES, lambda b, n, r, dr, t, s: b * n * (r + dr) * t),
])
def test_cache_bytes_mistakes(message, wrong):
    fails_naming(message, checks.check_mla_cache_bytes, wrong)


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------


class RopeOnLatent(ref.MultiHeadLatentAttention):
    def latents(self, x, start):
        latent, k_rot = super().latents(x, start)
        cos, sin = ref.rotary_cos_sin(torch.arange(start, start + x.shape[1]), latent.shape[-1], dtype=x.dtype)
        return ref.apply_rotary(latent, cos, sin), k_rot


class NotNormed(ref.MultiHeadLatentAttention):
    def latents(self, x, start):
        latent, k_rot = super().latents(x, start)
        return self.kv_a_proj_with_mqa(x)[..., : self.kv_lora_rank], k_rot


class NotRotated(ref.MultiHeadLatentAttention):
    def latents(self, x, start):
        latent, _ = super().latents(x, start)
        return latent, self.kv_a_proj_with_mqa(x)[..., self.kv_lora_rank :]


class ScaleNope(ref.MultiHeadLatentAttention):
    def _scale(self):
        return self.qk_nope_head_dim**-0.5


class ScaleLatentWhenAbsorbed(ref.MultiHeadLatentAttention):
    def _absorbed(self, *args):
        self._scale = lambda: self.kv_lora_rank**-0.5
        try:
            return super()._absorbed(*args)
        finally:
            del self._scale


def _interleaved(x, cos, sin):
    """Rotary with adjacent pairs (0, 1), (2, 3), ...: DeepSeek's checkpoint layout, not the contract's."""
    half = x.shape[-1] // 2
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[..., :half], sin[..., :half]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


class UpProjectedCache(ref.LatentCache):
    """A cache that sizes its buffers on the first update: it will hold whatever the layer gives it."""

    def update(self, latent_new, k_rot_new):
        if self.length == 0 and latent_new.shape[-1] != self.latent.shape[-1]:
            self.latent = torch.zeros(*self.latent.shape[:2], latent_new.shape[-1], dtype=self.latent.dtype,
                                      device=self.latent.device)
        return super().update(latent_new, k_rot_new)


class UpProjected(ref.MultiHeadLatentAttention):
    """Caches the keys and values rebuilt from the latent (and attends with them), not the latent."""

    def forward(self, x, cache=None, absorbed=False):
        batch, length, _ = x.shape
        start = len(cache) if cache is not None else 0
        q_nope, q_rot = self._queries(x).split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        cos, sin = self._rotary(start, length, x)
        latent, k_rot = self.latents(x, start)
        kv = self.kv_b_proj(latent)  # [B, T_new, H*(dn+dv)]
        if cache is not None:
            kv, k_rot = cache.update(kv, k_rot)
        n_keys = kv.shape[1]
        k_nope, v = kv.view(batch, n_keys, self.n_heads, -1).transpose(1, 2).split([self.qk_nope_head_dim, self.v_head_dim], -1)
        scores = q_nope @ k_nope.transpose(-2, -1) + ref.apply_rotary(q_rot, cos, sin) @ k_rot[:, None].transpose(-2, -1)
        y = self._masked_softmax(scores * self._scale(), v.dtype) @ v
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


@pytest.mark.parametrize("message, layer", [
    (spec.ROPE_ON_LATENT, RopeOnLatent),
    (spec.NOT_NORMED, NotNormed),
    (spec.NOT_ROTATED, NotRotated),
    (spec.SCALE_NOPE, ScaleNope),
])
def test_layer_mistakes(message, layer):
    fails_naming(message, checks.check_latent_attention, layer, ref.LatentCache)
    fails_naming(message, checks.check_absorbed, layer, ref.LatentCache)


def test_interleaved_rotary(monkeypatch):
    monkeypatch.setattr(ref, "apply_rotary", _interleaved)
    fails_naming(spec.INTERLEAVED, checks.check_latent_attention, ref.MultiHeadLatentAttention, ref.LatentCache)


def test_keys_and_values_cached_after_up_projection():
    fails_naming(spec.UP_PROJECTED, checks.check_latent_attention, UpProjected, UpProjectedCache)


def test_cache_not_appended():
    class NoUpdate(ref.LatentCache):
        def update(self, latent_new, k_rot_new):
            return latent_new, k_rot_new

    fails_naming("not appended to the cache", checks.check_latent_attention, ref.MultiHeadLatentAttention, NoUpdate)


def test_an_even_rotary_width_is_required():
    class NoCheck(ref.MultiHeadLatentAttention):
        def __init__(self, *args, **kwargs):
            args = list(args)
            args[4] += args[4] % 2  # quietly rounds an odd width up
            super().__init__(*args, **kwargs)

    fails_naming("should raise ValueError for an odd qk_rope_head_dim", checks.check_latent_attention, NoCheck, ref.LatentCache)


def test_a_layout_that_is_not_hugging_faces():
    class Biased(ref.MultiHeadLatentAttention):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.o_proj = torch.nn.Linear(self.o_proj.in_features, self.o_proj.out_features, bias=True)

    fails_naming("unexpected: ['o_proj.bias']", checks.check_latent_attention, Biased, ref.LatentCache)


# ----------------------------------------------------------------------------------------------
# Absorbed
# ----------------------------------------------------------------------------------------------


class Absorbed(ref.MultiHeadLatentAttention):
    """The absorbed path with a knob for each named mistake."""

    mistake = ""

    def _absorbed(self, q_nope, q_rot, latent, k_rot):
        n_heads, nope, v_dim, rank = self.n_heads, self.qk_nope_head_dim, self.v_head_dim, self.kv_lora_rank
        if self.mistake == "heads inner":
            weight = self.kv_b_proj.weight.view(nope + v_dim, n_heads, rank).transpose(0, 1)
        else:
            weight = self.kv_b_proj.weight.view(n_heads, nope + v_dim, rank)
        if self.mistake == "swapped":
            w_uv, w_uk = weight.split([v_dim, nope], dim=1)
        else:
            w_uk, w_uv = weight.split([nope, v_dim], dim=1)
        q_latent = q_nope @ w_uk
        if self.mistake == "per head copy":
            scores = q_latent @ latent[:, None].transpose(-2, -1)  # torch.matmul copies the latent H times
        else:
            scores = self._rows_against_shared(q_latent, latent)
        if self.mistake != "rope dropped":
            scores = scores + self._rows_against_shared(q_rot, k_rot)
        weights = self._masked_softmax(scores * self._scale(), latent.dtype)
        return (weights @ latent[:, None]) @ w_uv.transpose(-2, -1)


@pytest.mark.parametrize("message, mistake", [
    (spec.SWAPPED, "swapped"),
    (spec.HEADS_INNER, "heads inner"),
    (spec.ROPE_DROPPED, "rope dropped"),
    (spec.PER_HEAD_COPY, "per head copy"),
])
def test_absorbed_mistakes(message, mistake):
    layer = type(f"Absorbed_{mistake.replace(' ', '_')}", (Absorbed,), {"mistake": mistake})
    fails_naming(message, checks.check_absorbed, layer, ref.LatentCache)
    if mistake != "per head copy":  # the plain path is untouched: its exercise passes
        checks.check_latent_attention(layer, ref.LatentCache)


def test_absorbed_scale_of_the_latent_width():
    fails_naming(spec.SCALE_LATENT, checks.check_absorbed, ScaleLatentWhenAbsorbed, ref.LatentCache)


# ----------------------------------------------------------------------------------------------
# The paged cache and attention through it
# ----------------------------------------------------------------------------------------------


class OneTooMany(ref.PagedKVCache):
    def append(self, seq_id, k_new, v_new):
        super().append(seq_id, k_new, v_new)
        table = self.block_tables[seq_id]
        if self.lengths[seq_id] % self.block_size == 0 and self.free_blocks:
            table.append(self.free_blocks.pop(0))  # length // block_size + 1 blocks


class NeverFreed(ref.PagedKVCache):
    def free(self, seq_id):
        del self.block_tables[seq_id], self.lengths[seq_id]


@pytest.mark.parametrize("message, cache", [(spec.OVER_ALLOCATED, OneTooMany), (spec.NOT_FREED, NeverFreed)])
def test_paged_cache_mistakes(message, cache):
    fails_naming(message, checks.check_paged_cache, cache)


def test_a_block_per_token():
    class PerToken(ref.PagedKVCache):
        def append(self, seq_id, k_new, v_new):
            super().append(seq_id, k_new, v_new)
            table = self.block_tables[seq_id]
            while len(table) < self.lengths[seq_id] and self.free_blocks:
                table.append(self.free_blocks.pop(0))

    fails_naming(spec.PER_TOKEN, checks.check_paged_cache, PerToken)


def _paged(q, cache, seq_id, table_order=None, length=None, top_left=False, modulo=False):
    table = torch.tensor(table_order(cache.block_tables[seq_id]) if table_order else cache.block_tables[seq_id])
    length = length(cache, seq_id) if length else cache.lengths[seq_id]
    keys = cache.keys[table].flatten(0, 1)[:length].transpose(0, 1)  # [G, T, d]
    values = cache.values[table].flatten(0, 1)[:length].transpose(0, 1)
    n_rep = q.shape[0] // keys.shape[0]
    repeat = (lambda t: t.repeat(n_rep, 1, 1)) if modulo else (lambda t: t.repeat_interleave(n_rep, dim=0))
    scores = q @ repeat(keys).transpose(-2, -1) * q.shape[-1] ** -0.5
    mask = torch.ones(q.shape[1], length, dtype=torch.bool).tril() if top_left else causal_mask(q.shape[1], length)
    weights = torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1).to(q.dtype)
    return weights @ repeat(values)


@pytest.mark.parametrize("message, kwargs", [
    (spec.POOL_ORDER, {"table_order": sorted}),
    (spec.PADDING_ATTENDED, {"length": lambda cache, s: len(cache.block_tables[s]) * cache.block_size}),
    ("aligned top-left", {"top_left": True}),
    ("group h % G", {"modulo": True}),
])
def test_paged_attention_mistakes(message, kwargs):
    checks.check_paged_attention(_paged)  # the model itself is right
    fails_naming(message, checks.check_paged_attention, functools.partial(_paged, **kwargs))


class OneBufferCache(ref.LatentCache):
    """A correct cache that keeps the latent and the rotary key side by side in one buffer (vLLM's layout)."""

    def __init__(self, batch_size, kv_lora_rank, qk_rope_head_dim, max_len, dtype=torch.float32, device=None):
        super().__init__(batch_size, kv_lora_rank, qk_rope_head_dim, max_len, dtype=dtype, device=device)
        buffer = torch.zeros(batch_size, max_len, kv_lora_rank + qk_rope_head_dim, dtype=dtype, device=device)
        self.latent, self.k_rot = buffer[..., :kv_lora_rank], buffer[..., kv_lora_rank:]


@pytest.mark.parametrize("thorough", [False, True])
def test_a_cache_of_one_buffer_passes(thorough, capsys):
    checks.check_latent_attention(ref.MultiHeadLatentAttention, OneBufferCache, thorough=thorough, seed=2)
