"""Reference solutions of 03_mqa: multi-query attention (Shazeer, 2019), one key/value head
shared by every query head. It is grouped-query attention with one group (04_gqa), and the
reference is that one, so the two assignments are graded against the same code."""

import torch

from attention_course.kernels.gqa import GroupedQueryAttention, gqa_attention, kv_projection_params

__all__ = ["mqa_attention", "MultiQueryAttention", "kv_projection_params"]


def mqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """q [B, H, Tq, d], k/v [B, 1, Tk, d] -> [B, H, Tq, d]: all H query heads as the rows of one
    matrix product against the single key head, so k and v are never copied H times."""
    if k.shape[-3] != 1 or v.shape[-3] != 1:
        raise ValueError(f"multi-query attention has one key/value head; got keys {tuple(k.shape)}, values {tuple(v.shape)}")
    return gqa_attention(q, k, v, causal)


class MultiQueryAttention(GroupedQueryAttention):
    """q_proj D -> H*d; k_proj and v_proj D -> d (one head); o_proj H*d -> D."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = False):
        super().__init__(d_model, n_heads, 1, bias)
