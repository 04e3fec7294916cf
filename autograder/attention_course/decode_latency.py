"""Time per generated token against context length, with and without a KV cache, for the course's
decode loop (``greedy_generate`` over ``GPT2Decoder``) and for Hugging Face ``generate``.

Shared by the KV-cache lesson (its plot) and ``benchmarks/kv_cache_latency.py`` (its table).

How a point is measured: from a prompt of ``context - n_new`` tokens the loop generates ``n_new + 1``
tokens; the clock starts when the model is called for the second time (the prefill and the first
token are done: the GPU is waited for) and stops when the loop returns (waiting for the GPU again).
That time over ``n_new`` is the cost of one decode step at contexts ``context - n_new + 1`` ..
``context``, with everything the loop does per step (Python, kernel launches, argmax, concatenation)
and nothing of the prefill, whose cost at long contexts would drown the steps' in noise. The median
of ``repeats`` runs after a warm-up run (and, before a loop's first point, one untimed generation each
way); cached and uncached runs of a context side by side, in one run.
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


def check_latency_parameters(contexts: Sequence[int], n_new: int, repeats: int, n_positions: int) -> None:
    """Raise ``ValueError`` unless ``measure_decode_latency`` can run these parameters: at least one
    context, each with room for a prompt of at least one token before the ``n_new`` timed steps and
    within the model's ``n_positions``; ``n_new >= 1`` steps and ``repeats >= 1`` runs per point."""
    if not contexts:
        raise ValueError("no context lengths to time")
    if not (isinstance(n_new, int) and n_new >= 1):
        raise ValueError(f"n_new = {n_new!r}: time at least one decode step per point")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats = {repeats!r}: the median needs at least one run per point")
    for context in contexts:
        if not (isinstance(context, int) and n_new < context <= n_positions):
            raise ValueError(f"context {context!r} must be in ({n_new}, {n_positions}]: more than the {n_new} new tokens "
                             f"(a prompt of context - n_new >= 1 tokens comes first), and within GPT-2's {n_positions} positions")


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
    check_latency_parameters(contexts, n_new, repeats, n_positions)
    points = []
    for loop in loops:
        # One untimed generation each way first: the first runs of a process (thread pools, allocator, kernels picked
        # for each shape) are slow, and a per-point warm-up alone left the first point of a run several times too high.
        warm_up = torch.randint(0, hf_model.config.vocab_size, (batch_size, min(contexts) - n_new), generator=generator).to(device)
        with torch.no_grad():
            for use_cache in (True, False):
                _run_once(loop, hf_model, decoder, warm_up, n_new, use_cache, device)
        for context in contexts:
            prompt = torch.randint(0, hf_model.config.vocab_size, (batch_size, context - n_new), generator=generator).to(device)
            cached = seconds_per_token(loop, hf_model, prompt, n_new, True, repeats, decoder)
            uncached = seconds_per_token(loop, hf_model, prompt, n_new, False, repeats, decoder)
            points.append(LatencyPoint(loop, context, cached, uncached))
            if progress:
                progress(f"  {loop:>6} context {context:>5}: {1e3 * cached:8.2f} ms/token cached, {1e3 * uncached:8.2f} uncached")
    return points


def timed_forward_passes(contexts: Sequence[int], n_new: int, repeats: int, n_loops: int = len(LOOPS)) -> dict[str, int]:
    """What ``measure_decode_latency`` runs: forward passes, and the tokens they read, with and without the
    cache (per loop: one untimed warm-up generation each way, then per context one warm-up and ``repeats``
    timed generations each way, each a prefill of ``context - n_new`` tokens and ``n_new`` steps)."""
    runs = [(min(contexts), 1)] + [(context, 1 + repeats) for context in contexts]  # (context, generations each way)
    passes = n_loops * sum(count * (n_new + 1) for _, count in runs)  # each way
    prompt = [(context - n_new, count) for context, count in runs]
    cached_tokens = n_loops * sum(count * (p + n_new) for p, count in prompt)  # the prefill, then one token per step
    uncached_tokens = n_loops * sum(count * sum(p + i for i in range(n_new + 1)) for p, count in prompt)  # everything, every step
    return {"passes_cached": passes, "passes_uncached": passes, "tokens_cached": cached_tokens, "tokens_uncached": uncached_tokens}


def estimate_seconds(hf_model, contexts: Sequence[int], n_new: int, repeats: int, loops: Sequence[str] = ("course", "hf"),
                     batch_size: int = 1) -> float:
    """A quick forecast of how long ``measure_decode_latency`` takes on this device: a cached step (one
    token) and an uncached pass over ``max(contexts)`` tokens are timed once each (after a warm-up), a
    line ``seconds = fixed + per_token * tokens`` through them is charged for every pass that
    ``timed_forward_passes`` counts. The course's loop stands in for Hugging Face's (whose uncached
    passes are a little cheaper: it computes the logits of the last position only)."""
    device = next(hf_model.parameters()).device
    decoder = GPT2Decoder(hf_model)
    longest = torch.zeros(batch_size, max(contexts), dtype=torch.long, device=device)

    def seconds(input_ids, caches=None) -> float:
        synchronize(device)
        started = time.perf_counter()
        decoder(input_ids, caches)
        synchronize(device)
        return time.perf_counter() - started

    with torch.no_grad():
        seconds(longest[:, :8])  # warm-up
        caches = decoder.new_caches(batch_size, 2)
        seconds(longest[:, :1], caches)
        one = seconds(longest[:, :1], caches)  # a cached step: one new token after one cached
        whole = seconds(longest)  # an uncached pass over the longest context
    per_token = max(whole - one, 0.0) / (max(contexts) - 1)
    fixed = max(one - per_token, 0.0)
    counts = timed_forward_passes(contexts, n_new, repeats, n_loops=len(loops))
    passes = counts["passes_cached"] + counts["passes_uncached"]
    return passes * fixed + (counts["tokens_cached"] + counts["tokens_uncached"]) * per_token


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
