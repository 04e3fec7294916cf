"""A small GPT-2 forward pass on Hugging Face GPT-2 weights, with the attention layer plugged in.

The KV-cache assignment and lesson build it on the learner's own cached attention and cache:

    model = GPT2Decoder(hf_model, cached_gpt2_attention, KVCache)
    caches = model.new_caches(batch_size=1, max_len=T + n_new)
    logits = model(prompt_ids, caches)      # prefill: [B, T, vocab]
    logits = model(next_id, caches)         # one decode step: [B, 1, vocab]
    logits = model(all_ids)                 # no cache: the whole sequence again

Everything but attention (embeddings, layer norms, MLP, tied output head) is written out here,
from the same weights as ``GPT2LMHeadModel``, so greedy tokens equal Hugging Face ``generate``.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attention_course.kernels.kv_cache import KVCache, cached_gpt2_attention


class GPT2Decoder:
    """GPT-2 (``GPT2LMHeadModel`` weights) whose attention layers call ``attention_fn``.

    ``attention_fn(x_new, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_heads, cache)``
    is the contract's ``cached_gpt2_attention``; ``cache_class`` the contract's ``KVCache``.
    """

    def __init__(self, hf_model, attention_fn: Callable = cached_gpt2_attention, cache_class=KVCache):
        self.hf_model = hf_model
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

        With ``caches`` the new tokens follow the ``len(caches[0])`` cached ones; without, they are
        the whole sequence (each call then starts from fresh caches, recomputing everything).
        """
        if caches is None:
            caches = self.new_caches(input_ids.shape[0], input_ids.shape[1])
        start = len(caches[0])
        if start + input_ids.shape[1] > self.config.n_positions:
            raise ValueError(f"{start} cached + {input_ids.shape[1]} new tokens > GPT-2's {self.config.n_positions} positions")
        transformer, eps = self.hf_model.transformer, self.config.layer_norm_epsilon
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)  # [T_in]
        h = transformer.wte(input_ids) + transformer.wpe(positions)  # [B, T_in, D]
        for block, cache in zip(transformer.h, caches):
            x = F.layer_norm(h, h.shape[-1:], block.ln_1.weight, block.ln_1.bias, eps)
            attn = block.attn
            h = h + self.attention_fn(
                x, attn.c_attn.weight, attn.c_attn.bias, attn.c_proj.weight, attn.c_proj.bias, self.n_heads, cache
            )
            x = F.layer_norm(h, h.shape[-1:], block.ln_2.weight, block.ln_2.bias, eps)
            mlp = block.mlp
            x = F.gelu(x @ mlp.c_fc.weight + mlp.c_fc.bias, approximate="tanh")  # GPT-2's "gelu_new"
            h = h + x @ mlp.c_proj.weight + mlp.c_proj.bias
        h = F.layer_norm(h, h.shape[-1:], transformer.ln_f.weight, transformer.ln_f.bias, eps)
        return self.hf_model.lm_head(h)  # [B, T_in, vocab]


def hf_greedy(hf_model, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    """Hugging Face ``generate(do_sample=False)``: exactly ``max_new_tokens`` new tokens (no stop at
    end-of-text, which would end a random model's text early), [B, T + max_new_tokens]."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        eos_token_id=None,
        pad_token_id=hf_model.config.eos_token_id,
    )
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        return hf_model.generate(input_ids, attention_mask=attention_mask, generation_config=config)
