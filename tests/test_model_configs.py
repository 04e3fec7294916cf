"""The published configurations (model_configs.py) give the shapes COURSE.md lists and the model
cards show, read off real modules built on the meta device."""

import pytest
import torch

from attention_course.model_configs import (PUBLISHED, attention_heads, falcon_7b_config, gpt2_config, hf_cache_bytes,
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
