"""The published configurations (model_configs.py) give the shapes COURSE.md lists and the model
cards show, read off real modules built on the meta device."""

import pytest
import torch

from attention_course.model_configs import (LATENT, LLAMA_PEERS, PUBLISHED, attention_heads, falcon_7b_config, gpt2_config,
                                             hf_cache_bytes, meta_deepseek_attention, mla_cache_bytes_of,
                                             mla_cache_numbers_per_token, mla_up_projected_numbers_per_token,
                                             llama_cache_bytes, meta_model, mistral_7b_config)

# (layers, query heads, key/value heads, head size), from COURSE.md's model facts.
FACTS = {
    "GPT-2 small": (12, 12, 12, 64),
    "Llama-2-7B": (32, 32, 32, 128),
    "Llama-2-70B": (80, 64, 8, 128),
    "Llama-3-8B": (32, 32, 8, 128),
    "Mistral-7B": (32, 32, 8, 128),
    "Falcon-7B": (32, 71, 1, 64),
}


@pytest.mark.parametrize("name", FACTS)
def test_published_shapes(name):
    assert attention_heads(PUBLISHED[name]()) == FACTS[name]


def test_gpt2_sizes():
    assert [attention_heads(gpt2_config(n)) for n in ("GPT-2 medium", "GPT-2 large", "GPT-2 XL")] == [
        (24, 16, 16, 64), (36, 20, 20, 64), (48, 25, 25, 64)]


def test_falcon_7b_modules_as_in_its_model_card():
    """tiiuae/falcon-7b: query_key_value 4544 -> 4672 (71 query heads + one key and one value head of 64), dense 4544 -> 4544."""
    attention = meta_model(falcon_7b_config()).transformer.h[0].self_attention
    assert attention.query_key_value.weight.shape == (4672, 4544) and attention.query_key_value.bias is None
    assert attention.dense.weight.shape == (4544, 4544) and attention.dense.bias is None


def test_mistral_cache_stops_growing_at_its_sliding_window():
    model = meta_model(mistral_7b_config(), torch.bfloat16)
    assert hf_cache_bytes(model, 1, 2048) == 2 * 32 * 8 * 128 * 2048 * 2
    assert hf_cache_bytes(model, 1, 8192) == hf_cache_bytes(model, 1, 4096) < 2 * 32 * 8 * 128 * 4096 * 2


def test_llama_cache_bytes_of_a_small_real_model():
    assert llama_cache_bytes(3, 2, 4, 16, 7, torch.float32) == 2 * 3 * 2 * 4 * 16 * 7 * 4


# deepseek-ai/DeepSeek-V2 and -V3 config.json: (layers, heads, width, kv_lora_rank, qk_rope_head_dim, q_lora_rank).
DEEPSEEK = {"DeepSeek-V2": (60, 128, 5120, 512, 64, 1536), "DeepSeek-V3": (61, 128, 7168, 512, 64, 1536)}


@pytest.mark.parametrize("name", DEEPSEEK)
def test_deepseek_latent_cache_read_off_a_real_layer(name):
    layers, heads, width, rank, rope, q_rank = DEEPSEEK[name]
    config = LATENT[name]()
    layer = meta_deepseek_attention(config)
    assert (config.num_hidden_layers, layer.kv_a_proj_with_mqa.in_features, layer.q_a_proj.out_features) == (layers, width, q_rank)
    assert layer.kv_b_proj.weight.shape == (heads * (128 + 128), rank) and layer.o_proj.weight.shape == (width, heads * 128)
    assert mla_cache_numbers_per_token(config) == rank + rope == 576
    assert mla_up_projected_numbers_per_token(config) == heads * (128 + 64 + 128)
    assert mla_cache_bytes_of(config, 2, 100, 2) == 2 * layers * 576 * 100 * 2


def test_llama_3_1_405b_shapes():
    assert attention_heads(LLAMA_PEERS["Llama-3.1-405B"]()) == (126, 128, 8, 128)
