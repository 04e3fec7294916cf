"""Reference solutions of 06_long_context: positions in a cache and caches that stay bounded.

- Rotary embeddings (RoPE, Su et al. 2021) at absolute positions, paired as Llama and Hugging Face
  pair them ("rotate half": feature i with feature i + d/2). Keys are rotated once, at their own
  position, and cached rotated; the new tokens of a call sit at ``len(cache), len(cache) + 1, ...``.
- Sliding-window attention (Mistral): query i attends the ``window`` keys up to itself, bottom-right
  aligned like every mask of the course; a ``RollingKVCache`` of ``window`` slots (position p in slot
  p % window) holds all that such a model ever reads, whatever the context length.
- Attention sinks (StreamingLLM, Xiao et al. 2023): a ``SinkKVCache`` keeps the first ``n_sink``
  positions for good, and a rolling window of the most recent ones.

Every cache here counts in ``len(cache)`` the positions it has *seen* (not those it holds), so that
the rotary positions of the next call start there, and ``update`` returns, in position order, the
keys and values the new queries may attend.
"""

import torch

from attention_course.kernels.causal import causal_mask
from attention_course.kernels.gqa import GroupedQueryAttention, _group_size, repeat_kv


# ----------------------------------------------------------------------------------------------
# Rotary embeddings
# ----------------------------------------------------------------------------------------------


def rope_frequencies(head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """FloatTensor[head_dim // 2]: pair i turns by theta ** (-2i / head_dim) radians per position
    (Hugging Face's ``inv_freq``): pair 0 once a position, the last pair about 1/theta as fast."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even: rotary embeddings rotate pairs of features")
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim  # [d/2]: 2i / d
    return 1.0 / theta**exponents


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis: the 90-degree turn of each pair (i, i + d/2)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """x [..., T, d] rotated at ``positions`` (LongTensor[T]): feature pair (i, i + d/2) of the row
    at position p turned by p * theta ** (-2i / d). Angles, cos and sin in float32 (as Hugging Face),
    the product in x's dtype."""
    length, head_dim = x.shape[-2], x.shape[-1]
    if positions.shape != (length,):
        raise ValueError(f"positions has shape {tuple(positions.shape)}, expected one position per row: ({length},)")
    frequencies = rope_frequencies(head_dim, theta, device=x.device)  # [d/2]
    angles = positions.to(device=x.device, dtype=torch.float32)[:, None] * frequencies[None, :]  # [T, d/2]
    angles = torch.cat((angles, angles), dim=-1)  # [T, d]: pair i's angle at features i and i + d/2
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + _rotate_half(x) * sin


# ----------------------------------------------------------------------------------------------
# Sliding windows
# ----------------------------------------------------------------------------------------------


def sliding_window_mask(n_queries: int, n_keys: int, window: int, device=None) -> torch.Tensor:
    """BoolTensor[n_queries, n_keys]: query i may attend key j iff i + (Tk - Tq) - window < j <= i + (Tk - Tq),
    the ``window`` most recent keys up to its own position (Mistral's and Hugging Face's convention)."""
    if window < 1:
        raise ValueError(f"window={window}: a query attends at least its own key, so the window is at least 1")
    allowed = causal_mask(n_queries, n_keys, device=device)  # [Tq, Tk]; raises when Tq > Tk
    offset = n_keys - n_queries
    query_pos = torch.arange(n_queries, device=device)[:, None] + offset  # [Tq, 1]: positions among the keys
    key_pos = torch.arange(n_keys, device=device)[None, :]  # [1, Tk]
    return allowed & (key_pos > query_pos - window)  # [Tq, Tk]


class _BoundedCache:
    """Shared by the bounded caches: buffers [B, G, slots, d], the positions seen, shape checks."""

    def __init__(self, batch_size: int, n_kv_heads: int, head_dim: int, slots: int, dtype, device):
        shape = (batch_size, n_kv_heads, slots, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def _check(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        if k_new.shape != v_new.shape:
            raise ValueError(f"keys {tuple(k_new.shape)} and values {tuple(v_new.shape)} must have the same shape")
        expected = (*self.keys.shape[:2], k_new.shape[2], self.keys.shape[3])
        if tuple(k_new.shape) != expected:
            raise ValueError(f"new keys have shape {tuple(k_new.shape)}, expected [B, G, T_new, d] = {expected}")

    def _read(self, slots: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys/values of ``slots`` (in that order) followed by the new ones: [B, G, len(slots) + T_new, d]."""
        return (torch.cat((self.keys[:, :, slots], k_new), dim=2),  # [B, G, n_old + T_new, d]
                torch.cat((self.values[:, :, slots], v_new), dim=2))

    def _write(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.keys[:, :, slots] = k
        self.values[:, :, slots] = v


def _positions(start: int, end: int, device) -> torch.Tensor:
    """LongTensor of start .. end - 1 (empty when end <= start)."""
    return torch.arange(start, max(start, end), device=device)


class RollingKVCache(_BoundedCache):
    """The keys and values of a sliding-window layer: ``window`` slots, position p in slot p % window.

    ``keys``/``values`` are [B, G, window, d] whatever the context length. ``update(k_new, v_new)``
    returns the keys/values the new queries may attend, in position order: the last window - 1
    positions seen before, then the new ones (for a one-token step, the window's W keys); it then
    writes the new positions (the last ``window`` of them) into their slots.
    """

    def __init__(self, batch_size: int, n_kv_heads: int, head_dim: int, window: int, dtype=torch.float32, device=None):
        if window < 1:
            raise ValueError(f"window={window}: the cache needs at least one slot")
        super().__init__(batch_size, n_kv_heads, head_dim, window, dtype, device)
        self.window = window

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(k_new, v_new)
        seen, end, device = self.length, self.length + k_new.shape[2], self.keys.device
        recent = _positions(max(0, seen - (self.window - 1)), seen, device)  # what the first new query still sees
        k_all, v_all = self._read(recent % self.window, k_new, v_new)  # read before the new writes overwrite slots
        written = _positions(max(seen, end - self.window), end, device)  # only the last `window` new ones stay
        self._write(written % self.window, k_new[:, :, written - seen], v_new[:, :, written - seen])
        self.length = end
        return k_all, v_all


class SinkKVCache(_BoundedCache):
    """StreamingLLM's cache: the first ``n_sink`` positions kept for good, then a rolling window.

    ``keys``/``values`` are [B, G, n_sink + window, d]: position p < n_sink in slot p, a later position
    p in slot n_sink + (p - n_sink) % window. ``update`` returns, in position order, the sink positions
    seen so far, the last window - 1 later positions seen before, then the new ones: for a one-token
    step, the sinks and the ``window`` most recent positions.
    """

    def __init__(self, batch_size: int, n_kv_heads: int, head_dim: int, n_sink: int, window: int, dtype=torch.float32,
                 device=None):
        if n_sink < 0 or window < 1:
            raise ValueError(f"n_sink={n_sink} and window={window}: the sinks cannot be negative, the window needs a slot")
        super().__init__(batch_size, n_kv_heads, head_dim, n_sink + window, dtype, device)
        self.n_sink, self.window = n_sink, window

    def _slots(self, positions: torch.Tensor) -> torch.Tensor:
        return torch.where(positions < self.n_sink, positions, self.n_sink + (positions - self.n_sink) % self.window)

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(k_new, v_new)
        seen, end, device = self.length, self.length + k_new.shape[2], self.keys.device
        sinks = _positions(0, min(seen, self.n_sink), device)
        recent = _positions(max(self.n_sink, seen - (self.window - 1)), seen, device)
        k_all, v_all = self._read(self._slots(torch.cat((sinks, recent))), k_new, v_new)
        new = _positions(seen, end, device)
        kept = new[(new < self.n_sink) | (new >= max(self.n_sink, end - self.window))]  # sinks, and the last `window` others
        self._write(self._slots(kept), k_new[:, :, kept - seen], v_new[:, :, kept - seen])
        self.length = end
        return k_all, v_all


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------


class RotaryGQA(GroupedQueryAttention):
    """Llama's attention layer, rotary embeddings included (``LlamaAttention``); with ``sliding_window``,
    Mistral's (``MistralAttention``): each query attends its ``sliding_window`` most recent keys.

    Parameters as in 04 (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``). ``forward(x, cache)`` puts the
    new tokens at positions ``len(cache), ...`` (0, ... without a cache), rotates their queries and keys
    there, appends the rotated keys and the values to the cache (a ``KVCache``, ``RollingKVCache`` or
    ``SinkKVCache`` with G heads) and attends over what ``update`` returns.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, rope_theta: float = 10000.0,
                 sliding_window: int | None = None, bias: bool = False):
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model={d_model} must split into n_heads={n_heads} heads of an even size (rotary pairs)")
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"sliding_window={sliding_window} must be at least 1")
        super().__init__(d_model, n_heads, n_kv_heads, bias=bias)  # 04's projections and heads
        self.per_group = _group_size(n_heads, n_kv_heads)
        self.rope_theta, self.sliding_window = rope_theta, sliding_window

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """x [B, T_new, D] -> [B, T_new, D]; with a cache, the new tokens follow the ``len(cache)`` seen ones."""
        start = 0 if cache is None else len(cache)
        positions = torch.arange(start, start + x.shape[1], device=x.device)  # [T_new]: absolute positions
        q = apply_rope(self._heads(self.q_proj(x), self.n_heads), positions, self.rope_theta)  # [B, H, T_new, d]
        k = apply_rope(self._heads(self.k_proj(x), self.n_kv_heads), positions, self.rope_theta)  # [B, G, T_new, d]
        v = self._heads(self.v_proj(x), self.n_kv_heads)  # [B, G, T_new, d]
        if cache is not None:
            k, v = cache.update(k, v)  # rotated keys cached: [B, G, T_k, d]
        n_queries, n_keys = q.shape[2], k.shape[2]
        if self.sliding_window is None:
            allowed = causal_mask(n_queries, n_keys, device=x.device)
        else:
            allowed = sliding_window_mask(n_queries, n_keys, self.sliding_window, device=x.device)  # [T_new, T_k]
        k, v = repeat_kv(k, self.per_group), repeat_kv(v, self.per_group)  # [B, H, T_k, d]
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5  # [B, H, T_new, T_k]
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
        y = weights @ v  # [B, H, T_new, d]
        batch, _, length, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))  # [B, T_new, H*d] -> [B, T_new, D]


def cache_bytes(cache) -> int:
    """Bytes of the storages that hold a cache's keys and values (measured on the tensors, not computed)."""
    return sum(t.untyped_storage().nbytes() for t in (cache.keys, cache.values))
