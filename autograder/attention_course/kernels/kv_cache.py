"""Reference KV cache of 02_kv_cache: preallocated key/value buffers that decoding appends to."""

import torch

from attention_course.kernels.causal import attention, conv1d, merge_heads, split_heads


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


def cached_gpt2_attention(
    x_new: torch.Tensor,
    c_attn_weight: torch.Tensor,
    c_attn_bias: torch.Tensor,
    c_proj_weight: torch.Tensor,
    c_proj_bias: torch.Tensor,
    n_heads: int,
    cache: KVCache,
) -> torch.Tensor:
    """GPT-2's attention layer for the new tokens x_new [B, T_new, D], with past keys/values in ``cache``.

    q, k and v are computed for the new tokens only; k and v are appended to the cache; the new
    queries attend over everything cached, with the bottom-right causal mask (the new queries are
    the last T_new positions). A prefill followed by one-token steps equals ``gpt2_attention``.
    """
    width = x_new.shape[-1]
    qkv = conv1d(x_new, c_attn_weight, c_attn_bias)  # [B, T_new, 3D]
    q, k, v = (split_heads(t, n_heads) for t in qkv.split(width, dim=-1))  # 3 x [B, H, T_new, d]
    k_all, v_all = cache.update(k, v)  # 2 x [B, H, T_cached, d]
    y = attention(q, k_all, v_all, causal=True)  # [B, H, T_new, d], bottom-right mask
    return conv1d(merge_heads(y), c_proj_weight, c_proj_bias)  # [B, T_new, D]


def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    """Greedy decoding: LongTensor[B, T] -> [B, T + max_new_tokens], the prompt then the new tokens.

    ``model(ids, caches=None)`` returns logits [B, T_in, vocab]; ``model.new_caches(batch, max_len)``
    returns one empty cache per layer (see ``attention_course.gpt2_forward.GPT2Decoder``).
    With the cache: one prefill over the prompt, then one token per step. Without: every step runs
    the whole sequence so far again.
    """
    ids = input_ids
    if max_new_tokens <= 0:
        return ids
    if use_cache:
        caches = model.new_caches(ids.shape[0], ids.shape[1] + max_new_tokens)
        logits = model(ids, caches)  # prefill: [B, T, vocab]
    else:
        logits = model(ids)
    for step in range(max_new_tokens):
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # [B, 1]
        ids = torch.cat([ids, next_id], dim=1)
        if step == max_new_tokens - 1:
            break  # the last token needs no forward pass
        logits = model(next_id, caches) if use_cache else model(ids)
    return ids
