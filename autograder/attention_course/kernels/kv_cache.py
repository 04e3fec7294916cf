"""Reference KV cache of 02_kv_cache: preallocated key/value buffers that decoding appends to."""

import torch


class KVCache:
    """Keys and values of one attention layer, [B, G, max_len, d] each, filled from the left.

    ``update`` writes the new positions in place and returns views of everything cached so far:
    no copy of the whole cache per step, which is what makes a decode step cost O(T) not O(T^2).
    """

    def __init__(self, batch_size: int, n_kv_heads: int, head_dim: int, max_len: int, dtype=torch.float32, device=None):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def __len__(self) -> int:
        return self.length

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append [B, G, T_new, d] keys and values; return the cached [B, G, len, d] views."""
        if k_new.shape != v_new.shape:
            raise ValueError(f"keys {tuple(k_new.shape)} and values {tuple(v_new.shape)} must have the same shape")
        expected = (*self.keys.shape[:2], k_new.shape[2], self.keys.shape[3])
        if tuple(k_new.shape) != expected:
            raise ValueError(f"new keys have shape {tuple(k_new.shape)}, expected [B, G, T_new, d] = {expected}")
        end = self.length + k_new.shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache is full: {self.length} cached + {k_new.shape[2]} new > max_len {self.max_len}")
        self.keys[:, :, self.length : end] = k_new
        self.values[:, :, self.length : end] = v_new
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def kv_cache_bytes(batch_size: int, n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, bytes_per_element: int) -> int:
    """2 (keys and values) x batch x layers x kv_heads x head_dim x seq_len x bytes per element."""
    return 2 * batch_size * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_element
