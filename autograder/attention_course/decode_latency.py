"""Time per generated token against context length, with and without a KV cache, for the course's
decode loop (``greedy_generate`` over ``GPT2Decoder``) and for Hugging Face ``generate``.

Shared by the KV-cache lesson (its plot) and ``benchmarks/kv_cache_latency.py`` (its table).

How a point is measured: from a prompt of ``context - n_new`` tokens the loop generates ``n_new + 1``
tokens; the clock starts when the model is called for the second time (the prefill and the first
token are done: the GPU is waited for) and stops when the loop returns (waiting for the GPU again).
That time over ``n_new`` is the cost of one decode step at contexts ``context - n_new + 1`` ..
``context``, with everything the loop does per step (Python, kernel launches, argmax, concatenation)
and nothing of the prefill, whose cost at long contexts would drown the steps' in noise. The median
of ``repeats`` runs after a warm-up run; cached and uncached runs of a context side by side, in one run.
The clock is ``time.perf_counter`` read after ``timing.synchronize``: timing whole calls would time
the prefill too.
"""

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from attention_course.gpt2_forward import GPT2Decoder, hf_greedy
from attention_course.kernels.kv_cache import greedy_generate
from attention_course.timing import synchronize

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


class _StepClock:
    """Starts when the model is called the second time: the prefill (first call) is over, the decode steps begin."""

    def __init__(self, device):
        self.device = device
        self.calls = 0
        self.started = None

    def tick(self) -> None:
        self.calls += 1
        if self.calls == 2:
            synchronize(self.device)  # the prefill's GPU work is done; later steps run as they would
            self.started = time.perf_counter()


class _Clocked:
    """A GPT2Decoder that tells the clock when it is called."""

    def __init__(self, decoder: GPT2Decoder, clock: _StepClock):
        self.decoder, self.clock = decoder, clock

    def new_caches(self, batch_size, max_len):
        return self.decoder.new_caches(batch_size, max_len)

    def __call__(self, input_ids, caches=None):
        self.clock.tick()
        return self.decoder(input_ids, caches)


def _run_once(loop: str, hf_model, decoder: GPT2Decoder, prompt: torch.Tensor, n_new: int, use_cache: bool, device) -> float:
    """Seconds per decode step of one generation of n_new + 1 tokens, the prefill and first token left out."""
    clock = _StepClock(device)
    if loop == "course":
        greedy_generate(_Clocked(decoder, clock), prompt, n_new + 1, use_cache=use_cache)
    elif loop == "hf":
        handle = hf_model.register_forward_pre_hook(lambda module, args: clock.tick())
        try:
            hf_greedy(hf_model, prompt, n_new + 1, use_cache=use_cache)
        finally:
            handle.remove()
    else:
        raise ValueError(f"unknown loop {loop!r}: one of {', '.join(LOOPS)}")
    synchronize(device)
    ended = time.perf_counter()
    if clock.calls != n_new + 1:
        raise RuntimeError(f"{loop}: expected {n_new + 1} forward passes for {n_new + 1} tokens, counted {clock.calls}")
    return (ended - clock.started) / n_new


def seconds_per_token(loop: str, hf_model, prompt: torch.Tensor, n_new: int, use_cache: bool, repeats: int = 3,
                      decoder: GPT2Decoder | None = None) -> float:
    """Median over ``repeats`` runs (after one warm-up run) of the seconds per decode step."""
    device = prompt.device
    decoder = decoder or GPT2Decoder(hf_model)
    with torch.no_grad():
        _run_once(loop, hf_model, decoder, prompt, n_new, use_cache, device)  # warm-up
        return statistics.median(_run_once(loop, hf_model, decoder, prompt, n_new, use_cache, device) for _ in range(repeats))


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
    decoder = GPT2Decoder(hf_model)
    n_positions = hf_model.config.n_positions
    generator = torch.Generator().manual_seed(seed)
    points = []
    for loop in loops:
        for context in contexts:
            if not n_new < context <= n_positions:
                raise ValueError(f"context {context} must be in ({n_new}, {n_positions}] (GPT-2's positions) for {n_new} new tokens")
            prompt = torch.randint(0, hf_model.config.vocab_size, (batch_size, context - n_new), generator=generator).to(device)
            cached = seconds_per_token(loop, hf_model, prompt, n_new, True, repeats, decoder)
            uncached = seconds_per_token(loop, hf_model, prompt, n_new, False, repeats, decoder)
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
