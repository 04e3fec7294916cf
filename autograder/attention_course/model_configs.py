"""Published configurations of the models the course talks about, and what they imply, measured on
real Hugging Face modules built on the ``meta`` device (shapes only: no weights, no memory).

Each configuration copies the model's ``config.json`` on the Hugging Face hub (the repository is
named in its docstring); quiz keys and plots are computed from modules built with them, never typed.
"""

import torch

GPT2_SIZES = {  # openai-community/gpt2, gpt2-medium, gpt2-large, gpt2-xl: (n_layer, n_head, n_embd)
    "GPT-2 small": (12, 12, 768),
    "GPT-2 medium": (24, 16, 1024),
    "GPT-2 large": (36, 20, 1280),
    "GPT-2 XL": (48, 25, 1600),
}


def gpt2_config(name: str = "GPT-2 small"):
    from transformers import GPT2Config

    n_layer, n_head, n_embd = GPT2_SIZES[name]
    return GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=1024, vocab_size=50257)


def llama2_7b_config():
    """meta-llama/Llama-2-7b-hf: MHA, 32 key/value heads."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=4096)


def llama2_70b_config():
    """meta-llama/Llama-2-70b-hf: GQA, 64 query heads in 8 groups."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096)


def llama3_8b_config():
    """meta-llama/Meta-Llama-3-8B: GQA, 32 query heads in 8 groups."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
                       rope_theta=500000.0)


def mistral_7b_config():
    """mistralai/Mistral-7B-v0.1: GQA, 32 query heads in 8 groups, a 4096-token sliding window."""
    from transformers import MistralConfig

    return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                         sliding_window=4096)


def falcon_7b_config():
    """tiiuae/falcon-7b: MQA, 71 query heads sharing one key/value head."""
    from transformers import FalconConfig

    return FalconConfig(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                        multi_query=True, new_decoder_architecture=False, parallel_attn=True, bias=False,
                        alibi=False)


def llama31_405b_config():
    """meta-llama/Llama-3.1-405B: GQA, 128 query heads in 8 groups (the Llama nearest DeepSeek-V3's size)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=16384, intermediate_size=53248, num_hidden_layers=126,
                       num_attention_heads=128, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                       rope_theta=500000.0)


def _deepseek_config(**published):
    """The attention of DeepSeek-V2 and -V3 is one module, multi-head latent attention (Hugging Face's
    ``DeepseekV3Attention``; its docstring says so): both are built as ``DeepseekV3Config`` with the published
    attention fields. Rotary pairing and scaling do not change any shape, so they are left at their defaults."""
    from transformers import DeepseekV3Config

    return DeepseekV3Config(num_key_value_heads=published["num_attention_heads"], **published)


def deepseek_v2_config():
    """deepseek-ai/DeepSeek-V2 (236B parameters, 21B active): 60 layers, 128 heads, width 5120, a 512-wide latent
    and a 64-wide rotary key; queries through a 1536-wide low-rank projection."""
    return _deepseek_config(vocab_size=102400, hidden_size=5120, num_hidden_layers=60, num_attention_heads=128,
                            kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                            intermediate_size=12288, moe_intermediate_size=1536, n_routed_experts=160, n_shared_experts=2,
                            num_experts_per_tok=6, first_k_dense_replace=1)


def deepseek_v3_config():
    """deepseek-ai/DeepSeek-V3 (671B parameters, 37B active): 61 layers, 128 heads, width 7168, the same
    512 + 64 cached numbers per token and layer as V2."""
    return _deepseek_config(vocab_size=129280, hidden_size=7168, num_hidden_layers=61, num_attention_heads=128,
                            kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                            intermediate_size=18432, moe_intermediate_size=2048, n_routed_experts=256, n_shared_experts=1,
                            num_experts_per_tok=8, first_k_dense_replace=3)


def meta_deepseek_attention(config):
    """One real Hugging Face ``DeepseekV3Attention`` of ``config`` on the ``meta`` device (shapes only)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    with torch.device("meta"):
        return DeepseekV3Attention(config, layer_idx=0)


def mla_cache_numbers_per_token(config) -> int:
    """Numbers MLA caches per token and layer, read off a real layer: the width of ``kv_a_proj_with_mqa``'s output,
    the latent and the rotary key (all that the keys and values of every head are rebuilt from)."""
    return meta_deepseek_attention(config).kv_a_proj_with_mqa.out_features


def mla_cache_bytes_of(config, batch_size: int, seq_len: int, bytes_per_element: int) -> int:
    """Bytes of a DeepSeek model's latent cache: per token and layer, what ``mla_cache_numbers_per_token`` counts."""
    return batch_size * config.num_hidden_layers * mla_cache_numbers_per_token(config) * seq_len * bytes_per_element


def mla_up_projected_numbers_per_token(config) -> int:
    """Numbers per token and layer if the keys and values rebuilt from the latent were cached instead (as
    transformers 4.56's ``DeepseekV3Attention`` does): H heads of dn + dr key and dv value numbers, read off ``kv_b_proj``."""
    layer = meta_deepseek_attention(config)
    n_heads = layer.kv_b_proj.out_features // (layer.qk_nope_head_dim + layer.v_head_dim)
    return layer.kv_b_proj.out_features + n_heads * layer.qk_rope_head_dim


PUBLISHED = {
    "GPT-2 small": gpt2_config,
    "Llama-2-7B": llama2_7b_config,
    "Llama-2-70B": llama2_70b_config,
    "Llama-3-8B": llama3_8b_config,
    "Mistral-7B": mistral_7b_config,
    "Falcon-7B": falcon_7b_config,
}
LLAMA_PEERS = {"Llama-2-70B": llama2_70b_config, "Llama-3.1-405B": llama31_405b_config}
"""The real models of the lessons' plots and the quizzes."""
LATENT = {"DeepSeek-V2": deepseek_v2_config, "DeepSeek-V3": deepseek_v3_config}
"""Models with multi-head latent attention (07), and the Llamas of similar size they are compared with."""
LATENT_PEERS = {"DeepSeek-V2": "Llama-2-70B", "DeepSeek-V3": "Llama-3.1-405B"}


def meta_model(config, dtype=torch.float32):
    """A Hugging Face causal LM with the config's shapes on the ``meta`` device: no weights, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config).to(dtype).eval()


def hf_cache_bytes(model, batch_size: int, seq_len: int) -> int:
    """Bytes held by the keys and values of a real Hugging Face cache after a forward pass over
    ``batch_size`` x ``seq_len`` tokens. On the ``meta`` device no memory is used, so big models count too."""
    from attention_course.hf_compat import cache_keys_values, forward_cache

    device = next(model.parameters()).device
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long, device=device)
    cache = forward_cache(model, ids)
    return sum(t.numel() * t.element_size() for kv in cache_keys_values(cache) for t in kv)


def attention_heads(config) -> tuple[int, int, int, int]:
    """(layers, query heads, key/value heads, head size) read off the first attention layer of a real
    module built from ``config``: what the model computes, whatever the config's field names."""
    model = meta_model(config)
    layers = [m for m in model.modules() if type(m).__name__.endswith("Attention")]
    first = layers[0]
    n_layers = len(layers)
    width = config.hidden_size
    if hasattr(first, "q_proj"):  # Llama, Mistral
        head_dim = first.head_dim
        return n_layers, first.q_proj.out_features // head_dim, first.k_proj.out_features // head_dim, head_dim
    if hasattr(first, "query_key_value"):  # Falcon: q, k and v in one projection
        head_dim = first.head_dim
        kv_width = first.query_key_value.out_features - width
        return n_layers, width // head_dim, kv_width // (2 * head_dim), head_dim
    n_head = first.num_heads  # GPT-2: q, k and v in c_attn, as many key/value heads as query heads
    return n_layers, n_head, n_head, width // n_head


def meta_llama_attention(d_model: int, n_heads: int, n_kv_heads: int, bias: bool = False):
    """A real Hugging Face ``LlamaAttention`` (the layer of Llama, Mistral, ...) with these shapes on
    the ``meta`` device: its parameters count what a layer of any size holds, with no memory."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention

    config = LlamaConfig(hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         head_dim=d_model // n_heads, attention_bias=bias)
    with torch.device("meta"):
        return LlamaAttention(config, layer_idx=0)


def projection_params(layer, *names: str) -> int:
    """Parameters (weights and biases) of the named projections of an attention layer."""
    return sum(p.numel() for name in names for p in getattr(layer, name).parameters())


def llama_cache_bytes(batch_size: int, n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, dtype) -> int:
    """Bytes of the cache a real Hugging Face Llama with these cache shapes returns after a forward
    pass (on the ``meta`` device, two query heads per key/value head, tiny vocabulary and MLP)."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=16, hidden_size=2 * n_kv_heads * head_dim, intermediate_size=16,
                         num_hidden_layers=n_layers, num_attention_heads=2 * n_kv_heads, num_key_value_heads=n_kv_heads,
                         head_dim=head_dim, max_position_embeddings=max(seq_len, 16))
    return hf_cache_bytes(meta_model(config, dtype), batch_size, seq_len)
