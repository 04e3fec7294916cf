"""The test cells' checks of 02_kv_cache: its exercises' specs (``exercises/kv_cache.py``) run on
the notebook's functions. ``thorough=True`` is what hidden tests use: more shapes, batch > 1,
multi-token updates after a prefix, float16 / bfloat16 throughout, Hugging Face oracles
(``GPT2Attention``, ``generate``, the bytes of a real cache after a forward pass).

Each check isolates its exercise: ``cached_gpt2_attention`` is run with the harness's cache, and
``greedy_generate`` with the harness's model, so that one mistake costs one exercise."""

from attention_course.checks.diagnosis import run_checks
from attention_course.exercises import kv_cache as spec
from attention_course.kernels import causal as causal_ref
from attention_course.model_configs import hf_cache_bytes, llama2_7b_config, meta_model  # noqa: F401 (test cells use them)


def check_kv_cache(KVCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.KV_CACHE, {"KVCache": KVCache}, thorough, seed)


def check_cached_gpt2_attention(cached_gpt2_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.CACHED_ATTENTION, {"cached_gpt2_attention": cached_gpt2_attention}, thorough, seed)


def check_greedy_generate(greedy_generate, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.GENERATE, {"greedy_generate": greedy_generate}, thorough, seed)


def check_kv_cache_bytes(kv_cache_bytes, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.BYTES, {"kv_cache_bytes": kv_cache_bytes}, thorough, seed)


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
