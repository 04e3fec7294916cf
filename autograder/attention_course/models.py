"""GPT-2 for the lessons: the real ``gpt2`` where the hub is reachable, else a small local one.

Tests, CI and grading never touch the network: they call ``local_gpt2`` directly, and
``load_gpt2`` only tries the hub when ``HF_HUB_OFFLINE`` is unset and the hub answers quickly.
"""

import os
import socket
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from attention_course.hf_compat import use_eager_attention
from attention_course.runtime import default_device

HUB_ID = "gpt2"
HUB_HOST = "huggingface.co"
EOS = "<|endoftext|>"
LOCAL_NOTICE = (
    "Notice: the Hugging Face hub is not reachable, so this uses a small local GPT-2 "
    "(same architecture, {n_layer} layers, {n_head} heads, width {n_embd}, random weights, "
    "byte-level tokenizer). Numbers and pictures differ from real GPT-2; the code is the same."
)


@dataclass
class GPT2:
    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    is_real: bool


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (GPT-2's byte-to-character table, no merges) plus end-of-text."""
    byte_chars = _gpt2_byte_characters()
    vocab = {byte_chars[b]: b for b in range(256)} | {EOS: 256}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def _gpt2_byte_characters() -> list[str]:
    """GPT-2's printable stand-in character for each byte value 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def local_gpt2_config(n_layer: int = 2, n_head: int = 4, n_embd: int = 128, n_positions: int = 1024) -> GPT2Config:
    config = GPT2Config(
        vocab_size=257,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=256,
        eos_token_id=256,
        # Larger than GPT-2's 0.02 so that random attention maps are not all uniform.
        initializer_range=0.2,
    )
    use_eager_attention(config)
    return config


def local_gpt2(seed: int = 0, device=None, **config_overrides) -> GPT2:
    """A small GPT-2 with seeded random weights and a byte-level tokenizer; no network."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(local_gpt2_config(**config_overrides))
    return GPT2(model.to(device or default_device()).eval(), byte_level_tokenizer(), is_real=False)


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_gpt2(device=None) -> GPT2:
    """Real GPT-2 small (eager attention, so attention weights can be returned) or the local one."""
    from transformers import AutoTokenizer

    device = device or default_device()
    for local_only in (True, False):
        if not local_only and not hub_reachable():
            break
        try:
            model = GPT2LMHeadModel.from_pretrained(HUB_ID, attn_implementation="eager", local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(HUB_ID, local_files_only=local_only)
        except OSError:
            continue
        return GPT2(model.to(device).eval(), tokenizer, is_real=True)
    fallback = local_gpt2(device=device)
    print(LOCAL_NOTICE.format(**fallback.model.config.to_dict()))
    return fallback
