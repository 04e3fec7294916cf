"""The test cells' checks of 07_latent_and_paged: its exercises' specs (``exercises/latent_and_paged.py``) run on the
notebook's functions. ``thorough=True`` is what hidden tests use: more sizes, sizes drawn from the seed, float16 /
bfloat16, and Hugging Face's ``DeepseekV3Attention`` as the layer's oracle."""

from attention_course.checks.diagnosis import run_checks
from attention_course.exercises import latent_and_paged as spec


def check_mla_cache_bytes(mla_cache_bytes, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.CACHE_BYTES, {"mla_cache_bytes": mla_cache_bytes}, thorough, seed)


def check_latent_attention(MultiHeadLatentAttention, LatentCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.LATENT_ATTENTION, {"MultiHeadLatentAttention": MultiHeadLatentAttention, "LatentCache": LatentCache},
               thorough, seed)


def check_absorbed(MultiHeadLatentAttention, LatentCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.ABSORBED, {"MultiHeadLatentAttention": MultiHeadLatentAttention, "LatentCache": LatentCache},
               thorough, seed)


def check_paged_cache(PagedKVCache, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.PAGED_CACHE, {"PagedKVCache": PagedKVCache}, thorough, seed)


def check_paged_attention(paged_attention, thorough: bool = False, seed: int = 0) -> None:
    __tracebackhide__ = True
    run_checks(spec.PAGED_ATTENTION, {"paged_attention": paged_attention}, thorough, seed)


__all__ = ["check_mla_cache_bytes", "check_latent_attention", "check_absorbed", "check_paged_cache", "check_paged_attention"]
