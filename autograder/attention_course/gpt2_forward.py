"""A small GPT-2 forward pass on Hugging Face GPT-2 weights, with the attention layer plugged in.

The KV-cache assignment and lesson build it on the learner's own cached attention and cache:

    model = GPT2Decoder(hf_model, cached_gpt2_attention, KVCache)
    caches = model.new_caches(batch_size=1, max_len=T + n_new)
    logits = model(prompt_ids, caches)      # prefill: [B, T, vocab]
    logits = model(next_id, caches)         # one decode step: [B, 1, vocab]
    logits = model(all_ids)                 # no cache: the whole sequence again

Everything but attention (embeddings, layer norms, MLP, tied output head) is written out here,
from the same weights as ``GPT2LMHeadModel``, so greedy tokens equal Hugging Face ``generate``.

**Positions.** GPT-2 adds a learned position embedding to each token. With caches, the new tokens
follow the ``len(caches[0])`` cached ones, so their positions start there: ``GPT2Decoder`` does this
for the learner (``offset_positions=False`` restarts them at 0, the classic cache bug, for the
lesson to show what it breaks).

**FLOPs.** ``gpt2_block`` builds one GPT-2 block (random weights, eager attention) and
``count_flops`` counts, with ``torch.utils.flop_counter.FlopCounterMode``, what one pass through it
computes, split into the projections and MLP (products with the weights) and attention (q k^T and
weights x v). The lesson and the quiz take their FLOP numbers from it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class GPT2Decoder:
    """GPT-2 (``GPT2LMHeadModel`` weights) whose attention layers call ``attention_fn``.

    ``attention_fn(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache)``
    is the contract's ``cached_gpt2_attention``; ``cache_class`` the contract's ``KVCache`` (both
    default to the reference solutions of 02, imported when used: the harvest kernel ships this
    module without them, and always passes its own).
    """

    def __init__(self, hf_model, attention_fn: Callable | None = None, cache_class=None,
                 offset_positions: bool = True):
        if attention_fn is None or cache_class is None:
            from attention_course.kernels import kv_cache

            attention_fn = attention_fn or kv_cache.cached_gpt2_attention
            cache_class = cache_class or kv_cache.KVCache
        self.hf_model = hf_model
        self.offset_positions = offset_positions  # False: every call's positions restart at 0 (a bug, for the lesson)
        self.config = hf_model.config
        self.attention_fn = attention_fn
        self.cache_class = cache_class
        self.n_heads = self.config.n_head
        self.head_dim = self.config.n_embd // self.n_heads

    @property
    def device(self) -> torch.device:
        return self.hf_model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf_model.lm_head.weight.dtype

    def new_caches(self, batch_size: int, max_len: int) -> list:
        """One empty cache per layer, room for ``max_len`` positions."""
        return [
            self.cache_class(batch_size, self.n_heads, self.head_dim, max_len, dtype=self.dtype, device=self.device)
            for _ in range(self.config.n_layer)
        ]

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, caches: list | None = None) -> torch.Tensor:
        """Logits [B, T_in, vocab] for the new tokens ``input_ids`` [B, T_in].

        With ``caches`` the new tokens follow the ``len(caches[0])`` cached ones, and so do their
        positions (``len(caches[0])``, ``len(caches[0]) + 1``, ...); without, they are the whole
        sequence, at positions 0, 1, ... (each call then starts from fresh caches, recomputing everything).
        """
        if caches is None:
            caches = self.new_caches(input_ids.shape[0], input_ids.shape[1])
        cached = len(caches[0])
        if cached + input_ids.shape[1] > self.config.n_positions:
            raise ValueError(f"{cached} cached + {input_ids.shape[1]} new tokens > GPT-2's {self.config.n_positions} positions")
        transformer = self.hf_model.transformer
        start = cached if self.offset_positions else 0  # the new tokens' positions: after the cached ones
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)  # [T_in]
        h = transformer.wte(input_ids) + transformer.wpe(positions)  # [B, T_in, D]
        for block, cache in zip(transformer.h, caches):
            h = block_forward(block, h, cache, self.attention_fn, self.n_heads, self.config.layer_norm_epsilon)
        h = F.layer_norm(h, h.shape[-1:], transformer.ln_f.weight, transformer.ln_f.bias, self.config.layer_norm_epsilon)
        return self.hf_model.lm_head(h)  # [B, T_in, vocab]


def block_forward(block, h: torch.Tensor, cache, attention_fn: Callable | None = None, n_heads: int | None = None,
                  eps: float = 1e-5) -> torch.Tensor:
    """One GPT-2 block (a ``GPT2Block``'s weights) on the new tokens' hidden states h [B, T_in, D]
    -> [B, T_in, D]: attention through ``attention_fn`` (default: 02's reference) over ``cache``, then the MLP."""
    if attention_fn is None:
        from attention_course.kernels.kv_cache import cached_gpt2_attention as attention_fn
    n_heads = n_heads or block.attn.num_heads
    x = F.layer_norm(h, h.shape[-1:], block.ln_1.weight, block.ln_1.bias, eps)
    attn = block.attn
    h = h + attention_fn(x, attn.c_attn.weight, attn.c_attn.bias, attn.c_proj.weight, attn.c_proj.bias, n_heads, cache)
    x = F.layer_norm(h, h.shape[-1:], block.ln_2.weight, block.ln_2.bias, eps)
    mlp = block.mlp
    x = F.gelu(x @ mlp.c_fc.weight + mlp.c_fc.bias, approximate="tanh")  # GPT-2's "gelu_new"
    return h + x @ mlp.c_proj.weight + mlp.c_proj.bias


# ------------------------------------------------------------------------------------------------
# FLOPs of one block, counted by PyTorch's FlopCounterMode
# ------------------------------------------------------------------------------------------------

LINEAR_OPS = ("aten.mm", "aten.addmm")  # x @ W (+ b): c_attn, c_proj, mlp.c_fc, mlp.c_proj
ATTENTION_OPS = ("aten.bmm", "aten.baddbmm")  # q @ k^T and weights @ v, per head


@dataclass(frozen=True)
class BlockFlops:
    """FLOPs (2 per multiply-add) of one pass through one GPT-2 block, as FlopCounterMode counts them."""

    projections_mlp: int  # the products with the weights: c_attn, c_proj, the MLP's c_fc and c_proj
    attention: int  # q k^T and weights x v, every head

    @property
    def total(self) -> int:
        return self.projections_mlp + self.attention


def gpt2_block(d_model: int = 768, n_heads: int = 12, device=None, seed: int = 0):
    """One Hugging Face ``GPT2Block`` of width d_model (GPT-2 small's by default), random weights,
    eager attention (FlopCounterMode has no formula for the fused CPU attention kernel: it would count 0)."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    from attention_course.hf_compat import use_eager_attention

    config = GPT2Config(n_embd=d_model, n_head=n_heads, n_layer=1, n_positions=1024)
    use_eager_attention(config)
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        return GPT2Block(config).eval()


def _split(counter) -> BlockFlops:
    counts = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    unknown = set(counts) - set(LINEAR_OPS) - set(ATTENTION_OPS)
    if unknown:
        raise RuntimeError(f"FlopCounterMode counted ops that are neither projections nor attention: {sorted(unknown)}")
    return BlockFlops(sum(counts.get(op, 0) for op in LINEAR_OPS), sum(counts.get(op, 0) for op in ATTENTION_OPS))


@torch.no_grad()
def count_flops(block, n_new: int, n_cached: int = 0, batch_size: int = 1, hugging_face: bool = False) -> BlockFlops:
    """FLOPs of one pass of ``n_new`` tokens through ``block`` after ``n_cached`` cached ones.

    ``n_cached = 0``: an uncached pass over the whole sequence; ``n_new = 1``: one decode step with a
    KV cache. The pass runs through ``block_forward`` (the course's cached attention); with
    ``hugging_face=True`` through the ``GPT2Block``'s own forward instead (uncached passes only)."""
    from torch.utils.flop_counter import FlopCounterMode

    from attention_course.kernels.kv_cache import KVCache, cached_gpt2_attention

    weight = block.attn.c_attn.weight
    d_model, n_heads = weight.shape[0], block.attn.num_heads
    h = torch.randn(batch_size, n_new, d_model, device=weight.device, dtype=weight.dtype)
    if hugging_face:
        if n_cached:
            raise ValueError("hugging_face=True counts uncached passes only (n_cached = 0)")
        with FlopCounterMode(display=False) as counter:
            block(h)
        return _split(counter)
    cache = KVCache(batch_size, n_heads, d_model // n_heads, n_cached + n_new, dtype=weight.dtype, device=weight.device)
    if n_cached:
        past = torch.randn(batch_size, n_heads, n_cached, d_model // n_heads, device=weight.device, dtype=weight.dtype)
        cache.update(past, past)
    with FlopCounterMode(display=False) as counter:
        block_forward(block, h, cache, cached_gpt2_attention, n_heads)
    return _split(counter)


@torch.no_grad()
def count_decode_flops(block, n_tokens: int) -> list[BlockFlops]:
    """FLOPs of each of ``n_tokens`` one-token steps through ``block`` with one KV cache, from an
    empty cache: step t (0-based) attends over t + 1 keys. Their sum is the work of the query-key
    pairs the causal mask allows, and nothing of the masked ones."""
    from torch.utils.flop_counter import FlopCounterMode

    from attention_course.kernels.kv_cache import KVCache, cached_gpt2_attention

    weight = block.attn.c_attn.weight
    d_model, n_heads = weight.shape[0], block.attn.num_heads
    cache = KVCache(1, n_heads, d_model // n_heads, n_tokens, dtype=weight.dtype, device=weight.device)
    steps = []
    for _ in range(n_tokens):
        h = torch.randn(1, 1, d_model, device=weight.device, dtype=weight.dtype)
        with FlopCounterMode(display=False) as counter:
            block_forward(block, h, cache, cached_gpt2_attention, n_heads)
        steps.append(_split(counter))
    return steps


def hf_greedy(hf_model, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    """Hugging Face ``generate(do_sample=False)``: exactly ``max_new_tokens`` new tokens (no stop at
    end-of-text, which would end a random model's text early), [B, T + max_new_tokens]. No stop is an
    empty list of end tokens: ``None`` means "the model's own" to generate in transformers 5 (a row that
    greedily reached end-of-text was then padded)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        eos_token_id=[],
        pad_token_id=hf_model.config.eos_token_id,
    )
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        return hf_model.generate(input_ids, attention_mask=attention_mask, generation_config=config)
