"""attention_course/models.py: the small local GPT-2 and the offline fallback of ``load_gpt2``."""

import socket

import huggingface_hub.constants
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

from attention_course import models

PHRASE = "Hope is a waking dream"


@pytest.fixture(scope="module")
def gpt2():
    return models.local_gpt2(seed=0, device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return models.byte_level_tokenizer()


def state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# local_gpt2
# ----------------------------------------------------------------------------------------------


def test_local_gpt2_is_deterministic_for_a_seed():
    a, b = models.local_gpt2(seed=3, device="cpu"), models.local_gpt2(seed=3, device="cpu")
    state_a, state_b = state(a.model), state(b.model)
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    other = state(models.local_gpt2(seed=4, device="cpu").model)
    assert not torch.equal(state_a["transformer.h.0.attn.c_attn.weight"], other["transformer.h.0.attn.c_attn.weight"])


def test_local_gpt2_leaves_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    models.local_gpt2(seed=5, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_local_gpt2_has_gpt2_architecture(gpt2):
    model, config = gpt2.model, gpt2.model.config
    assert isinstance(model, GPT2LMHeadModel)
    assert config.model_type == "gpt2"
    assert gpt2.is_real is False
    assert not model.training, "returned in eval mode"
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size) == (2, 4, 128, 257)
    assert len(model.transformer.h) == config.n_layer
    for block in model.transformer.h:
        assert isinstance(block.attn, GPT2Attention)
        # GPT-2's Conv1D layout: weights stored [in, out]
        assert block.attn.c_attn.weight.shape == (config.n_embd, 3 * config.n_embd)
        assert block.attn.c_proj.weight.shape == (config.n_embd, config.n_embd)
    assert config.eos_token_id == config.bos_token_id == 256


def test_local_gpt2_config_overrides():
    small = models.local_gpt2(seed=0, device="cpu", n_layer=1, n_head=2, n_embd=32, n_positions=64)
    config = small.model.config
    assert (config.n_layer, config.n_head, config.n_embd, config.n_positions) == (1, 2, 32, 64)


def test_local_gpt2_device(device):
    gpt2 = models.local_gpt2(seed=0, device=device)
    assert {p.device.type for p in gpt2.model.parameters()} == {device.type}


def test_local_gpt2_uses_eager_attention_so_attentions_are_returned(gpt2, tokenizer):
    assert gpt2.model.config._attn_implementation == "eager"
    ids = torch.tensor([tokenizer.encode(PHRASE)] * 2)
    length = ids.shape[1]
    with torch.no_grad():
        out = gpt2.model(ids, output_attentions=True)
    assert out.attentions is not None
    assert len(out.attentions) == gpt2.model.config.n_layer
    future = ~torch.ones(length, length, dtype=torch.bool).tril()
    for attention in out.attentions:
        assert isinstance(attention, torch.Tensor)
        assert attention.shape == (2, gpt2.model.config.n_head, length, length)
        # the model's own attention maps are causal, rows sum to 1, and not all uniform
        assert bool((attention[..., future] == 0).all())
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4, length))
        uniform = 1.0 / torch.arange(1, length + 1)
        assert not torch.allclose(attention[0, 0].max(-1).values, uniform, atol=1e-2)


# ----------------------------------------------------------------------------------------------
# byte-level tokenizer
# ----------------------------------------------------------------------------------------------


def test_tokenizer_phrase(tokenizer):
    ids = tokenizer.encode(PHRASE)
    assert ids == list(PHRASE.encode("utf-8")), "one token per UTF-8 byte, id = byte value"
    assert tokenizer.decode(ids) == PHRASE
    assert tokenizer.eos_token == models.EOS and tokenizer.eos_token_id == 256


@given(text=st.text(max_size=40))
def test_tokenizer_round_trips_unicode(tokenizer, text):
    ids = tokenizer.encode(text)
    if models.EOS not in text:
        assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", ["héllo wörld 日本 🎉", "  spaces  \n\ttabs ", "a . b , c 's", "\x00\x7f", "<|endoftext|>x"])
def test_tokenizer_round_trips_examples(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_byte_characters_are_a_bijection():
    chars = models._gpt2_byte_characters()
    assert len(chars) == len(set(chars)) == 256
    assert all(c.isprintable() and not c.isspace() for c in chars)


# ----------------------------------------------------------------------------------------------
# load_gpt2 offline
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Fail the test on any attempt to open a connection; hide any real gpt2 in the local HF cache."""

    def refuse(*args, **kwargs):
        pytest.fail(f"tried to reach the network: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_hub_not_reachable_offline(no_network):
    assert models.hub_reachable() is False


def test_load_gpt2_offline_falls_back_with_a_notice(no_network, capsys):
    gpt2 = models.load_gpt2(device="cpu")
    assert gpt2.is_real is False
    assert isinstance(gpt2.model, GPT2LMHeadModel)
    out = capsys.readouterr().out
    assert "hub is not reachable" in out
    assert "2 layers, 4 heads, width 128" in out
    # the fallback is the seeded local model
    expected = state(models.local_gpt2(seed=0, device="cpu").model)
    for name, tensor in state(gpt2.model).items():
        assert torch.equal(tensor, expected[name]), name


# ----------------------------------------------------------------------------------------------
# generation on the local model
# ----------------------------------------------------------------------------------------------


def test_greedy_generate_runs_and_equals_an_argmax_loop(gpt2, tokenizer):
    prompt = torch.tensor([tokenizer.encode(PHRASE)])
    new_tokens = 6
    with torch.no_grad():
        generated = gpt2.model.generate(
            prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    assert generated.shape[0] == 1 and prompt.shape[1] < generated.shape[1] <= prompt.shape[1] + new_tokens
    assert torch.equal(generated[:, : prompt.shape[1]], prompt)
    # the same tokens from a plain loop: full forward pass, argmax of the last position, no cache
    ids = prompt
    with torch.no_grad():
        for _ in range(generated.shape[1] - prompt.shape[1]):
            logits = gpt2.model(ids, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, ids)
    assert isinstance(tokenizer.decode(generated[0]), str)
