"""Checks for 02_kv_cache. ``thorough=True`` is what hidden tests use: more shapes, batch > 1,
multi-token updates after a prefix, float16 / bfloat16, CUDA when present, Hugging Face oracles
(``GPT2Attention``, ``generate``, the bytes of a real cache after a forward pass).

Each check isolates its exercise: ``cached_gpt2_attention`` is run with the reference ``KVCache``,
and ``greedy_generate`` with the reference model, so that one mistake costs one exercise."""

import numbers

import torch

from attention_course.checks.causal_attention import FUTURE_LEAK, NO_SCALE, STRICT, _gpt2_weights, _visible_extras, _weights_variant
from attention_course.checks.diagnosis import call, devices, dtypes, expect_close, expect_on_device, expect_tensor, expect_value_error, passed
from attention_course.kernels import causal as causal_ref
from attention_course.kernels import kv_cache as ref
from attention_course.model_configs import hf_cache_bytes, llama2_7b_config, meta_model  # noqa: F401 (test cells use them)

NOT_APPENDED = (
    "cache not appended: update returned only the new keys/values. It must keep the earlier positions and "
    "write the new ones after them, then return everything cached so far"
)
WHOLE_BUFFER = (
    "whole buffer returned including empty slots: update must return only the cached positions, "
    "keys[:, :, :length] (the rest of the preallocated buffer is zeros, and attention would give them weight)"
)
COPIES = (
    "update copies the whole cache: each call returned a tensor in new memory (torch.cat or .clone() copies "
    "everything cached at every step). Preallocate the buffers in __init__, write the new positions in place, "
    "return views (slices) of the buffers"
)
SWAPPED = "keys and values swapped: update(k_new, v_new) returns (k_all, v_all) in that order"
NEW_ONLY = (
    "the new tokens only attended to: the queries must attend over every cached key and value (what "
    "cache.update returns), not just the keys of the new tokens"
)
TOP_LEFT_CHUNK = (
    "top-left mask during chunked prefill: with T_new queries and T_cached keys the new queries are the *last* "
    "positions, so query i may attend key j iff j <= i + (T_cached - T_new) (bottom-right). "
    "F.scaled_dot_product_attention(is_causal=True) aligns top-left when T_new < T_cached"
)
NOT_UPDATED = "the new keys and values were not appended to the cache: call cache.update(k, v) in every call"
CONV1D_T = "Conv1D weights used transposed: GPT-2 stores them [in, out], so a projection is x @ W + b"
OFF_BY_ONE = "decode loop off by one"
ONLY_NEW = "returned only the new tokens: return the prompt followed by the new tokens, [B, T + max_new_tokens] (as Hugging Face generate does)"
CACHE_UNUSED = (
    "with use_cache=True each decode step must feed only the newest token, [B, 1], with the caches: "
    "the caches hold the keys and values of all the earlier tokens"
)
CACHE_PASSED_WITHOUT = "with use_cache=False call model(ids) without caches: every step runs the whole sequence again"
SEED_FORMULA = (
    "this leaves out head_dim, like the study notebook's formula batch*layers*heads*seq_len*2*2: every cached "
    "key and value is a vector of head_dim numbers. Right: 2 (K and V) x batch x layers x kv_heads x head_dim x "
    "seq_len x bytes_per_element"
)
NO_TWO = "this counts the keys only (or the values only): the cache holds both, a factor 2"
NO_BYTES = "this counts elements, not bytes: multiply by bytes_per_element"
BITS = "this is in bits (x8): bytes_per_element already counts bytes"


def _storage(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def _visible_dtypes(thorough: bool) -> list[torch.dtype]:
    """The dtypes a check runs in: float32, and float16 and bfloat16 in visible checks too (the
    exercise asks for them, and hidden tests run them throughout)."""
    return dtypes(thorough) + [dtype for _, dtype in _visible_extras(thorough)]


# ----------------------------------------------------------------------------------------------
# KVCache
# ----------------------------------------------------------------------------------------------


def _cache_cases(thorough: bool):
    """(batch, kv_heads, head_dim, max_len, chunk sizes)."""
    cases = [(1, 2, 4, 8, [3, 1, 1]), (2, 3, 8, 10, [4, 2, 1, 3])]
    if thorough:
        cases += [(3, 1, 16, 12, [1] * 12), (2, 4, 8, 9, [5, 4]), (1, 2, 32, 20, [7, 1, 1, 6, 1]), (4, 2, 4, 6, [6])]
    return cases


def _expect_cached(returned, expected: torch.Tensor, new: torch.Tensor, other: torch.Tensor, max_len: int,
                   previous: int, what: str) -> None:
    """``returned`` must equal ``expected`` [B, G, len, d]; name what it equals instead."""
    __tracebackhide__ = True
    if isinstance(returned, torch.Tensor):
        length = expected.shape[2]
        if returned.shape[2] == max_len and length < max_len and returned.shape[:2] == expected.shape[:2]:
            raise AssertionError(f"{what}: {WHOLE_BUFFER} (got length {max_len}, {length} cached)")
        if previous and returned.shape == new.shape and torch.equal(returned.cpu(), new.cpu()):
            raise AssertionError(f"{what}: {NOT_APPENDED}")
    expect_close(returned, expected, what, lambda: {SWAPPED: other})


def check_kv_cache(KVCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for device in devices(thorough):
        for dtype in _visible_dtypes(thorough):
            for batch, kv_heads, head_dim, max_len, chunks in _cache_cases(thorough):
                name = f"KVCache({batch}, {kv_heads}, {head_dim}, {max_len}, dtype={dtype}, device={device!r})"
                cache = call(KVCache, batch, kv_heads, head_dim, max_len, dtype=dtype, device=device, what=name)
                length = call(len, cache, what=f"len({name})")
                if length != 0:
                    raise AssertionError(f"len({name}) of a new cache should be 0, got {length!r}")
                keys, values, storages = [], [], []
                for n_new in chunks:
                    k_new = torch.randn(batch, kv_heads, n_new, head_dim, generator=generator).to(device=device, dtype=dtype)
                    v_new = torch.randn(batch, kv_heads, n_new, head_dim, generator=generator).to(device=device, dtype=dtype)
                    previous = sum(t.shape[2] for t in keys)
                    keys.append(k_new)
                    values.append(v_new)
                    case = f"{name}: update with {n_new} new positions after {previous}"
                    returned = call(cache.update, k_new, v_new, what=case)
                    if not (isinstance(returned, tuple | list) and len(returned) == 2):
                        raise AssertionError(f"{case}: update should return a tuple (k_all, v_all), got {type(returned).__name__}")
                    k_all, v_all = returned
                    expected_k, expected_v = torch.cat(keys, dim=2), torch.cat(values, dim=2)
                    _expect_cached(k_all, expected_k, k_new, expected_v, max_len, previous, f"{case}, keys")
                    _expect_cached(v_all, expected_v, v_new, expected_k, max_len, previous, f"{case}, values")
                    length = call(len, cache, what=f"len() after {case}")
                    if length != previous + n_new:
                        raise AssertionError(f"{case}: len(cache) should be {previous + n_new} (the cached positions), got {length!r}")
                    storages.append((case, _storage(k_all), _storage(v_all), k_all.element_size()))
                    n_cases += 1
                # Views into buffers allocated once: the same memory every call, big enough for max_len.
                case, k_first, v_first, size = storages[0]
                full = batch * kv_heads * max_len * head_dim * size
                if k_first[1] < full or v_first[1] < full:
                    raise AssertionError(f"{case}: {COPIES} (the returned keys live in {k_first[1]} bytes, "
                                         f"a [B, G, max_len, d] buffer takes {full})")
                for case, k_storage, v_storage, _ in storages[1:]:
                    if k_storage[0] != k_first[0] or v_storage[0] != v_first[0]:
                        raise AssertionError(f"{case}: {COPIES}")
                    n_cases += 1
                expect_value_error(
                    cache.update,
                    *(torch.zeros(batch, kv_heads, max_len - len(cache) + 1, head_dim, dtype=dtype, device=device),) * 2,
                    what=f"{name}: update past max_len", problem="a full cache (more positions than max_len)",
                )
    cache = call(KVCache, 1, 1, 2, 3, what="KVCache(1, 1, 2, 3)")
    expect_value_error(cache.update, torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2), what="KVCache(1, 1, 2, 3).update with 4 positions",
                       problem="more new positions than max_len")
    expect_on_device(KVCache, 1, 2, 4, 8, device="meta", what="KVCache(1, 2, 4, 8, device='meta')")
    expect_on_device(lambda k, v: KVCache(1, 2, 4, 8, device="meta").update(k, v), torch.empty(1, 2, 3, 4), torch.empty(1, 2, 3, 4),
                     what="KVCache(1, 2, 4, 8, device='meta').update(k[1, 2, 3, 4], v[1, 2, 3, 4])")
    passed("KVCache", n_cases)


# ----------------------------------------------------------------------------------------------
# cached_gpt2_attention
# ----------------------------------------------------------------------------------------------


def _cached_variant(x, start, end, w_attn, b_attn, w_proj, b_proj, n_heads, keys="all", mask="bottom_right", scale="sqrt",
                    proj_transposed=False):
    """What a learner's cached layer might return for the new tokens x[:, start:end] (float64)."""
    x, w_attn, b_attn, w_proj, b_proj = (t.double() for t in (x, w_attn, b_attn, w_proj, b_proj))
    width = x.shape[-1]
    q, k, v = (causal_ref.split_heads(t, n_heads) for t in (x[:, :end] @ w_attn + b_attn).split(width, dim=-1))
    q = q[:, :, start:end]  # the new queries
    first = start if keys == "new" else 0
    k, v = k[:, :, first:end], v[:, :, first:end]
    y = _weights_variant(q, k, True, scale=scale, mask=mask) @ v
    return causal_ref.merge_heads(y) @ (w_proj.T if proj_transposed else w_proj) + b_proj


CACHED_MISTAKES = {
    NEW_ONLY: {"keys": "new"},
    TOP_LEFT_CHUNK: {"mask": "top_left"},
    FUTURE_LEAK: {"mask": None},
    STRICT: {"mask": "strict"},
    NO_SCALE: {"scale": "none"},
    CONV1D_T: {"proj_transposed": True},
}


def _attention_cases(thorough: bool):
    """(batch, width, heads, chunk sizes): a prefill, then steps or more chunks."""
    cases = [(1, 16, 4, [4, 1, 1, 1]), (2, 12, 3, [3, 3, 2])]
    if thorough:
        cases += [(3, 32, 8, [1] * 6), (2, 24, 2, [5, 1, 4, 1]), (1, 8, 1, [2, 7]), (2, 16, 4, [9])]
    return cases


def check_cached_gpt2_attention(cached_gpt2_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for device in devices(thorough):
        for dtype in _visible_dtypes(thorough):
            for batch, width, n_heads, chunks in _attention_cases(thorough):
                total = sum(chunks)
                x = torch.randn(batch, total, width, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
                weights = _gpt2_weights(width, generator, dtype, device)
                cache = ref.KVCache(batch, n_heads, width // n_heads, total, dtype=dtype, device=device)
                # Prefill plus steps equals the uncached layer over the whole sequence.
                uncached = causal_ref.gpt2_attention(x.double(), *(w.double() for w in weights), n_heads)
                start = 0
                for n_new in chunks:
                    end = start + n_new
                    case = (f"cached_gpt2_attention(x_new[{batch}, {n_new}, {width}], ..., n_heads={n_heads}, cache) "
                            f"after {start} cached [{dtype}, {device}]")
                    output = call(cached_gpt2_attention, x[:, start:end], *weights, n_heads, cache, what=case)

                    def mistakes(start=start, end=end):
                        return {m: _cached_variant(x, start, end, *weights, n_heads, **kw) for m, kw in CACHED_MISTAKES.items()}

                    expect_close(output, uncached[:, start:end].to(dtype), case, mistakes)
                    if len(cache) != end:
                        raise AssertionError(f"{case}: {NOT_UPDATED} (the cache holds {len(cache)} positions, expected {end})")
                    start = end
                    n_cases += 1
    if thorough:
        n_cases += _check_against_hugging_face(cached_gpt2_attention, generator)
    expect_on_device(lambda x, *w, cache=ref.KVCache(1, 3, 4, 8, device="meta"): [cached_gpt2_attention(x[:, :3], *w, 3, cache),
                     cached_gpt2_attention(x[:, 3:], *w, 3, cache)], torch.empty(1, 4, 12), *map(torch.empty, [(12, 36), (36,), (12, 12), (12,)]),
                     what="cached_gpt2_attention(x_new[1, 3, 12], ..., n_heads=3, cache), then one more token")
    passed("cached_gpt2_attention", n_cases)


def _check_against_hugging_face(cached_gpt2_attention, generator: torch.Generator) -> int:
    """Prefill then one-token steps equal Hugging Face GPT2Attention over the whole sequence."""
    __tracebackhide__ = True
    from attention_course.hf_compat import gpt2_attention_layer_output, random_gpt2_attention_layer

    layer = random_gpt2_attention_layer(48, 6, generator)
    with torch.no_grad():
        x = torch.randn(2, 9, 48, generator=generator, dtype=torch.float64)
        expected = gpt2_attention_layer_output(layer, x).float()
    weights = [t.detach().float() for t in (layer.c_attn.weight, layer.c_attn.bias, layer.c_proj.weight, layer.c_proj.bias)]
    cache = ref.KVCache(2, 6, 8, 9)
    case = "cached_gpt2_attention, prefill 5 then 4 steps, vs Hugging Face GPT2Attention over all 9 tokens (float32)"
    outputs = [call(cached_gpt2_attention, x[:, :5].float(), *weights, 6, cache, what=case)]
    for t in range(5, 9):
        outputs.append(call(cached_gpt2_attention, x[:, t : t + 1].float(), *weights, 6, cache, what=case))
    for output in outputs:
        expect_tensor(output, expected, case)
    expect_close(torch.cat(outputs, dim=1), expected, case)
    return 1


# ----------------------------------------------------------------------------------------------
# greedy_generate
# ----------------------------------------------------------------------------------------------


class Recorder:
    """The reference model, recording how it is called: (new tokens, with caches?) per call."""

    def __init__(self, model):
        self.model = model
        self.calls: list[tuple[int, bool]] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def new_caches(self, batch_size, max_len):
        return self.model.new_caches(batch_size, max_len)

    def __call__(self, input_ids, caches=None):
        self.calls.append((input_ids.shape[-1], caches is not None))
        return self.model(input_ids, caches)


_MODELS: dict = {}


def reference_model(seed: int = 0):
    """A small random GPT-2 (Hugging Face weights) and the reference decoder on it, kept between checks."""
    if seed not in _MODELS:
        from attention_course.gpt2_forward import GPT2Decoder
        from attention_course.models import local_gpt2

        hf_model = local_gpt2(seed=seed, device="cpu", n_layer=2, n_head=4, n_embd=64, n_positions=128).model
        _MODELS[seed] = (hf_model, GPT2Decoder(hf_model))
    return _MODELS[seed]


def _generate_cases(thorough: bool):
    """(batch, prompt length, max_new_tokens)."""
    cases = [(1, 5, 6)]
    if thorough:
        cases += [(2, 3, 10), (3, 8, 1), (1, 1, 12)]
    return cases


def check_greedy_generate(greedy_generate, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    from attention_course.gpt2_forward import hf_greedy

    hf_model, decoder = reference_model()
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for batch, length, n_new in _generate_cases(thorough):
        prompt = torch.randint(0, hf_model.config.vocab_size, (batch, length), generator=generator)
        for use_cache in (True, False):
            model = Recorder(decoder)
            case = f"greedy_generate(model, input_ids[{batch}, {length}], max_new_tokens={n_new}, use_cache={use_cache})"
            try:
                output = greedy_generate(model, prompt, n_new, use_cache=use_cache)
            except ValueError as error:
                hint = f" ({CACHE_UNUSED})" if use_cache and "full" in str(error) else ""
                raise AssertionError(f"{case} raised ValueError: {error}{hint}") from error
            except Exception:
                output = call(greedy_generate, model, prompt, n_new, use_cache=use_cache, what=case)
            expected = hf_greedy(hf_model, prompt, n_new, use_cache=use_cache)
            _expect_tokens(output, expected, prompt, n_new, case)
            fed = sum(n for n, _ in model.calls)
            if use_cache and (any(not cached for _, cached in model.calls) or fed > length + n_new):
                raise AssertionError(f"{case}: {CACHE_UNUSED} (the model was fed {fed} tokens for a {length}-token prompt "
                                     f"and {n_new} new ones)")
            if not use_cache and any(cached for _, cached in model.calls):
                raise AssertionError(f"{case}: {CACHE_PASSED_WITHOUT}")
            n_cases += 1
    passed("greedy_generate (tokens equal Hugging Face generate, with and without the cache)", n_cases)


def _expect_tokens(output, expected: torch.Tensor, prompt: torch.Tensor, n_new: int, case: str) -> None:
    __tracebackhide__ = True
    if not isinstance(output, torch.Tensor):
        raise AssertionError(f"{case} should return a torch.Tensor of token ids, got {type(output).__name__}")
    length = prompt.shape[1]
    if output.dim() != 2 or output.shape[0] != prompt.shape[0]:
        raise AssertionError(f"{case}: output shape {tuple(output.shape)}, expected {tuple(expected.shape)} = [B, T + max_new_tokens]")
    got = output.shape[1] - length
    if output.shape[1] == n_new and n_new != length + n_new:
        raise AssertionError(f"{case}: {ONLY_NEW}")
    if abs(got - n_new) == 1:
        raise AssertionError(f"{case}: {OFF_BY_ONE}: it returned {got} new tokens, expected max_new_tokens = {n_new} "
                             f"(shape {tuple(output.shape)}, expected {tuple(expected.shape)})")
    if output.shape != expected.shape:
        raise AssertionError(f"{case}: output shape {tuple(output.shape)}, expected {tuple(expected.shape)} = [B, T + max_new_tokens]")
    if output.dtype != torch.long:
        raise AssertionError(f"{case}: token ids should be int64 (torch.long), got {output.dtype}")
    output = output.cpu()
    if not torch.equal(output[:, :length], prompt):
        raise AssertionError(f"{case}: the output must start with the prompt (input_ids), unchanged")
    if not torch.equal(output, expected):
        first = int((output != expected).any(dim=0).nonzero()[0]) - length
        hint = ""
        if torch.equal(output[:, length:-1], expected[:, length + 1 :]) or torch.equal(output[:, length + 1 :], expected[:, length:-1]):
            hint = f" ({OFF_BY_ONE}: the new tokens are shifted by one position)"
        raise AssertionError(
            f"{case}: the new tokens differ from Hugging Face generate(do_sample=False) from new token {first} on{hint}: "
            f"got {output[0, length:].tolist()}, expected {expected[0, length:].tolist()}. Each step appends the argmax "
            "of the logits at the last position"
        )


# ----------------------------------------------------------------------------------------------
# kv_cache_bytes
# ----------------------------------------------------------------------------------------------


def _bytes_mistakes(batch, layers, kv_heads, head_dim, seq_len, nbytes) -> dict[int, str]:
    right = ref.kv_cache_bytes(batch, layers, kv_heads, head_dim, seq_len, nbytes)
    return {
        batch * layers * kv_heads * seq_len * 2 * 2: SEED_FORMULA,
        right // head_dim: SEED_FORMULA,
        right // 2: NO_TWO,
        right // nbytes: NO_BYTES,
        right * 8: BITS,
    }


def _bytes_cases(thorough: bool):
    """(batch, layers, kv_heads, head_dim, seq_len, bytes_per_element)."""
    cases = [(1, 12, 12, 64, 1024, 4), (2, 32, 8, 128, 4096, 2), (3, 4, 2, 16, 100, 4)]
    if thorough:
        cases += [(1, 80, 8, 128, 4096, 2), (8, 32, 1, 64, 2048, 2), (1, 1, 1, 1, 1, 1), (5, 24, 16, 64, 777, 4),
                  (2, 48, 25, 64, 1024, 8), (16, 28, 4, 80, 8192, 1)]
    return cases


def _expect_bytes(answer, expected: int, case: str, mistakes: dict[int, str]) -> None:
    __tracebackhide__ = True
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real) or not float(answer).is_integer():
        raise AssertionError(f"{case} should return a whole number of bytes (an int), got {answer!r}")
    if int(answer) != expected:
        why = mistakes.get(int(answer), "")
        raise AssertionError(f"{case} = {int(answer):,}, expected {expected:,}. {why}".rstrip())


def check_kv_cache_bytes(kv_cache_bytes, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    n_cases = 0
    for args in _bytes_cases(thorough):
        case = "kv_cache_bytes({}, {}, {}, {}, {}, {})".format(*args)
        answer = call(kv_cache_bytes, *args, what=case)
        _expect_bytes(answer, ref.kv_cache_bytes(*args), case, _bytes_mistakes(*args))
        n_cases += 1
    if thorough:
        for model, batch, length in _real_models(seed):
            config = model.config
            heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            nbytes = model.dtype.itemsize
            args = (batch, config.num_hidden_layers, heads, head_dim, length, nbytes)
            case = f"kv_cache_bytes{args} vs a real {type(model).__name__} cache after a forward pass"
            answer = call(kv_cache_bytes, *args, what=case)
            _expect_bytes(answer, hf_cache_bytes(model, batch, length), case, _bytes_mistakes(*args))
            n_cases += 1
    passed("kv_cache_bytes", n_cases)


def _real_models(seed: int):
    """Small Hugging Face models with random weights: GPT-2 (MHA) in float32 and float16, Llama with GQA in bfloat16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_gpt2, _ = reference_model()
    llama = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8,
                        num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llama_model = LlamaForCausalLM(llama).to(torch.bfloat16).eval()
    from attention_course.models import local_gpt2

    gpt2_half = local_gpt2(seed=seed, device="cpu", n_layer=3, n_head=2, n_embd=32, n_positions=32).model.half()
    return [(hf_gpt2, 2, 11), (gpt2_half, 1, 5), (llama_model, 3, 7)]


def query_key_products(n_tokens: int, use_cache: bool) -> int:
    """Query-key dot products one head of one layer computes (unmasked pairs) to produce the token after
    ``n_tokens`` tokens: with a cache only the newest query against every key; without, every query again."""
    n_queries = 1 if use_cache else n_tokens
    return int(causal_ref.causal_mask(n_queries, n_tokens).sum())


__all__ = [
    "check_kv_cache",
    "check_cached_gpt2_attention",
    "check_greedy_generate",
    "check_kv_cache_bytes",
    "hf_cache_bytes",
    "meta_model",
    "llama2_7b_config",
    "query_key_products",
]
