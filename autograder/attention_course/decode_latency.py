"""Time per generated token against context length, with and without a KV cache, for the course's
decode loop (``greedy_generate`` over ``GPT2Decoder``) and for Hugging Face ``generate``.

Shared by the KV-cache lesson (its plot) and ``benchmarks/kv_cache_latency.py`` (its table).

How a point is measured: from a prompt of ``context - n_new`` tokens, the median time to generate
``n_new + 1`` tokens minus the median time to generate 1 token (the prefill and the first token),
divided by ``n_new``. That is the cost of one decode step at contexts ``context - n_new + 1`` ..
``context``, with everything the loop does per step (Python, kernel launches, argmax, concatenation)
and nothing of the prefill. Cached and uncached runs of a context are measured side by side, in one
run, with ``timing.seconds_per_call`` (which waits for the GPU).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from attention_course.gpt2_forward import GPT2Decoder, hf_greedy
from attention_course.kernels.kv_cache import greedy_generate
from attention_course.timing import seconds_per_call

LOOPS = {
    "course": "course decode loop (greedy_generate over GPT2Decoder)",
    "hf": "Hugging Face generate",
}


@dataclass(frozen=True)
class LatencyPoint:
    loop: str  # a key of LOOPS
    context: int  # tokens in the sequence when the measured steps end
    cached_s: float  # seconds per generated token with the KV cache
    uncached_s: float  # ... without it (every step recomputes the whole sequence)

    @property
    def speedup(self) -> float:
        return self.uncached_s / self.cached_s if self.cached_s > 0 else math.inf


def generator_for(loop: str, hf_model) -> Callable[[torch.Tensor, int, bool], torch.Tensor]:
    """``generate(prompt, n_new, use_cache)`` for one of the LOOPS."""
    if loop == "course":
        decoder = GPT2Decoder(hf_model)
        return lambda prompt, n_new, use_cache: greedy_generate(decoder, prompt, n_new, use_cache=use_cache)
    if loop == "hf":
        return lambda prompt, n_new, use_cache: hf_greedy(hf_model, prompt, n_new, use_cache=use_cache)
    raise ValueError(f"unknown loop {loop!r}: one of {', '.join(LOOPS)}")


def seconds_per_token(generate, prompt: torch.Tensor, n_new: int, use_cache: bool, device, repeats: int = 3) -> float:
    """Median seconds per decode step after the prompt (prefill and first token subtracted)."""
    with torch.no_grad():
        many = seconds_per_call(lambda: generate(prompt, n_new + 1, use_cache), device, repeats=repeats, warmup=1)
        one = seconds_per_call(lambda: generate(prompt, 1, use_cache), device, repeats=repeats, warmup=1)
    return max(many - one, 0.0) / n_new


def measure_decode_latency(
    hf_model,
    contexts: Sequence[int],
    n_new: int = 8,
    repeats: int = 3,
    loops: Sequence[str] = ("course", "hf"),
    batch_size: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[LatencyPoint]:
    """One LatencyPoint per loop and context: with and without the cache, measured side by side."""
    device = next(hf_model.parameters()).device
    n_positions = hf_model.config.n_positions
    generator = torch.Generator().manual_seed(seed)
    points = []
    for loop in loops:
        generate = generator_for(loop, hf_model)
        for context in contexts:
            if not n_new < context <= n_positions:
                raise ValueError(f"context {context} must be in ({n_new}, {n_positions}] (GPT-2's positions) for {n_new} new tokens")
            prompt = torch.randint(0, hf_model.config.vocab_size, (batch_size, context - n_new), generator=generator).to(device)
            cached = seconds_per_token(generate, prompt, n_new, True, device, repeats)
            uncached = seconds_per_token(generate, prompt, n_new, False, device, repeats)
            points.append(LatencyPoint(loop, context, cached, uncached))
            if progress:
                progress(f"  {loop:>6} context {context:>5}: {1e3 * cached:8.2f} ms/token cached, {1e3 * uncached:8.2f} uncached")
    return points


def format_table(points: Sequence[LatencyPoint]) -> str:
    """The benchmark's table: one row per loop and context."""
    header = f"{'loop':<8} {'context':>7} {'with cache (ms/token)':>22} {'without cache (ms/token)':>25} {'speedup (without/with)':>23}"
    lines = [header, "-" * len(header)]
    for p in points:
        lines.append(f"{p.loop:<8} {p.context:>7} {1e3 * p.cached_s:>22.3f} {1e3 * p.uncached_s:>25.3f} {p.speedup:>22.2f}x")
    return "\n".join(lines)


def linear_fit(contexts: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``seconds ~ fixed + per_token * context`` with both parts >= 0 (noise can tip a
    free fit below zero): (fixed seconds per step, seconds per token of context)."""
    x = torch.tensor([float(c) for c in contexts], dtype=torch.float64)
    y = torch.tensor(list(seconds), dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], dim=1)
    fixed, slope = torch.linalg.lstsq(design, y[:, None]).solution.flatten().tolist()
    if slope < 0:  # no growth with the context: a constant
        return float(y.mean()), 0.0
    if fixed < 0:  # no fixed part: a line through the origin
        return 0.0, float((x * y).sum() / (x * x).sum())
    return fixed, slope


def crossover(points: Sequence[LatencyPoint], margin: float = 1.1) -> int | None:
    """The smallest measured context from which on the uncached step costs ``margin`` times the cached one or more."""
    ordered = sorted(points, key=lambda p: p.context)
    for i, p in enumerate(ordered):
        if all(q.speedup >= margin for q in ordered[i:]):
            return p.context
    return None
