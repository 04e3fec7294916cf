"""The checks of 06_long_context: the reference passes them (visible and thorough), and each typical
mistake fails with feedback that names it."""

import pytest
import torch

from attention_course.checks import long_context as checks
from attention_course.exercises import long_context as spec
from attention_course.kernels import long_context as ref
from attention_course.kernels.causal import causal_mask


@pytest.mark.parametrize("thorough", [False, True])
def test_reference_passes(thorough, capsys):
    checks.check_rope_frequencies(ref.rope_frequencies, thorough=thorough, seed=1)
    checks.check_apply_rope(ref.apply_rope, thorough=thorough, seed=2)
    checks.check_sliding_window_mask(ref.sliding_window_mask, thorough=thorough, seed=3)
    checks.check_rotary_gqa(ref.RotaryGQA, thorough=thorough, seed=4)
    checks.check_rolling_kv_cache(ref.RollingKVCache, thorough=thorough, seed=5)
    checks.check_sink_kv_cache(ref.SinkKVCache, thorough=thorough, seed=6)
    assert capsys.readouterr().out.count("✓") == 6


def fails_naming(phrase, check, fn, **kwargs):
    with pytest.raises(AssertionError) as error:
        check(fn, **kwargs)
    assert phrase in str(error.value), str(error.value)
    return str(error.value)


# ---------------------------------------------------------------------------------------------- RoPE


def _frequencies(exponent_of_pair):
    def frequencies(head_dim, theta=10000.0, device=None):
        if head_dim % 2:
            raise ValueError("odd")
        return (theta ** -exponent_of_pair(torch.arange(head_dim // 2, device=device).float(), head_dim)).float()
    return frequencies


@pytest.mark.parametrize("exponent,phrase", [
    (lambda i, d: i / d, "exponent i / d"),
    (lambda i, d: -2 * i / d, "exponent's sign is flipped"),
])
def test_frequency_mistakes(exponent, phrase):
    fails_naming(phrase, checks.check_rope_frequencies, _frequencies(exponent))


def test_frequencies_without_theta_or_doubled():
    fails_naming("theta was not used", checks.check_rope_frequencies,
                 lambda head_dim, theta=10000.0, device=None: ref.rope_frequencies(head_dim, 10000.0, device))
    fails_naming("returned d frequencies", checks.check_rope_frequencies,
                 lambda head_dim, theta=10000.0, device=None: ref.rope_frequencies(head_dim, theta, device).repeat(2))


def _rope(pairing="half", turn=1, at_zero=False, exponent=2.0, theta_fixed=False):
    def apply_rope(x, positions, theta=10000.0):
        if positions.shape != (x.shape[-2],) or x.shape[-1] % 2:
            raise ValueError("bad")
        d = x.shape[-1]
        theta = 10000.0 if theta_fixed else theta
        freq = theta ** (-exponent * torch.arange(d // 2, device=x.device).float() / d)
        at = torch.arange(x.shape[-2], device=x.device) if at_zero else positions
        angles = at.float()[:, None] * freq
        cos, sin = angles.cos().to(x.dtype), (turn * angles.sin()).to(x.dtype)
        if pairing == "half":
            a, b = x[..., : d // 2], x[..., d // 2:]
            return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    return apply_rope


def test_the_written_out_rope_passes():
    checks.check_apply_rope(_rope(), thorough=True, seed=9)


@pytest.mark.parametrize("kwargs,phrase", [
    ({"pairing": "interleaved"}, "paired as (0, 1), (2, 3)"),
    ({"turn": -1}, "turned the wrong way"),
    ({"at_zero": True}, "turned at 0, 1, 2, ... instead of the positions"),
    ({"exponent": 1.0}, "exponent i / d"),
    ({"theta_fixed": True}, "theta was not used"),
])
def test_rope_mistakes(kwargs, phrase):
    fails_naming(phrase, checks.check_apply_rope, _rope(**kwargs))


def test_rope_without_length_check_is_named():
    def lenient(x, positions, theta=10000.0):
        if positions.shape[0] != x.shape[-2]:
            positions = torch.arange(x.shape[-2], device=x.device)
        return ref.apply_rope(x, positions, theta)

    fails_naming("should raise ValueError for positions of another length", checks.check_apply_rope, lenient)


def test_rope_on_the_wrong_device_is_named():
    def cpu_angles(x, positions, theta=10000.0):
        freq = ref.rope_frequencies(x.shape[-1], theta)  # made on the CPU
        return ref.apply_rope(x, positions, theta) + 0 * freq.repeat(2).to(x.dtype)  # [d], broadcast over the rows

    fails_naming("wrong device", checks.check_apply_rope, cpu_angles)


# ---------------------------------------------------------------------------------------------- window mask


def _window(align="bottom_right", extra=0, causal=True, use_window=True):
    def sliding_window_mask(n_queries, n_keys, window, device=None):
        if window < 1 or n_queries > n_keys:
            raise ValueError("bad")
        return spec.window_variant(n_queries, n_keys, window, align, extra, causal, use_window).to(device)
    return sliding_window_mask


@pytest.mark.parametrize("kwargs,phrase", [
    ({"align": "top_left"}, "aligned top-left"),
    ({"extra": 1}, "window + 1 keys"),
    ({"extra": -1}, "window - 1 keys"),
    ({"causal": False}, "reaches into the future"),
    ({"use_window": False}, "this is the causal mask"),
])
def test_window_mask_mistakes(kwargs, phrase):
    fails_naming(phrase, checks.check_sliding_window_mask, _window(**kwargs))


def test_window_mask_without_checks_is_named():
    def lenient(n_queries, n_keys, window, device=None):
        return ref.sliding_window_mask(n_queries, n_keys, max(window, 1), device)

    fails_naming("should raise ValueError for window=0", checks.check_sliding_window_mask, lenient)


# ---------------------------------------------------------------------------------------------- the layer


class Restarted(ref.RotaryGQA):
    """Positions 0 .. T_new - 1 in every call."""

    def forward(self, x, cache=None):
        class Empty:
            def __len__(self):
                return 0

        if cache is None:
            return super().forward(x)
        fake = Empty()
        fake.update = cache.update
        return super().forward(x, fake)


class CachedUnrotated(ref.RotaryGQA):
    """Caches the keys before rotation and rotates what comes back at 0 .. T_k - 1: right outputs, wrong cache."""

    def forward(self, x, cache=None):
        batch, length, _ = x.shape
        start = 0 if cache is None else len(cache)
        q = self._heads(self.q_proj(x), self.n_heads)
        k = self._heads(self.k_proj(x), self.n_kv_heads)
        v = self._heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        q = ref.apply_rope(q, torch.arange(start, start + length, device=x.device), self.rope_theta)
        k = ref.apply_rope(k, torch.arange(k.shape[2], device=x.device), self.rope_theta)
        if self.sliding_window is None:
            allowed = causal_mask(length, k.shape[2], device=x.device)
        else:
            allowed = ref.sliding_window_mask(length, k.shape[2], self.sliding_window, device=x.device)
        k, v = ref.repeat_kv(k, self.per_group), ref.repeat_kv(v, self.per_group)
        scores = (q @ k.transpose(-2, -1) * self.head_dim**-0.5).masked_fill(~allowed, float("-inf"))
        y = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


def _with_rope(rope):
    class Layer(ref.RotaryGQA):
        def forward(self, x, cache=None):
            original = ref.apply_rope
            ref.apply_rope = rope
            try:
                return super().forward(x, cache)
            finally:
                ref.apply_rope = original
    return Layer


class WindowIgnored(ref.RotaryGQA):
    def __init__(self, *args, sliding_window=None, **kwargs):
        super().__init__(*args, **kwargs)


def test_positions_restarted_at_each_call():
    fails_naming("positions restarted at 0 in each call", checks.check_rotary_gqa, Restarted)


def test_keys_cached_before_rotation():
    fails_naming("keys were cached before rotation", checks.check_rotary_gqa, CachedUnrotated)


@pytest.mark.parametrize("rope,phrase", [
    (_rope(pairing="interleaved"), "paired as (0, 1), (2, 3)"),
    (_rope(exponent=1.0), "exponent i / d"),
    (_rope(theta_fixed=True), "theta was not used"),
    (lambda x, positions, theta=10000.0: x, "no rotary embedding was applied"),
])
def test_layer_rope_mistakes(rope, phrase):
    fails_naming(phrase, checks.check_rotary_gqa, _with_rope(rope))


def test_sliding_window_ignored():
    fails_naming("sliding window was ignored", checks.check_rotary_gqa, WindowIgnored)


def test_mask_buffer_is_named():
    class WithBuffer(ref.RotaryGQA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("inv_freq", torch.ones(4))

    fails_naming("`inv_freq` is a persistent buffer", checks.check_rotary_gqa, WithBuffer)


# ---------------------------------------------------------------------------------------------- caches


class FullHistory(ref.RollingKVCache):
    """Returns everything ever seen (and keeps it, in a list): memory grows with the context."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_k, self.seen_v = [], []

    def update(self, k_new, v_new):
        super().update(k_new, v_new)
        self.seen_k.append(k_new)
        self.seen_v.append(v_new)
        return torch.cat(self.seen_k, dim=2), torch.cat(self.seen_v, dim=2)


class ReadAfterWrite(ref.RollingKVCache):
    def update(self, k_new, v_new):
        seen = self.length
        written = torch.arange(max(seen, seen + k_new.shape[2] - self.window), seen + k_new.shape[2])
        self.keys[:, :, written % self.window] = k_new[:, :, written - seen]
        self.values[:, :, written % self.window] = v_new[:, :, written - seen]
        recent = torch.arange(max(0, seen - (self.window - 1)), seen) % self.window
        self.length += k_new.shape[2]
        return (torch.cat((self.keys[:, :, recent], k_new), dim=2), torch.cat((self.values[:, :, recent], v_new), dim=2))


class SlotOrder(ref.RollingKVCache):
    def update(self, k_new, v_new):
        k_all, v_all = super().update(k_new, v_new)
        if k_new.shape[2] == 1:
            held = min(self.length, self.window)
            return self.keys[:, :, :held], self.values[:, :, :held]
        return k_all, v_all


class HeldCount(ref.RollingKVCache):
    def __len__(self):
        return min(self.length, self.window)


class OnePlus(ref.RollingKVCache):
    """Returns window old positions, then the new ones (reads one stale slot too many)."""

    def __init__(self, batch_size, n_kv_heads, head_dim, window, dtype=torch.float32, device=None):
        super().__init__(batch_size, n_kv_heads, head_dim, window, dtype, device)
        self.wider = ref.RollingKVCache(batch_size, n_kv_heads, head_dim, window + 1, dtype, device)

    def update(self, k_new, v_new):
        super().update(k_new, v_new)
        return self.wider.update(k_new, v_new)


@pytest.mark.parametrize("cache,phrase", [
    (FullHistory, "update returned every position seen so far"),
    (ReadAfterWrite, "read after the new ones were written"),
    (SlotOrder, "came back in slot order"),
    (HeldCount, "len(cache) counts the positions held"),
    (OnePlus, "one too many"),
])
def test_rolling_cache_mistakes(cache, phrase):
    fails_naming(phrase, checks.check_rolling_kv_cache, cache)


def test_shifted_buffer_is_named():
    # A shifting cache must read its own layout; build one whose reads are right and whose slots are shifted.
    class ShiftingCache(ref.RollingKVCache):
        def update(self, k_new, v_new):
            seen = self.length
            held = min(seen, self.window)
            old_k, old_v = self.keys[:, :, :held], self.values[:, :, :held]  # in position order
            keep = min(held, self.window - 1)
            k_all = torch.cat((old_k[:, :, held - keep:], k_new), dim=2)
            v_all = torch.cat((old_v[:, :, held - keep:], v_new), dim=2)
            everything_k = torch.cat((old_k, k_new), dim=2)[:, :, -self.window:]
            everything_v = torch.cat((old_v, v_new), dim=2)[:, :, -self.window:]
            self.keys[:, :, :everything_k.shape[2]] = everything_k
            self.values[:, :, :everything_v.shape[2]] = everything_v
            self.length = seen + k_new.shape[2]
            return k_all, v_all

    fails_naming("kept in position order by shifting it", checks.check_rolling_kv_cache, ShiftingCache)


def test_growing_buffer_is_named():
    class Appending:
        """Keeps every position (a list of chunks) and returns the window: right reads, memory that grows."""

        def __init__(self, batch_size, n_kv_heads, head_dim, window, dtype=torch.float32, device=None):
            self.window = window
            self.keys = torch.zeros(batch_size, n_kv_heads, 0, head_dim, dtype=dtype, device=device)
            self.values = torch.zeros(batch_size, n_kv_heads, 0, head_dim, dtype=dtype, device=device)

        def __len__(self):
            return self.keys.shape[2]

        def update(self, k_new, v_new):
            seen = len(self)
            self.keys, self.values = torch.cat((self.keys, k_new), dim=2), torch.cat((self.values, v_new), dim=2)
            first = max(0, seen - (self.window - 1))
            return self.keys[:, :, first:], self.values[:, :, first:]

    fails_naming("the buffer grows with the context", checks.check_rolling_kv_cache, Appending)


def test_sink_cache_that_evicts_its_sinks():
    class Evicting(ref.SinkKVCache):
        def __init__(self, batch_size, n_kv_heads, head_dim, n_sink, window, dtype=torch.float32, device=None):
            super().__init__(batch_size, n_kv_heads, head_dim, n_sink, window, dtype, device)
            self.rolling = ref.RollingKVCache(batch_size, n_kv_heads, head_dim, n_sink + window, dtype, device)

        def update(self, k_new, v_new):
            super().update(k_new, v_new)
            return self.rolling.update(k_new, v_new)

    fails_naming("first n_sink positions were evicted", checks.check_sink_kv_cache, Evicting)


def test_cache_without_shape_checks_is_named():
    class Lenient(ref.RollingKVCache):
        def _check(self, k_new, v_new):
            pass

        def update(self, k_new, v_new):
            try:
                return super().update(k_new, v_new)
            except RuntimeError:
                return k_new, v_new

    fails_naming("should raise ValueError for keys and values of different shapes", checks.check_rolling_kv_cache, Lenient)
