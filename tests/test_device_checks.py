"""Device bugs are found on any machine (the meta device), so that a score never depends on the
grader's hardware: the graded cells compare values on the CPU everywhere and run one case with
inputs on ``meta``, where a tensor made without ``device=`` mixes devices or lands on the CPU."""

import math

import pytest
import torch

from attention_course.checks import causal_attention as checks01
from attention_course.checks import gqa as checks04
from attention_course.checks import kv_cache as checks02
from attention_course.checks import mqa as checks03
from attention_course.exercises.kernel import devices as probe
from attention_course.exercises.kernel import draw
from attention_course.kernels import causal as ref01
from attention_course.kernels import gqa as ref04
from attention_course.kernels import kv_cache as ref02
from attention_course.kernels import mqa as ref03

WRONG = "made a tensor on the wrong device"


def test_the_cases_do_not_depend_on_the_graders_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(draw.CUDA_CHECKS_ENV, raising=False)
    assert draw.devices(True) == draw.devices(False) == ["cpu"]


@pytest.mark.parametrize("check, solution", [
    (checks01.check_causal_mask, ref01.causal_mask),
    (checks01.check_attention_weights, ref01.attention_weights),
    (checks01.check_attention, ref01.attention),
    (checks01.check_gpt2_attention, ref01.gpt2_attention),
    (checks02.check_kv_cache, ref02.KVCache),
    (checks02.check_cached_gpt2_attention, ref02.cached_gpt2_attention),
    (checks03.check_mqa_attention, ref03.mqa_attention),
    (checks03.check_multi_query_attention, ref03.MultiQueryAttention),
    (checks04.check_gqa_attention, ref04.gqa_attention),
    (checks04.check_grouped_query_attention, ref04.GroupedQueryAttention),
], ids=lambda x: getattr(x, "__name__", "?"))
def test_the_reference_solutions_pass_on_meta(check, solution):
    check(solution)


def _runs_on_meta(fn, *args, **kwargs) -> bool:
    """Whether ``fn`` runs through with its tensors on meta, every tensor it returns on meta too: the
    probe then sees all it does (a probe that gave up early would find nothing)."""
    output = fn(*probe.on_meta(args), **probe.on_meta(kwargs))
    return all(t.device.type == "meta" for t in probe.returned_tensors(output))


def test_the_reference_solutions_are_conclusive_on_meta():
    empty = torch.empty
    assert _runs_on_meta(ref01.causal_mask, 3, 4, device="meta")
    assert _runs_on_meta(ref01.attention, empty(2, 4, 8), empty(2, 6, 8), empty(2, 6, 5))
    assert _runs_on_meta(ref04.gqa_attention, empty(1, 4, 3, 8), empty(1, 2, 5, 8), empty(1, 2, 5, 8))
    assert _runs_on_meta(ref02.KVCache, 1, 2, 4, 8, device="meta")
    assert _runs_on_meta(lambda m, x: m(x), ref04.GroupedQueryAttention(16, 4, 2), empty(2, 5, 16))


def _weights_without_device(q, k, causal=True):
    if q.shape[-2] > k.shape[-2]:
        raise ValueError("more queries than keys")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(k.shape[-2] - q.shape[-2])  # no device=
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1)


def _gqa_without_device(q, k, v, causal=True):
    n_rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    return _weights_without_device(q, k, causal) @ v


class _CacheWithoutDevice(ref02.KVCache):
    def __init__(self, batch_size, n_kv_heads, head_dim, max_len, dtype=torch.float32, device=None):
        super().__init__(batch_size, n_kv_heads, head_dim, max_len, dtype=dtype, device=None)  # ignores device


class _LayerWithoutDevice(ref04.GroupedQueryAttention):
    def forward(self, x, cache=None):
        batch, length, _ = x.shape
        q = self._heads(self.q_proj(x), self.n_heads)
        k, v = self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        y = _gqa_without_device(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


def _cached_without_device(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache):
    q, k, v = (ref01.split_heads(t, n_heads) for t in (x_new @ c_attn_weight + c_attn_bias).split(x_new.shape[-1], dim=-1))
    k, v = cache.update(k, v)
    return ref01.merge_heads(_weights_without_device(q, k) @ v) @ c_proj_weight + c_proj_bias


@pytest.mark.parametrize("check, solution", [
    (checks01.check_causal_mask, lambda n_queries, n_keys, device=None: ref01.causal_mask(n_queries, n_keys)),
    (checks01.check_attention_weights, _weights_without_device),
    (checks01.check_attention, lambda q, k, v, causal=True: _weights_without_device(q, k, causal) @ v),
    (checks01.check_attention_weights, lambda q, k, causal=True: ref01.attention_weights(q.cpu(), k.cpu(), causal)),
    (checks02.check_kv_cache, _CacheWithoutDevice),
    (checks02.check_cached_gpt2_attention, _cached_without_device),
    (checks03.check_mqa_attention, _gqa_without_device),
    (checks04.check_gqa_attention, _gqa_without_device),
    (checks04.check_grouped_query_attention, _LayerWithoutDevice),
], ids=["mask", "weights", "attention", "to_cpu", "cache", "cached_gpt2", "mqa", "gqa", "layer"])
def test_a_tensor_made_on_the_wrong_device_is_named_on_a_cpu_only_machine(check, solution):
    with pytest.raises(AssertionError, match=WRONG):
        check(solution)


def test_what_meta_cannot_do_does_not_count_against_a_correct_solution():
    def reads_a_value(q, k, causal=True):
        if bool(torch.isnan(q).any()):  # .item() on meta: inconclusive, not a mistake
            raise ValueError("NaN in q")
        return ref01.attention_weights(q, k, causal)

    assert probe.device_problem(reads_a_value, torch.empty(2, 4, 8), torch.empty(2, 6, 8)) == ""
    checks01.check_attention_weights(reads_a_value, thorough=True)


def test_mixed_devices_are_told_apart_from_metas_limits():
    scores = torch.empty(4, 6, device="meta")
    with pytest.raises(RuntimeError) as mixed:
        scores.masked_fill(torch.ones(4, 6, dtype=torch.bool), 0.0)
    assert probe.mixes_devices(mixed.value)
    with pytest.raises(RuntimeError) as read:
        scores.sum().item()
    assert not probe.mixes_devices(read.value)
