"""Reference solutions of 07_latent_and_paged: multi-head latent attention (DeepSeek-V2, 2024) and a
paged KV cache (Kwon et al., 2023, vLLM's PagedAttention).

MLA caches, per token and layer, one latent vector of width ``kv_lora_rank`` (shared by every head's
keys and values, which ``kv_b_proj`` reconstructs from it) and one small rotary key of width
``qk_rope_head_dim`` shared by the heads. Rotary embeddings cannot go through the latent (a
position-dependent rotation does not commute with the up-projection, so the projection could not be
absorbed), hence the decoupled rotary part. Rotary here is Llama's and Hugging Face's rotate-half
pairing (dimension i with i + dim/2); 06_long_context teaches it, and the lead may merge the two.

A paged cache keeps keys and values in a pool of fixed-size blocks, [n_blocks, block_size, G, d]
(the layout of FlashAttention's and ``torch.nn.attention.varlen.varlen_attn``'s paged pool); a
sequence owns a list of blocks, its block table, which grows by one block whenever its last block is
full, and goes back to the pool when the sequence finishes.
"""

import math

import torch
from torch import nn

from attention_course.kernels.causal import causal_mask


# ----------------------------------------------------------------------------------------------
# Rotary embeddings (rotate-half pairing, as Llama and Hugging Face's DeepseekV3 with rope_interleave=False)
# ----------------------------------------------------------------------------------------------


def rotary_cos_sin(positions: torch.Tensor, dim: int, theta: float = 10000.0, dtype=torch.float32):
    """cos, sin [T, dim] for integer positions [T]: frequency theta^(-2i/dim) for the pair (i, i + dim/2)."""
    inv_freq = theta ** -(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)  # [dim/2]
    angles = positions.to(torch.float64)[:, None] * inv_freq  # [T, dim/2]
    angles = torch.cat((angles, angles), dim=-1)  # [T, dim]: dimension i and i + dim/2 share a frequency
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., T, dim] rotated by position: x cos + rotate_half(x) sin."""
    return x * cos + rotate_half(x) * sin


# ----------------------------------------------------------------------------------------------
# Multi-head latent attention
# ----------------------------------------------------------------------------------------------


def mla_cache_bytes(batch_size: int, n_layers: int, kv_lora_rank: int, qk_rope_head_dim: int, seq_len: int,
                    bytes_per_element: int) -> int:
    """batch x layers x (latent + rotary key) x seq_len x bytes: one latent serves keys and values of every head."""
    return batch_size * n_layers * (kv_lora_rank + qk_rope_head_dim) * seq_len * bytes_per_element


class LatentCache:
    """MLA's cache of one layer: the latent [B, max_len, kv_lora_rank] and the rotary key [B, max_len, qk_rope_head_dim]."""

    def __init__(self, batch_size: int, kv_lora_rank: int, qk_rope_head_dim: int, max_len: int, dtype=torch.float32,
                 device=None):
        self.latent = torch.zeros(batch_size, max_len, kv_lora_rank, dtype=dtype, device=device)
        self.k_rot = torch.zeros(batch_size, max_len, qk_rope_head_dim, dtype=dtype, device=device)
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def update(self, latent_new: torch.Tensor, k_rot_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append [B, T_new, r] latents and [B, T_new, dr] rotary keys; return the cached [B, len, .] views."""
        batch, max_len, rank = self.latent.shape
        expected = [(batch, latent_new.shape[1], rank), (batch, latent_new.shape[1], self.k_rot.shape[-1])]
        if [tuple(latent_new.shape), tuple(k_rot_new.shape)] != expected:
            raise ValueError(f"latent {tuple(latent_new.shape)} and rotary key {tuple(k_rot_new.shape)}: expected {expected}")
        end = self.length + latent_new.shape[1]
        if end > max_len:
            raise ValueError(f"the cache is full: {self.length} cached + {latent_new.shape[1]} new > max_len {max_len}")
        self.latent[:, self.length : end] = latent_new
        self.k_rot[:, self.length : end] = k_rot_new
        self.length = end
        return self.latent[:, :end], self.k_rot[:, :end]


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2/V3's attention layer with Hugging Face's ``DeepseekV3Attention`` parameter names and layouts.

    Queries: ``q_proj`` D -> H*(dn+dr), or with ``q_lora_rank`` a low-rank ``q_a_proj`` -> ``q_a_layernorm`` ->
    ``q_b_proj``. Keys and values: ``kv_a_proj_with_mqa`` D -> r + dr (the latent and the shared rotary key),
    ``kv_a_layernorm`` on the latent, ``kv_b_proj`` r -> H*(dn+dv) (per head: dn key rows, then dv value rows).
    Scores are scaled by 1/sqrt(dn + dr). ``forward(x, cache, absorbed)``: the new tokens take the positions after
    those cached; ``absorbed=True`` attends in the latent space, with no per-head keys or values.
    """

    def __init__(self, d_model: int, n_heads: int, kv_lora_rank: int, qk_nope_head_dim: int, qk_rope_head_dim: int,
                 v_head_dim: int, q_lora_rank: int | None = None, rope_theta: float = 10000.0, eps: float = 1e-6):
        super().__init__()
        if qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim={qk_rope_head_dim} must be even: rotary embeddings rotate pairs")
        self.n_heads, self.kv_lora_rank, self.q_lora_rank = n_heads, kv_lora_rank, q_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.rope_theta = rope_theta
        qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
        if q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, n_heads * qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(d_model, q_lora_rank, bias=False)
            self.q_a_layernorm = nn.RMSNorm(q_lora_rank, eps=eps)
            self.q_b_proj = nn.Linear(q_lora_rank, n_heads * qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d_model, kv_lora_rank + qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = nn.RMSNorm(kv_lora_rank, eps=eps)
        self.kv_b_proj = nn.Linear(kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = nn.Linear(n_heads * v_head_dim, d_model, bias=False)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x) if self.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        return q.view(batch, length, self.n_heads, -1).transpose(1, 2)  # [B, H, T, dn+dr]

    def latents(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What MLA caches for x [B, T, D] at positions start..: the normalized latent [B, T, r] and the rotated key [B, T, dr]."""
        latent, k_rot = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        cos, sin = self._rotary(start, x.shape[1], x)
        return self.kv_a_layernorm(latent), apply_rotary(k_rot, cos, sin)

    def _rotary(self, start: int, length: int, x: torch.Tensor):
        positions = torch.arange(start, start + length, device=x.device)
        return rotary_cos_sin(positions, self.qk_rope_head_dim, self.rope_theta, dtype=x.dtype)

    def forward(self, x: torch.Tensor, cache: LatentCache | None = None, absorbed: bool = False) -> torch.Tensor:
        """x [B, T_new, D] -> [B, T_new, D]; with a cache, the new tokens follow the cached ones."""
        batch, length, _ = x.shape
        start = len(cache) if cache is not None else 0
        q_nope, q_rot = self._queries(x).split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        cos, sin = self._rotary(start, length, x)
        q_rot = apply_rotary(q_rot, cos, sin)  # [B, H, T_new, dr]
        latent, k_rot = self.latents(x, start)  # [B, T_new, r], [B, T_new, dr]
        if cache is not None:
            latent, k_rot = cache.update(latent, k_rot)  # [B, T_cached, r], [B, T_cached, dr]
        attend = self._absorbed if absorbed else self._plain
        y = attend(q_nope, q_rot, latent, k_rot)  # [B, H, T_new, dv]
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))  # [B, T_new, H*dv] -> [B, T_new, D]

    def _scale(self) -> float:
        return (self.qk_nope_head_dim + self.qk_rope_head_dim) ** -0.5

    def _masked_softmax(self, scores: torch.Tensor, dtype) -> torch.Tensor:
        n_queries, n_keys = scores.shape[-2:]
        scores = scores.masked_fill(~causal_mask(n_queries, n_keys, device=scores.device), float("-inf"))
        return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(dtype)

    def _plain(self, q_nope, q_rot, latent, k_rot) -> torch.Tensor:
        """Per-head keys and values up-projected from the latent: [B, H, Tk, dn] and [B, H, Tk, dv]."""
        batch, n_keys, _ = latent.shape
        kv = self.kv_b_proj(latent).view(batch, n_keys, self.n_heads, -1).transpose(1, 2)  # [B, H, Tk, dn+dv]
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        scores = q_nope @ k_nope.transpose(-2, -1)  # [B, H, Tq, Tk]
        scores = scores + self._rows_against_shared(q_rot, k_rot)
        return self._masked_softmax(scores * self._scale(), v.dtype) @ v  # [B, H, Tq, dv]

    @staticmethod
    def _rows_against_shared(q: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """q [B, H, Tq, e] against one key tensor shared by the heads, [B, Tk, e] -> [B, H, Tq, Tk], without an
        H-fold copy of it: the heads' queries are the rows of one product (torch.matmul would copy a broadcast key)."""
        batch, n_heads, n_queries, width = q.shape
        rows = q.reshape(batch, n_heads * n_queries, width)  # [B, H*Tq, e]
        return (rows @ shared.transpose(-2, -1)).view(batch, n_heads, n_queries, -1)  # [B, H, Tq, Tk]

    def _absorbed(self, q_nope, q_rot, latent, k_rot) -> torch.Tensor:
        """Attention in the latent space: score = (W_UK^T q_nope) . latent + q_rot . k_rot; out = W_UV (weights @ latent).

        Per head h, kv_b_proj holds W_UK [dn, r] then W_UV [dv, r]; k_nope = W_UK latent, so
        q_nope . k_nope = (q_nope W_UK) . latent: the query is projected into the latent space once per step,
        instead of every cached latent being projected up to H keys and values.
        """
        weight = self.kv_b_proj.weight.view(self.n_heads, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank)
        w_uk, w_uv = weight.split([self.qk_nope_head_dim, self.v_head_dim], dim=1)  # [H, dn, r], [H, dv, r]
        q_latent = q_nope @ w_uk  # [B, H, Tq, dn] @ [H, dn, r] -> [B, H, Tq, r]
        scores = self._rows_against_shared(q_latent, latent) + self._rows_against_shared(q_rot, k_rot)  # [B, H, Tq, Tk]
        weights = self._masked_softmax(scores * self._scale(), latent.dtype)  # [B, H, Tq, Tk]
        batch, n_heads, n_queries, n_keys = weights.shape
        out_latent = (weights.reshape(batch, n_heads * n_queries, n_keys) @ latent).view(batch, n_heads, n_queries, -1)  # [B, H, Tq, r]
        return out_latent @ w_uv.transpose(-2, -1)  # [B, H, Tq, r] @ [H, r, dv] -> [B, H, Tq, dv]


# ----------------------------------------------------------------------------------------------
# Paged KV cache
# ----------------------------------------------------------------------------------------------


class PagedKVCache:
    """Keys and values of many sequences in one pool of blocks: ``keys``, ``values`` [n_blocks, block_size, G, d].

    ``block_tables[seq_id]`` lists the blocks of a sequence in order (position p is in block
    ``block_tables[seq_id][p // block_size]``, slot ``p % block_size``); ``lengths[seq_id]`` its cached tokens.
    Blocks are taken from the free list when a sequence's last block is full, and go back on ``free``.
    """

    def __init__(self, n_blocks: int, block_size: int, n_kv_heads: int, head_dim: int, dtype=torch.float32, device=None):
        shape = (n_blocks, block_size, n_kv_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.free_blocks = list(range(n_blocks))
        self.block_tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    @property
    def n_free_blocks(self) -> int:
        return len(self.free_blocks)

    def allocate(self, seq_id: int) -> None:
        """Register a new sequence with no tokens (and no blocks yet)."""
        if seq_id in self.block_tables:
            raise ValueError(f"sequence {seq_id} is already in the cache")
        self.block_tables[seq_id], self.lengths[seq_id] = [], 0

    def append(self, seq_id: int, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Append [T_new, G, d] keys and values to a sequence, taking blocks from the pool as its last one fills."""
        if seq_id not in self.block_tables:
            raise ValueError(f"sequence {seq_id} was not allocated")
        if k_new.shape != v_new.shape or tuple(k_new.shape[1:]) != tuple(self.keys.shape[2:]):
            raise ValueError(f"new keys {tuple(k_new.shape)} and values {tuple(v_new.shape)}: expected [T_new, G, d] with "
                             f"(G, d) = {tuple(self.keys.shape[2:])}")
        table, start = self.block_tables[seq_id], self.lengths[seq_id]
        end = start + k_new.shape[0]
        needed = math.ceil(end / self.block_size) - len(table)
        if needed > self.n_free_blocks:
            raise ValueError(f"out of blocks: sequence {seq_id} needs {needed} more, {self.n_free_blocks} are free")
        table += [self.free_blocks.pop(0) for _ in range(needed)]
        positions = torch.arange(start, end, device=self.keys.device)
        blocks = torch.tensor(table, device=self.keys.device)[positions // self.block_size]  # [T_new]: each token's block
        slots = positions % self.block_size  # [T_new]: its place in the block
        self.keys[blocks, slots] = k_new
        self.values[blocks, slots] = v_new
        self.lengths[seq_id] = end

    def free(self, seq_id: int) -> None:
        """A finished sequence: its blocks go back to the pool."""
        if seq_id not in self.block_tables:
            raise ValueError(f"sequence {seq_id} is not in the cache")
        self.free_blocks += self.block_tables.pop(seq_id)
        del self.lengths[seq_id]

    def gather(self, seq_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence's keys and values in order, [G, T, d] each (a copy: for checks and for the contiguous oracle)."""
        keys, values = _through_block_table(self, seq_id)
        return keys.transpose(0, 1), values.transpose(0, 1)


def _through_block_table(cache: PagedKVCache, seq_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    table = torch.tensor(cache.block_tables[seq_id], dtype=torch.long, device=cache.keys.device)
    length = cache.lengths[seq_id]
    keys = cache.keys[table].flatten(0, 1)[:length]  # [n_blocks_of_seq, block_size, G, d] -> [T, G, d]
    values = cache.values[table].flatten(0, 1)[:length]
    return keys, values


def paged_attention(q: torch.Tensor, cache: PagedKVCache, seq_id: int) -> torch.Tensor:
    """q [H, Tq, d], the last Tq positions of sequence ``seq_id``, against its keys read through its block table -> [H, Tq, d]."""
    keys, values = _through_block_table(cache, seq_id)  # [T, G, d]
    n_heads, n_queries, head_dim = q.shape
    n_keys, n_kv_heads, _ = keys.shape
    if n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot be shared equally by {n_kv_heads} key/value heads")
    if n_queries > n_keys:
        raise ValueError(f"{n_queries} queries but sequence {seq_id} has only {n_keys} cached positions")
    rows = q.reshape(n_kv_heads, (n_heads // n_kv_heads) * n_queries, head_dim)  # [G, (H/G)*Tq, d]: a group's queries
    scores = (rows @ keys.permute(1, 2, 0)).view(n_heads, n_queries, n_keys) * head_dim**-0.5  # [H, Tq, T]
    scores = scores.masked_fill(~causal_mask(n_queries, n_keys, device=q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(values.dtype)
    y = weights.view(n_kv_heads, -1, n_keys) @ values.transpose(0, 1)  # [G, (H/G)*Tq, d]
    return y.view(n_heads, n_queries, head_dim)  # [H, Tq, d]


def blocks_needed(lengths, block_size: int) -> int:
    """Blocks a paged cache holds for sequences of these lengths: each rounds up to whole blocks."""
    return sum(math.ceil(length / block_size) for length in lengths)
