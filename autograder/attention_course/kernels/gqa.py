"""Reference solutions of 04_gqa: grouped-query attention (Ainslie et al., 2023).

G key/value heads serve H query heads, H / G queries per group: query head h uses group
h // (H / G). G = H is multi-head attention, G = 1 multi-query attention (03_mqa).
"""

import torch
from torch import nn

from attention_course.kernels.causal import attention_weights, causal_mask


def _group_size(n_heads: int, n_kv_heads: int) -> int:
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: each key/value head must "
                         "serve the same number of query heads")
    return n_heads // n_kv_heads


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, G, T, d] -> [B, G*n_rep, T, d], each group repeated n_rep times in place (a copy)."""
    return x.repeat_interleave(n_rep, dim=1)


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """q [B, H, Tq, d], k/v [B, G, Tk, d] -> [B, H, Tq, d], without copying k or v.

    The H / G query heads of a group are stacked as extra rows of one matrix product against the
    group's single key head: ``q @ k^T`` with k broadcast over heads would make ``torch.matmul``
    copy k H / G times (it materializes broadcast batch dimensions).
    """
    *batch, n_heads, n_queries, head_dim = q.shape
    n_kv_heads, n_keys = k.shape[-3], k.shape[-2]
    per_group = _group_size(n_heads, n_kv_heads)
    q = q.reshape(*batch, n_kv_heads, per_group * n_queries, head_dim)  # [B, G, (H/G)*Tq, d]: a group's queries as rows
    scores = q @ k.transpose(-2, -1) * head_dim**-0.5  # [B, G, (H/G)*Tq, Tk]
    scores = scores.view(*batch, n_kv_heads, per_group, n_queries, n_keys)  # [B, G, H/G, Tq, Tk]
    if causal:
        scores = scores.masked_fill(~causal_mask(n_queries, n_keys, device=q.device), float("-inf"))
    accumulate = torch.promote_types(scores.dtype, torch.float32)
    weights = torch.softmax(scores, dim=-1, dtype=accumulate).to(v.dtype)  # [B, G, H/G, Tq, Tk]
    weights = weights.view(*batch, n_kv_heads, per_group * n_queries, n_keys)  # [B, G, (H/G)*Tq, Tk]
    y = weights @ v  # [B, G, (H/G)*Tq, d]
    return y.view(*batch, n_heads, n_queries, v.shape[-1])  # [B, H, Tq, d]


def gqa_attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """[B, H, Tq, Tk]: the readable path, with k copied to one head per query head."""
    return attention_weights(q, repeat_kv(k, _group_size(q.shape[-3], k.shape[-3])), causal)


class GroupedQueryAttention(nn.Module):
    """Llama's attention layer without rotary embeddings: H query heads in G groups.

    Parameters as Llama names and stores them (``nn.Linear``, weight [out, in]): q_proj D -> H*d,
    k_proj and v_proj D -> G*d, o_proj H*d -> D. ``forward(x, cache)`` appends the new keys and
    values to a ``KVCache`` of 02 with G heads and attends over everything cached.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, bias: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        _group_size(n_heads, n_kv_heads)
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, n, self.head_dim).transpose(1, 2)  # [B, n, T, d]

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """x [B, T_new, D] -> [B, T_new, D]; with a cache, the new tokens follow the cached ones."""
        q = self._heads(self.q_proj(x), self.n_heads)  # [B, H, T_new, d]
        k = self._heads(self.k_proj(x), self.n_kv_heads)  # [B, G, T_new, d]
        v = self._heads(self.v_proj(x), self.n_kv_heads)  # [B, G, T_new, d]
        if cache is not None:
            k, v = cache.update(k, v)  # [B, G, T_cached, d]
        y = gqa_attention(q, k, v, causal=True)  # [B, H, T_new, d]
        batch, _, length, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))  # [B, T_new, H*d] -> [B, T_new, D]


def kv_projection_params(d_model: int, n_heads: int, n_kv_heads: int, bias: bool = False) -> int:
    """Parameters of k_proj and v_proj together: 2 x (D x G*d, + G*d with biases)."""
    kv_width = n_kv_heads * (d_model // n_heads)
    return 2 * (d_model * kv_width + (kv_width if bias else 0))


def mha_to_gqa(mha: GroupedQueryAttention, n_kv_heads: int) -> GroupedQueryAttention:
    """A G-group layer from a multi-head one: each group's key and value projection heads are the
    mean of the H / G heads it replaces (Ainslie et al., 2023); queries and output are copied."""
    n_heads, head_dim = mha.n_heads, mha.head_dim
    if mha.n_kv_heads != n_heads:
        raise ValueError(f"expected a multi-head layer (n_kv_heads == n_heads), got {mha.n_kv_heads} and {n_heads}")
    per_group = _group_size(n_heads, n_kv_heads)
    bias = mha.q_proj.bias is not None
    gqa = GroupedQueryAttention(mha.q_proj.in_features, n_heads, n_kv_heads, bias=bias)
    gqa.to(device=mha.q_proj.weight.device, dtype=mha.q_proj.weight.dtype)
    state = {name: t.clone() for name, t in mha.state_dict().items()}
    for proj in ("k_proj", "v_proj"):
        weight = state[f"{proj}.weight"].view(n_kv_heads, per_group, head_dim, -1)  # [G, H/G, d, D]
        state[f"{proj}.weight"] = weight.mean(dim=1).reshape(n_kv_heads * head_dim, -1)  # [G*d, D]
        if bias:
            state[f"{proj}.bias"] = state[f"{proj}.bias"].view(n_kv_heads, per_group, head_dim).mean(dim=1).flatten()
    gqa.load_state_dict(state)
    return gqa


def from_gpt2_attention(c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads: int) -> GroupedQueryAttention:
    """GPT-2's attention layer (``Conv1D`` weights [in, out], q|k|v in one) as a multi-head
    ``GroupedQueryAttention`` with biases: the starting point of an MHA -> GQA conversion."""
    width = c_attn_weight.shape[0]
    layer = GroupedQueryAttention(width, n_heads, n_heads, bias=True).to(device=c_attn_weight.device, dtype=c_attn_weight.dtype)
    with torch.no_grad():
        for proj, weight, bias in zip((layer.q_proj, layer.k_proj, layer.v_proj), c_attn_weight.split(width, dim=1),
                                      c_attn_bias.split(width)):
            proj.weight.copy_(weight.T)  # Conv1D [in, out] -> Linear [out, in]
            proj.bias.copy_(bias)
        layer.o_proj.weight.copy_(c_proj_weight.T)
        layer.o_proj.bias.copy_(c_proj_bias)
    return layer
