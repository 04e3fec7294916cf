"""Hugging Face transformers 4.56+ and 5.x differences, handled here and nowhere else."""

import contextlib
import inspect

import torch

EAGER = "eager"
"""``output_attentions`` needs the eager implementation: in 5.x the default (sdpa) silently returns None."""


def use_eager_attention(config) -> None:
    """Make a config build layers that can return attention weights."""
    config._attn_implementation = EAGER


def additive_causal_mask(n_queries: int, n_keys: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """A [1, 1, Tq, Tk] additive mask (0 = attend, dtype's minimum = blocked), bottom-right aligned.

    A ``GPT2Attention`` called on its own applies no causal mask in 5.x (inside ``GPT2Model`` the
    model builds it), so an oracle built from the bare layer must be handed one.
    """
    from attention_course.kernels.causal import causal_mask

    allowed = causal_mask(n_queries, n_keys, device=device)
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return blocked[None, None]  # [1, 1, Tq, Tk]


def random_gpt2_attention_layer(n_embd: int, n_head: int, generator: torch.Generator, scale: float = 0.3):
    """A bare Hugging Face ``GPT2Attention`` in float64 with every parameter drawn at random: fresh
    modules start with zero biases, and an oracle with zero biases cannot see a forgotten bias."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    config = GPT2Config(n_embd=n_embd, n_head=n_head, n_positions=64, attn_pdrop=0.0, resid_pdrop=0.0)
    use_eager_attention(config)
    layer = GPT2Attention(config, layer_idx=0).double().eval()
    return _randomized(layer, generator, scale)


def gpt2_attention_layer(weights: list[torch.Tensor], n_head: int):
    """A bare Hugging Face ``GPT2Attention`` in float64 with the given c_attn weight and bias, c_proj weight and bias."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    config = GPT2Config(n_embd=weights[0].shape[0], n_head=n_head, n_positions=64, attn_pdrop=0.0, resid_pdrop=0.0)
    use_eager_attention(config)
    layer = GPT2Attention(config, layer_idx=0).double().eval()
    with torch.no_grad():
        for parameter, weight in zip(layer.parameters(), weights, strict=True):
            parameter.copy_(weight)
    return layer


def _randomized(layer, generator: torch.Generator, scale: float):
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return layer


def gpt2_attention_layer_output(layer, x: torch.Tensor) -> torch.Tensor:
    """Causal self-attention output of a bare Hugging Face ``GPT2Attention`` on x [B, T, D]."""
    length = x.shape[1]
    mask = additive_causal_mask(length, length, x.dtype, x.device)
    return layer(x, attention_mask=mask)[0]


def forward_cache(model, input_ids: torch.Tensor, cache=None):
    """A forward pass with caching, continuing ``cache`` if given; the cache it returns. Its keyword
    and output field are ``cache`` in newer 5.x and ``past_key_values`` before. On the ``meta``
    device (shapes only, no memory) rotary embeddings give shape-only cos/sin: 4.56's open an
    autocast region, which ``meta`` does not support."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad(), _shape_only_rotary(model):
        output = model(input_ids, use_cache=True, **({} if cache is None else {name: cache}))
    return output["cache"] if "cache" in output else output["past_key_values"]


@contextlib.contextmanager
def _shape_only_rotary(model):
    rotary = [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding") and hasattr(m, "inv_freq")]
    if not rotary or rotary[0].inv_freq.device.type != "meta":
        yield
        return

    def shape_only(module):
        def forward(x, position_ids):
            shape = (*position_ids.shape, 2 * module.inv_freq.shape[0])
            ones = torch.ones(shape, dtype=x.dtype, device=x.device)
            return ones, ones

        return forward

    for module in rotary:
        module.forward = shape_only(module)
    try:
        yield
    finally:
        for module in rotary:
            del module.forward


def cache_keys_values(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(keys, values)] per layer, each [B, G, T, d], from any cache a forward pass returns."""
    if hasattr(cache, "layers"):  # DynamicCache with per-layer objects (4.56+, 5.x)
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # DynamicCache before the per-layer refactor
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]  # legacy tuple of (k, v) tuples


def random_llama_attention_layer(d_model: int, n_heads: int, n_kv_heads: int, bias: bool, generator: torch.Generator,
                                 scale: float = 0.3):
    """A bare Hugging Face ``LlamaAttention`` (H query heads, G key/value heads) in float64 with every
    parameter drawn at random, biases included when ``bias``."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention

    config = LlamaConfig(hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         head_dim=d_model // n_heads, attention_bias=bias, attention_dropout=0.0)
    use_eager_attention(config)
    layer = LlamaAttention(config, layer_idx=0).double().eval()
    return _randomized(layer, generator, scale)


def llama_attention_layer_output(layer, x: torch.Tensor) -> torch.Tensor:
    """Causal self-attention output of a bare ``LlamaAttention`` on x [B, T, D] with rotary
    embeddings made the identity (cos = 1, sin = 0): what the course's MQA/GQA layers compute."""
    batch, length, _ = x.shape
    shape = (batch, length, layer.head_dim)
    identity_rotary = (torch.ones(shape, dtype=x.dtype, device=x.device), torch.zeros(shape, dtype=x.dtype, device=x.device))
    mask = additive_causal_mask(length, length, x.dtype, x.device)
    return layer(x, identity_rotary, mask)[0]


def random_rotary_attention_layer(d_model: int, n_heads: int, n_kv_heads: int, bias: bool, rope_theta: float,
                                  sliding_window: int | None, generator: torch.Generator, scale: float = 0.3):
    """A bare Hugging Face attention layer with its real rotary embedding, float64, every parameter drawn
    at random: ``LlamaAttention`` (biases when ``bias``) or, with a ``sliding_window``, ``MistralAttention``
    (which has no biases). Returns ``(layer, rotary)``, the rotary embedding module of the same config."""
    if sliding_window is None:
        from transformers import LlamaConfig as Config
        from transformers.models.llama.modeling_llama import LlamaAttention as Attention
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as Rotary

        extra = {"attention_bias": bias}
    else:
        if bias:
            raise ValueError("Hugging Face's MistralAttention has no biases")
        from transformers import MistralConfig as Config
        from transformers.models.mistral.modeling_mistral import MistralAttention as Attention
        from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding as Rotary

        extra = {"sliding_window": sliding_window}
    config = Config(hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                    head_dim=d_model // n_heads, attention_dropout=0.0, rope_theta=rope_theta, **extra)
    use_eager_attention(config)
    layer = _randomized(Attention(config, layer_idx=0).double().eval(), generator, scale)
    return layer, Rotary(config).double()


def rotary_attention_layer_output(layer, rotary, x: torch.Tensor, start: int = 0, cache=None) -> torch.Tensor:
    """Output of a bare ``LlamaAttention`` / ``MistralAttention`` on x [B, T, D] at positions start .. start + T - 1,
    with its real rotary embedding and Hugging Face's own mask function (causal, or causal within the config's
    sliding window). ``cache``: a ``DynamicCache`` holding the ``start`` earlier positions (it is appended to)."""
    from transformers import masking_utils

    length = x.shape[1]
    positions = torch.arange(start, start + length, device=x.device)  # [T]
    cos_sin = rotary(x, positions[None])  # 2 x [1, T, d]
    window = getattr(layer.config, "sliding_window", None)
    allowed_fn = (masking_utils.causal_mask_function if window is None
                  else masking_utils.sliding_window_causal_mask_function(window))
    keys = torch.arange(start + length, device=x.device)  # every position the cache holds after this call
    allowed = allowed_fn(0, 0, positions[:, None], keys[None, :])  # [T, start + T]
    mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, torch.finfo(x.dtype).min)
    kwargs = {}
    if cache is not None:
        name = "cache" if "cache" in inspect.signature(layer.forward).parameters else "past_key_values"
        kwargs = {name: cache, "cache_position": positions}
    return layer(x, cos_sin, mask[None, None], **kwargs)[0]


def random_deepseek_attention_layer(d_model: int, n_heads: int, kv_lora_rank: int, qk_nope_head_dim: int,
                                    qk_rope_head_dim: int, v_head_dim: int, q_lora_rank: int | None,
                                    generator: torch.Generator, rope_theta: float = 10000.0, scale: float = 0.3):
    """A bare Hugging Face ``DeepseekV3Attention`` (multi-head latent attention; 4.56+ and 5.x both ship it) in
    float64 with every parameter drawn at random, the layer norms' weights included (fresh ones are all 1).

    Set up as the course's MLA computes: rotary with the rotate-half pairing (``rope_interleave=False``; the
    default, True, pairs adjacent dimensions, which is the same model with the rotary columns of q_b_proj and
    kv_a_proj_with_mqa permuted), no rope scaling (scores scaled by 1/sqrt(dn + dr)), no biases. 4.56 reads
    ``rope_theta`` and ``rope_scaling``, 5.x ``rope_parameters``: both are given."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    config = DeepseekV3Config(hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=n_heads,
                              kv_lora_rank=kv_lora_rank, q_lora_rank=q_lora_rank, qk_nope_head_dim=qk_nope_head_dim,
                              qk_rope_head_dim=qk_rope_head_dim, v_head_dim=v_head_dim, rope_interleave=False,
                              attention_bias=False, attention_dropout=0.0, rope_theta=rope_theta, rope_scaling=None,
                              num_hidden_layers=1, vocab_size=16, intermediate_size=16, moe_intermediate_size=16)
    use_eager_attention(config)
    layer = DeepseekV3Attention(config, layer_idx=0).double().eval()
    if abs(layer.scaling - (qk_nope_head_dim + qk_rope_head_dim) ** -0.5) > 1e-12:
        raise RuntimeError(f"DeepseekV3Attention scales scores by {layer.scaling}: rope scaling is not off")
    return _randomized(layer, generator, scale)


def deepseek_attention_output(layer, x: torch.Tensor, rope_theta: float = 10000.0, start: int = 0, cache=None) -> torch.Tensor:
    """Causal self-attention output of a bare ``DeepseekV3Attention`` on x [B, T, D] at positions start..,
    rotary cos/sin built by Hugging Face's own ``DeepseekV3RotaryEmbedding`` from the layer's config.
    ``cache``: a Hugging Face cache continued in place (the keyword is ``cache`` in newer 5.x, ``past_key_values`` before)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    batch, length, _ = x.shape
    positions = torch.arange(start, start + length, device=x.device)[None].expand(batch, -1)  # [B, T]
    cos, sin = DeepseekV3RotaryEmbedding(layer.config).to(x.device)(x, positions)  # 5.x takes no device= (4.56 does)
    mask = additive_causal_mask(length, start + length, x.dtype, x.device)
    extra = {}
    if cache is not None:
        name = "cache" if "cache" in inspect.signature(layer.forward).parameters else "past_key_values"
        extra = {name: cache, "cache_position": positions[0]}
    return layer(x, (cos, sin), mask, **extra)[0]


def deepseek_cache_holds_latent() -> bool:
    """Whether this transformers' ``DeepseekV3Attention`` caches the latent and the rotary key (5.x) or, as 4.56
    does, the keys and values after up-projection (H heads of dn + dr and dv numbers per token): read off the cache
    a tiny layer fills."""
    from transformers import DynamicCache

    layer = random_deepseek_attention_layer(16, 2, 8, 4, 2, 4, None, torch.Generator().manual_seed(0))
    cache = DynamicCache()
    deepseek_attention_output(layer, torch.zeros(1, 3, 16, dtype=torch.float64), cache=cache)
    keys, _ = cache_keys_values(cache)[0]
    return keys.shape[-1] == 8
