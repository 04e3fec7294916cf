"""02_kv_cache, reference half: what each exercise's outputs should be, the known mistakes they are
compared with when they are not, and the requirements a comparison cannot judge (no copy of the
cache per step, the cache used with use_cache=True and not without). The kernel half:
``kernel/kv_cache.py``."""

import copy
import functools

import torch

from attention_course.exercises import Exercise, compare
from attention_course.exercises.causal_attention import FUTURE_LEAK, NO_SCALE, STRICT, weights_variant
from attention_course.exercises.kernel import kv_cache as kernel
from attention_course.exercises.kernel.draw import RAISES, shape
from attention_course.kernels import causal as causal_ref
from attention_course.kernels import kv_cache as ref
from attention_course.tolerances import tolerance

DEVICE = kernel.DEVICE
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
FIRST_POSITION = (
    "the new tokens differ from Hugging Face generate(do_sample=False): each step appends the argmax of the logits at "
    "the last position, logits[:, -1] (these are the argmax at the first position)"
)
SEED_FORMULA = (
    "this leaves out head_dim, like the study notebook's formula batch*layers*heads*seq_len*2*2: every cached "
    "key and value is a vector of head_dim numbers. Right: 2 (K and V) x batch x layers x kv_heads x head_dim x "
    "seq_len x bytes_per_element"
)
HEAD_DIM_MISSING = (
    "this leaves out head_dim: every cached key and value is a vector of head_dim numbers. Right: 2 (K and V) x "
    "batch x layers x kv_heads x head_dim x seq_len x bytes_per_element"
)
NO_TWO = "this counts the keys only (or the values only): the cache holds both, a factor 2"
NO_BYTES = "this counts elements, not bytes: multiply by bytes_per_element"
BITS = "this is in bits (x8): bytes_per_element already counts bytes"


# ----------------------------------------------------------------------------------------------
# KVCache
# ----------------------------------------------------------------------------------------------


def _cached_so_far(case):
    """(step name, new keys, new values, keys cached, values cached) after each update."""
    keys, values = [], []
    for step, (k_new, v_new) in enumerate(case["updates"]):
        keys.append(k_new)
        values.append(v_new)
        yield kernel.update_name(case, step), k_new, v_new, torch.cat(keys, dim=2), torch.cat(values, dim=2)


def _cache_expected(case) -> dict:
    size = case["size"]
    if case["kind"] == "meta":
        return {f"KVCache{size}, {DEVICE}": "", f"update, {DEVICE}": ""}
    if case["kind"] == "raises":
        return {"update with more positions than max_len": (RAISES, "ValueError", "more new positions than max_len")}
    expected = {"len(cache) when new": 0}
    for name, _, _, k_all, v_all in _cached_so_far(case):
        expected |= {f"{name}, what it returns": kernel.PAIR, f"{name}, keys": k_all, f"{name}, values": v_all,
                     f"len(cache) after {name}": k_all.shape[2]}
    return expected | {"update past max_len": (RAISES, "ValueError", "a full cache (more positions than max_len)")}


def _whole_buffer(cached: torch.Tensor, max_len: int) -> torch.Tensor:
    batch, heads, length, head_dim = cached.shape
    return torch.cat([cached, cached.new_zeros(batch, heads, max_len - length, head_dim)], dim=2)


def _cache_mistakes(case) -> dict:
    if case["kind"] != "values":
        return {}
    max_len, found = case["size"][3], {}
    for step, (name, k_new, v_new, k_all, v_all) in enumerate(_cached_so_far(case)):
        for part, new, cached, other in (("keys", k_new, k_all, v_all), ("values", v_new, v_all, k_all)):
            named = {SWAPPED: other}
            if step:
                named[NOT_APPENDED] = new
            if cached.shape[2] < max_len:
                named[WHOLE_BUFFER] = _whole_buffer(cached, max_len)
            found[f"{name}, {part}"] = named
    return found


def _cache_judge(case, outputs) -> str:
    if case["kind"] != "values":
        return ""
    batch, kv_heads, head_dim, max_len = case["size"]
    full = batch * kv_heads * max_len * head_dim * torch.empty((), dtype=case["dtype"]).element_size()
    first = min(outputs.get("bytes of the first keys' storage", 0), outputs.get("bytes of the first values' storage", 0))
    if first < full:
        return f"{COPIES} (the returned keys live in {first} bytes, a [B, G, max_len, d] buffer takes {full})"
    if outputs.get("updates returning keys in new memory", 1) or outputs.get("updates returning values in new memory", 1):
        return COPIES
    return ""


def _describe_cache(case) -> str:
    size = ", ".join(map(str, case["size"]))
    if case["kind"] == "meta":
        return f"KVCache({size}, device='meta') and its update(k[1, 2, 3, 4], v[1, 2, 3, 4])"
    if case["kind"] == "raises":
        return f"KVCache({size}).update with {case['updates'][0][0].shape[2]} positions"
    chunks = [k.shape[2] for k, _ in case["updates"]]
    return f"KVCache({size}, dtype={case['dtype']}, device={case['device']!r}), updates of {chunks} positions"


# ----------------------------------------------------------------------------------------------
# cached_gpt2_attention
# ----------------------------------------------------------------------------------------------


def cached_variant(x, start, end, w_attn, b_attn, w_proj, b_proj, n_heads, keys="all", mask="bottom_right", scale="sqrt",
                   proj_transposed=False):
    """What a learner's cached layer might return for the new tokens x[:, start:end] (float64)."""
    x, w_attn, b_attn, w_proj, b_proj = (t.double() for t in (x, w_attn, b_attn, w_proj, b_proj))
    width = x.shape[-1]
    q, k, v = (causal_ref.split_heads(t, n_heads) for t in (x[:, :end] @ w_attn + b_attn).split(width, dim=-1))
    q = q[:, :, start:end]  # the new queries
    first = start if keys == "new" else 0
    k, v = k[:, :, first:end], v[:, :, first:end]
    y = weights_variant(q, k, True, scale=scale, mask=mask) @ v
    return causal_ref.merge_heads(y) @ (w_proj.T if proj_transposed else w_proj) + b_proj


CACHED_MISTAKES = {
    NEW_ONLY: {"keys": "new"},
    TOP_LEFT_CHUNK: {"mask": "top_left"},
    FUTURE_LEAK: {"mask": None},
    STRICT: {"mask": "strict"},
    NO_SCALE: {"scale": "none"},
    CONV1D_T: {"proj_transposed": True},
}


def _steps(case):
    start = 0
    for step, n_new in enumerate(case["chunks"]):
        yield kernel.step_name(case, step), start, start + n_new
        start += n_new


def _attention_expected(case) -> dict:
    if case["kind"] == "meta":
        return {DEVICE: ""}
    x, weights, n_heads = case["x"].double(), [w.double() for w in case["weights"]], case["n_heads"]
    if case["kind"] == "hugging face":
        from attention_course.hf_compat import gpt2_attention_layer, gpt2_attention_layer_output

        with torch.no_grad():
            whole = gpt2_attention_layer_output(gpt2_attention_layer(weights, n_heads), x)
    else:
        whole = causal_ref.gpt2_attention(x, *weights, n_heads)
    expected = {}
    for name, start, end in _steps(case):
        expected |= {f"{name}, y": whole[:, start:end].to(case["x"].dtype), f"len(cache) after {name}": end}
    return expected


def _attention_mistakes(case) -> dict:
    if case["kind"] == "meta":
        return {}
    found = {}
    for name, start, end in _steps(case):
        found[f"{name}, y"] = {message: cached_variant(case["x"], start, end, *case["weights"], case["n_heads"], **kw)
                               for message, kw in CACHED_MISTAKES.items()}
        found[f"len(cache) after {name}"] = {NOT_UPDATED: start}
    return found


def _describe_attention(case) -> str:
    x = case["x"]
    if case["kind"] == "hugging face":
        return ("cached_gpt2_attention, prefill 5 then 4 steps, vs Hugging Face GPT2Attention over all 9 tokens (float32)")
    if case["kind"] == "meta":
        return (f"cached_gpt2_attention(x_new[1, 3, 12], ..., n_heads={case['n_heads']}, cache), then one more token "
                "[inputs on the meta device]")
    return (f"cached_gpt2_attention on x{shape(x)} in calls of {case['chunks']} new tokens, n_heads={case['n_heads']} "
            f"[{x.dtype}, {x.device}]")


# ----------------------------------------------------------------------------------------------
# greedy_generate
# ----------------------------------------------------------------------------------------------


def hf_tokens(case, n_new: int | None = None) -> torch.Tensor:
    from attention_course.gpt2_forward import hf_greedy

    n_new = case["n_new"] if n_new is None else n_new
    return hf_greedy(kernel.harness_gpt2(), case["prompt"], n_new, use_cache=case["use_cache"])


def decode_variant(prompt: torch.Tensor, n_new: int, use_cache: bool, position: int = -1) -> torch.Tensor:
    """Greedy tokens from the harness decoder, taking the argmax of the logits at ``position``."""
    model, ids = kernel.HarnessModel(), prompt
    caches = model.new_caches(ids.shape[0], ids.shape[1] + n_new) if use_cache else None
    unseen = ids
    for _ in range(n_new):
        logits = model(unseen, caches) if use_cache else model(ids)
        unseen = logits[:, position].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, unseen], dim=1)
    return ids


def _generate_expected(case) -> dict:
    return {"updates past a full cache": 0}  # the tokens: _tokens_problem


@functools.cache
def _exact_gpt2():
    return copy.deepcopy(kernel.harness_gpt2()).double()


def greedy_throughout(prompt: torch.Tensor, n_new: int, tokens: torch.Tensor) -> bool:
    """Whether ``tokens`` continue ``prompt`` greedily by ``n_new`` tokens: each new token's exact logit (the harness
    GPT-2 in float64, on the sequence before it) within the float32 table of the largest. Two correct float32
    computations (Hugging Face's generate, a loop over the course's decoder) may break a near tie differently;
    both are greedy."""
    n_prompt, vocab = prompt.shape[1], kernel.VOCAB_SIZE
    if tokens.shape != (prompt.shape[0], n_prompt + n_new) or tokens.is_floating_point():
        return False
    if not torch.equal(tokens[:, :n_prompt].cpu(), prompt) or tokens.min() < 0 or tokens.max() >= vocab:
        return False
    tokens = tokens.cpu().long()
    with torch.no_grad():
        logits = _exact_gpt2()(tokens[:, :-1]).logits[:, n_prompt - 1:]  # [B, n_new, V]: what chose each new token
    chosen = logits.gather(-1, tokens[:, n_prompt:, None]).squeeze(-1)  # [B, n_new]
    best = logits.max(dim=-1).values  # [B, n_new]
    limits = tolerance(torch.float32)
    return bool((best - chosen <= limits["atol"] + limits["rtol"] * best.abs()).all())


def _tokens_problem(case, tokens) -> str:
    problem = compare(tokens, hf_tokens(case), lambda: _generate_mistakes(case)["tokens"])
    if problem and isinstance(tokens, torch.Tensor) and tokens.dtype == torch.int64 and greedy_throughout(case["prompt"], case["n_new"], tokens):
        return ""
    return f"tokens: {problem}" if problem else ""


def _generate_mistakes(case) -> dict:
    prompt, n_new, use_cache = case["prompt"], case["n_new"], case["use_cache"]
    tokens = hf_tokens(case)
    named = {
        ONLY_NEW: tokens[:, prompt.shape[1]:],
        f"{OFF_BY_ONE}: it returned one new token too many (max_new_tokens + 1)": decode_variant(prompt, n_new + 1, use_cache),
        FIRST_POSITION: decode_variant(prompt, n_new, use_cache, position=0),
    }
    if n_new > 1:
        named[f"{OFF_BY_ONE}: it returned one new token too few (max_new_tokens - 1)"] = tokens[:, :-1]
    return {
        "updates past a full cache": {f"{CACHE_UNUSED} (the model was asked to cache more tokens than the caches have room for)": 1},
        "tokens": named,
    }


def _generate_judge(case, outputs) -> str:
    if "tokens" not in outputs:
        return "no tokens came back"
    problem = _tokens_problem(case, outputs["tokens"])
    if problem:
        return problem
    calls = outputs.get("calls")
    if not isinstance(calls, torch.Tensor) or calls.dim() != 2 or calls.shape[1] != 2:
        return "the model's calls did not come back"
    fed, cached = int(calls[:, 0].sum()), calls[:, 1].bool()
    length, n_new = case["prompt"].shape[1], case["n_new"]
    if case["use_cache"] and (not bool(cached.all()) or fed > length + n_new):
        return f"{CACHE_UNUSED} (the model was fed {fed} tokens for a {length}-token prompt and {n_new} new ones)"
    if not case["use_cache"] and bool(cached.any()):
        return CACHE_PASSED_WITHOUT
    return ""


def _describe_generate(case) -> str:
    batch, length = case["prompt"].shape
    return f"greedy_generate(model, input_ids[{batch}, {length}], max_new_tokens={case['n_new']}, use_cache={case['use_cache']})"


# ----------------------------------------------------------------------------------------------
# kv_cache_bytes
# ----------------------------------------------------------------------------------------------


def real_model(name: str):
    """The Hugging Face model of a ``kernel.REAL_CACHES`` entry, on the meta device (shapes, no weights)."""
    from transformers import LlamaConfig

    from attention_course.model_configs import meta_model
    from attention_course.models import local_gpt2_config

    if name == "gpt2":
        return meta_model(kernel.harness_gpt2().config, torch.float32)
    if name == "gpt2 float16":
        return meta_model(local_gpt2_config(n_layer=3, n_head=2, n_embd=32, n_positions=32), torch.float16)
    llama = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8,
                        num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    return meta_model(llama, torch.bfloat16)


def model_args(model, batch: int, length: int) -> tuple[int, ...]:
    """kv_cache_bytes's arguments for ``batch`` x ``length`` tokens through ``model``."""
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return (batch, config.num_hidden_layers, heads, head_dim, length, model.dtype.itemsize)


def _bytes_expected(case) -> dict:
    if "real" in case:
        from attention_course.model_configs import hf_cache_bytes

        model = real_model(case["real"])
        batch, length = case["args"][0], case["args"][4]
        assert model_args(model, batch, length) == case["args"], f"{case['real']}: REAL_CACHES is out of date"
        return {"bytes": hf_cache_bytes(model, batch, length)}
    return {"bytes": ref.kv_cache_bytes(*case["args"])}


def _bytes_mistakes(case) -> dict:
    batch, layers, kv_heads, head_dim, seq_len, nbytes = case["args"]
    right = ref.kv_cache_bytes(*case["args"])
    return {"bytes": {
        SEED_FORMULA: batch * layers * kv_heads * seq_len * 2 * 2,
        HEAD_DIM_MISSING: right // head_dim,
        NO_TWO: right // 2,
        NO_BYTES: right // nbytes,
        BITS: right * 8,
    }}


def _describe_bytes(case) -> str:
    if "real" in case:
        return f"kv_cache_bytes{case['args']} vs a real {case['real']} cache after a forward pass"
    return f"kv_cache_bytes{case['args']}"


KV_CACHE = Exercise("test_kv_cache", "KVCache", kernel.cache_cases, kernel.run_cache, _cache_expected, _describe_cache,
                    _cache_mistakes, _cache_judge)
CACHED_ATTENTION = Exercise("test_cached_attention", "cached_gpt2_attention", kernel.attention_cases,
                            kernel.run_cached_attention, _attention_expected, _describe_attention, _attention_mistakes)
GENERATE = Exercise("test_generate", "greedy_generate (Hugging Face generate's greedy tokens, with and without the cache)",
                    kernel.generate_cases, kernel.run_generate, _generate_expected, _describe_generate, _generate_mistakes,
                    _generate_judge)
BYTES = Exercise("test_bytes", "kv_cache_bytes", kernel.bytes_cases, kernel.run_bytes, _bytes_expected, _describe_bytes,
                 _bytes_mistakes)
EXERCISES = (KV_CACHE, CACHED_ATTENTION, GENERATE, BYTES)
