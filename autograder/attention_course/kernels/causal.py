"""Reference solutions of 01_causal_attention (the exercise contract in COURSE.md).

Causal convention: the Tq queries are the *last* Tq of the Tk positions, so query i may attend
key j iff ``j <= i + (Tk - Tq)`` (bottom-right alignment, what a KV cache needs).
"""

import math

import torch
import torch.nn.functional as F


def causal_mask(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """BoolTensor[n_queries, n_keys], True where query i may attend key j."""
    if n_queries > n_keys:
        raise ValueError(
            f"more queries than keys ({n_queries} > {n_keys}): causal queries are the last "
            "positions of the keys, so there can be at most as many queries as keys"
        )
    offset = n_keys - n_queries
    query_pos = torch.arange(n_queries, device=device)[:, None]  # [Tq, 1]
    key_pos = torch.arange(n_keys, device=device)[None, :]  # [1, Tk]
    return key_pos <= query_pos + offset  # [Tq, Tk]


def attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) over the keys: [..., Tq, d] x [..., Tk, d] -> [..., Tq, Tk]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [..., Tq, Tk]
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        scores = scores.masked_fill(~mask, float("-inf"))
    # A half-precision softmax loses digits in its sum of exponentials: accumulate in float32 or wider.
    accumulate = torch.promote_types(scores.dtype, torch.float32)
    return torch.softmax(scores, dim=-1, dtype=accumulate).to(q.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """The readable path: weights @ v, [..., Tq, Tk] x [..., Tk, dv] -> [..., Tq, dv]."""
    return attention_weights(q, k, causal) @ v


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """The fast path: PyTorch's fused kernel with the same bottom-right causal convention.

    ``is_causal=True`` would align the mask top-left when Tq < Tk, hence ``causal_lower_right``.
    """
    if not causal:
        return F.scaled_dot_product_attention(q, k, v)
    from torch.nn.attention.bias import causal_lower_right  # here: importing it imports torch._dynamo (0.7 s)

    causal_mask(q.shape[-2], k.shape[-2])  # same ValueError as the readable path
    bias = causal_lower_right(q.shape[-2], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, T, D] -> [B, H, T, D/H]: head h owns features h*d .. (h+1)*d - 1."""
    batch, length, width = x.shape
    if width % n_heads:
        raise ValueError(f"model width {width} is not divisible by n_heads={n_heads}")
    x = x.view(batch, length, n_heads, width // n_heads)  # [B, T, H, d]
    return x.transpose(1, 2)  # [B, H, T, d]


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, d] -> [B, T, H*d], the inverse of ``split_heads``."""
    batch, n_heads, length, head_dim = x.shape
    x = x.transpose(1, 2)  # [B, T, H, d]
    return x.reshape(batch, length, n_heads * head_dim)  # [B, T, D]


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``Conv1D``: a linear layer whose weight is stored [in, out], so x @ W + b."""
    return x @ weight + bias


def gpt2_attention(
    x: torch.Tensor,
    c_attn_weight: torch.Tensor,
    c_attn_bias: torch.Tensor,
    c_proj_weight: torch.Tensor,
    c_proj_bias: torch.Tensor,
    n_heads: int,
) -> torch.Tensor:
    """GPT-2's causal self-attention layer: [B, T, D] -> [B, T, D]."""
    width = x.shape[-1]
    qkv = conv1d(x, c_attn_weight, c_attn_bias)  # [B, T, 3D]
    q, k, v = qkv.split(width, dim=-1)  # 3 x [B, T, D], in this order
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))  # 3 x [B, H, T, d]
    y = attention(q, k, v, causal=True)  # [B, H, T, d]
    return conv1d(merge_heads(y), c_proj_weight, c_proj_bias)  # [B, T, D]
