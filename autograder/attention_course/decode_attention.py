"""One decode step of attention (one new query per head against a cache of T positions) for MHA,
GQA and MQA: its time, the bytes it moves, and the memory each way of computing it allocates.

Shared by lesson 03 (MHA vs MQA against context), lesson 04 (repeat_kv vs no-copy, peak memory)
and ``benchmarks/decode_attention.py`` (all variants side by side).

How a point is measured: for every number of key/value heads G the step gets its own inputs,
q [B, H, 1, d] and k, v [B, G, T, d] (random: attention's cost does not depend on the values).
A real decode step reads each layer's cache once, between reads of the other layers' caches and
weights, so the cache comes from main memory, not from the processor's caches. To time that, and
not a cache that stays hot because the same small tensors are read again and again, each
configuration holds enough copies ("layers") to fill ``working_set`` bytes and every call reads
the next one. A sample is the mean time of enough calls to last ``min_seconds``; after a warm-up,
the samples of all configurations are taken in turns (round robin), so that a slower moment of a
shared machine falls on all of them alike, and each point is the median of ``repeats`` samples.
The clock is ``time.perf_counter`` read after ``timing.synchronize`` (the GPU is waited for).

Bytes moved (``step_traffic``): what each operation of a path reads from and writes to memory. The
cache is not all of it. The course's unfused kernels write the H x T scores, read them back to scale
them, write the probabilities and read them again for the product with v, whatever G: with H = 32,
d = 128 in float16 that is more bytes than MQA's whole cache, and it bounds how much faster MQA's step
can be. A fused kernel (``sdpa``; FlashAttention, FlashDecoding) keeps scores and probabilities in
on-chip memory and moves only q, k, v and the output. ``measure_traffic`` counts the same thing on the
operations PyTorch really runs (read: every input tensor, written: every new output), so the model
can be checked against them.
"""

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from attention_course.kernels.causal import attention
from attention_course.kernels.gqa import gqa_attention, repeat_kv
from attention_course.kernels.kv_cache import kv_cache_bytes
from attention_course.exercises.kernel.allocations import tensors_in
from attention_course.timing import synchronize
from attention_course.tolerances import tolerance

PATHS = {
    "grouped": "gqa_attention: a group's query heads as the rows of one matrix product (no copy of k, v)",
    "repeat_kv": "repeat_kv, then attention per query head (k, v copied H/G times; none for MHA)",
    "broadcast": "q viewed [B, G, H/G, 1, d] @ k [B, G, 1, d, T] (torch.matmul copies the broadcast k)",
    "sdpa": "F.scaled_dot_product_attention(q, k, v, enable_gqa=True), PyTorch's fused kernel",
}


def variant(n_heads: int, n_kv_heads: int) -> str:
    """'MHA' (G = H), 'MQA' (G = 1) or 'GQA-G'."""
    if n_kv_heads == n_heads:
        return "MHA"
    if n_kv_heads == 1:
        return "MQA"
    return f"GQA-{n_kv_heads}"


def layer_cache_bytes(batch: int, n_kv_heads: int, head_dim: int, context: int, dtype: torch.dtype) -> int:
    """Bytes of one layer's keys and values at ``context`` positions: what a decode step reads."""
    return kv_cache_bytes(batch, 1, n_kv_heads, head_dim, context, dtype.itemsize)


@dataclass(frozen=True)
class Transfer:
    """One operation of a decode step and the bytes it reads and writes."""
    operation: str
    read: int
    written: int


def traffic_bytes(transfers: Sequence[Transfer]) -> int:
    """Bytes read plus bytes written, over all operations."""
    return sum(t.read + t.written for t in transfers)


MODELLED_PATHS = ("grouped", "repeat_kv", "sdpa")


def step_traffic(batch: int, n_heads: int, n_kv_heads: int, head_dim: int, context: int, dtype: torch.dtype = torch.float32,
                 path: str = "grouped", device="cpu") -> list[Transfer]:
    """The bytes each operation of one decode step reads and writes (one query per head against
    ``context`` cached positions), for ``path`` in MODELLED_PATHS:

    - ``grouped`` (the course's ``gqa_attention``, MHA to MQA): q k^T writes the scores, the scale
      reads and writes them, the softmax (in float32: 16-bit scores are converted to float32 first
      and back after it; on a GPU, float16 is converted inside the softmax) reads them and writes the
      probabilities, and the product with v reads the probabilities. The scores cost the same for every G;
    - ``repeat_kv``: k and v copied to H heads first (read G heads, write H), then the same with G = H;
    - ``sdpa``: a fused kernel: q, k and v read once, the output written with one float32 log-sum-exp
      per query row (what PyTorch's fused CPU kernel writes); scores stay in on-chip memory.

    ``measure_traffic`` counts the same on the operations PyTorch runs; on a CPU the two agree exactly."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
    if path not in MODELLED_PATHS:
        raise ValueError(f"no byte model for path {path!r}: one of {', '.join(MODELLED_PATHS)}")
    size = dtype.itemsize
    q_bytes = batch * n_heads * head_dim * size  # one query per head; the output has the same size
    kv_bytes = batch * n_kv_heads * context * head_dim * size  # k, and v, each
    if path == "sdpa":
        return [Transfer("fused attention: q, k, v in, output (and a float32 log-sum-exp per row) out",
                         q_bytes + 2 * kv_bytes, q_bytes + batch * n_heads * 4)]
    transfers = []
    if path == "repeat_kv" and n_kv_heads < n_heads:
        for name in "kv":
            transfers.append(Transfer(f"repeat_kv({name}): {n_heads // n_kv_heads} copies of each head", kv_bytes,
                                      kv_bytes * n_heads // n_kv_heads))
        kv_bytes = kv_bytes * n_heads // n_kv_heads
    scores = batch * n_heads * context  # H x T score entries
    accumulate = torch.promote_types(dtype, torch.float32).itemsize
    transfers += [Transfer("scores = q k^T", q_bytes + kv_bytes, scores * size),
                  Transfer("scores scaled by 1/sqrt(d)", scores * size, scores * size)]
    if accumulate == size:
        transfers.append(Transfer("softmax", scores * size, scores * size))
    else:
        if torch.device(device).type == "cuda" and dtype == torch.float16:
            transfers.append(Transfer("softmax, float16 in, float32 out", scores * size, scores * accumulate))
        else:
            transfers += [Transfer("scores to float32", scores * size, scores * accumulate),
                          Transfer("softmax", scores * accumulate, scores * accumulate)]
        transfers.append(Transfer(f"probabilities back to {str(dtype).removeprefix('torch.')}", scores * accumulate, scores * size))
    transfers.append(Transfer("output = probabilities @ v", scores * size + kv_bytes, q_bytes))
    return transfers


class _Traffic(TorchDispatchMode):
    """While active, one Transfer per operation that makes a new tensor (views and in-place results
    are left out): the distinct bytes of its input tensors as read, of its new outputs as written."""

    def __init__(self):
        super().__init__()
        self.transfers: list[Transfer] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        inputs = tensors_in(args) + tensors_in(list((kwargs or {}).values()))
        seen = {t.untyped_storage().data_ptr() for t in inputs}
        new = [t for t in tensors_in(output) if t.untyped_storage().data_ptr() not in seen]
        if new:
            self.transfers.append(Transfer(func.overloadpacket.__name__, sum(map(_distinct_bytes, inputs)),
                                           sum(map(_distinct_bytes, new))))
        return output


def _distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements, but no more than its storage holds: an expanded (broadcast)
    view repeats elements that are in memory once."""
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


def measure_traffic(fn: Callable, *args) -> list[Transfer]:
    """The operations ``fn(*args)`` runs, each with the bytes of its inputs and new outputs (named
    as PyTorch names them: bmm, mul, _softmax, _to_copy, clone, a fused kernel's name, ...). An
    operation that reads a tensor in several passes is counted once: a lower bound on its traffic."""
    mode = _Traffic()
    with torch.no_grad(), mode:
        fn(*args)
    return mode.transfers


def _broadcast_attention(q, k, v):
    batch, n_heads, n_queries, head_dim = q.shape
    n_kv_heads = k.shape[1]
    q = q.view(batch, n_kv_heads, n_heads // n_kv_heads, n_queries, head_dim)  # [B, G, H/G, 1, d]
    scores = q @ k[:, :, None].transpose(-2, -1) * head_dim**-0.5  # k [B, G, 1, d, T] broadcast: copied H/G times
    weights = torch.softmax(scores, dim=-1)
    return (weights @ v[:, :, None]).view(batch, n_heads, n_queries, v.shape[-1])


def _repeat_kv_attention(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:  # as Hugging Face's repeat_kv: nothing to repeat for MHA
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    return attention(q, k, v, causal=False)


def decode_step(path: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The decode step of ``path`` (a key of PATHS): (q [B, H, 1, d], k, v [B, G, T, d]) -> [B, H, 1, d].
    The one new query is the last position, so it may see every cached key: no mask."""
    steps = {
        "grouped": lambda q, k, v: gqa_attention(q, k, v, causal=False),
        "repeat_kv": _repeat_kv_attention,
        "broadcast": _broadcast_attention,
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=k.shape[1] != q.shape[1]),
    }
    if path not in steps:
        raise ValueError(f"unknown path {path!r}: one of {', '.join(PATHS)}")
    return steps[path]


def decode_inputs(batch: int, n_heads: int, n_kv_heads: int, context: int, head_dim: int, dtype=torch.float32,
                  device=None, generator: torch.Generator | None = None):
    """q [B, H, 1, d] and k, v [B, G, T, d], random, made on ``device``."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
    generator = generator or torch.Generator().manual_seed(0)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    device_generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    make = lambda *shape: torch.randn(shape, generator=device_generator, device=device, dtype=dtype)  # noqa: E731
    return make(batch, n_heads, 1, head_dim), make(batch, n_kv_heads, context, head_dim), make(batch, n_kv_heads, context, head_dim)


@dataclass(frozen=True)
class DecodePoint:
    context: int  # cached positions T the new query attends to
    n_heads: int  # H query heads
    n_kv_heads: int  # G key/value heads
    head_dim: int
    batch: int
    path: str  # a key of PATHS
    seconds: float  # one layer's decode-step attention, median
    cache_bytes: int  # one layer's keys and values: what the step must read
    step_bytes: int = 0  # every byte the path reads and writes (step_traffic), 0 where there is no model (broadcast)

    @property
    def variant(self) -> str:
        return variant(self.n_heads, self.n_kv_heads)

    @property
    def bandwidth(self) -> float:
        """Cache bytes read per second (the step also reads q and writes its output, little next to the cache)."""
        return self.cache_bytes / self.seconds if self.seconds > 0 else math.inf


def measure_decode_attention(
    n_heads: int,
    kv_heads: Sequence[int],
    contexts: Sequence[int],
    head_dim: int = 128,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device=None,
    paths: Sequence[str] = ("grouped",),
    repeats: int = 5,
    min_seconds: float = 0.01,
    working_set: int = 128 * 2**20,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[DecodePoint]:
    """One DecodePoint per context, G and path, measured side by side (see the module's docstring).
    Every path's output is checked against the grouped kernel's before it is timed."""
    device = torch.device(device or "cpu")
    for path in paths:
        decode_step(path)  # unknown names fail before anything is measured
    generator = torch.Generator().manual_seed(seed)
    points = []
    for context in contexts:
        configs = []  # (G, path, step, list of (q, k, v) copies)
        for n_kv_heads in kv_heads:
            nbytes = layer_cache_bytes(batch, n_kv_heads, head_dim, context, dtype)
            copies = [decode_inputs(batch, n_heads, n_kv_heads, context, head_dim, dtype, device, generator)
                      for _ in range(max(1, math.ceil(working_set / nbytes)))]
            with torch.no_grad():
                expected = gqa_attention(*copies[0], causal=False)
                for path in paths:
                    step = decode_step(path)
                    torch.testing.assert_close(step(*copies[0]), expected, **tolerance(dtype, expected, rounded_twice=True),
                                               msg=lambda m: f"{path}, G={n_kv_heads}, T={context}: {m}")
                    configs.append((n_kv_heads, path, step, copies))
        times, calls, cursor = {}, {}, {}
        with torch.no_grad():
            for n_kv_heads, path, step, copies in configs:  # warm-up, and how many calls make a sample
                key = n_kv_heads, path
                cursor[key] = 0
                one = _time_calls(step, copies, cursor, key, min(len(copies), 8), device)
                calls[key] = max(1, math.ceil(min_seconds / max(one, 1e-9)))
            for _ in range(repeats):
                for n_kv_heads, path, step, copies in configs:
                    key = n_kv_heads, path
                    times.setdefault(key, []).append(_time_calls(step, copies, cursor, key, calls[key], device))
        for n_kv_heads, path, _, _ in configs:
            moved = (traffic_bytes(step_traffic(batch, n_heads, n_kv_heads, head_dim, context, dtype, path, device))
                     if path in MODELLED_PATHS else 0)
            point = DecodePoint(context, n_heads, n_kv_heads, head_dim, batch, path,
                                statistics.median(times[n_kv_heads, path]),
                                layer_cache_bytes(batch, n_kv_heads, head_dim, context, dtype), moved)
            points.append(point)
            if progress:
                progress(f"  T={context:>6} {point.variant:>7} {path:>9}: {1e3 * point.seconds:9.4f} ms per step")
        del configs
    return points


def _time_calls(step, copies, cursor, key, n: int, device) -> float:
    """Seconds per call of n calls, each on the next copy of the inputs (cursor[key] remembers where)."""
    start = cursor[key]
    synchronize(device)
    started = time.perf_counter()
    for i in range(start, start + n):
        step(*copies[i % len(copies)])
    synchronize(device)
    elapsed = time.perf_counter() - started
    cursor[key] = (start + n) % len(copies)
    return elapsed / n


def ratios_to_mha(points: Sequence[DecodePoint]) -> dict[tuple[int, int, str], float]:
    """(context, G, path) -> MHA's time over this point's time, for the same context and path (> 1: faster than MHA)."""
    mha = {(p.context, p.path): p.seconds for p in points if p.n_kv_heads == p.n_heads}
    return {(p.context, p.n_kv_heads, p.path): mha[p.context, p.path] / p.seconds
            for p in points if (p.context, p.path) in mha}


def format_table(points: Sequence[DecodePoint]) -> str:
    """One row per context and G: cache bytes and their ratio to MHA's, then per path the time per
    step and MHA's time over it, then the cache bytes read per second by the first path."""
    paths = list(dict.fromkeys(p.path for p in points))
    rows = list(dict.fromkeys((p.context, p.n_kv_heads) for p in points))
    by_key = {(p.context, p.n_kv_heads, p.path): p for p in points}
    mha_bytes = {p.context: p.cache_bytes for p in points if p.n_kv_heads == p.n_heads}
    ratio = ratios_to_mha(points)
    header = f"{'context':>7} {'variant':>7} {'G':>3} {'cache bytes':>13} {'MHA/this':>8}"
    for path in paths:
        header += f" | {path + ' ms':>13} {'MHA/this':>8}"
    header += f" | {paths[0] + ' GB/s':>12}"
    lines = [header, "-" * len(header)]
    for context, n_kv_heads in rows:
        first = by_key[context, n_kv_heads, paths[0]]
        bytes_ratio = f"{mha_bytes[context] / first.cache_bytes:.2f}x" if context in mha_bytes else "-"
        line = f"{context:>7} {first.variant:>7} {n_kv_heads:>3} {first.cache_bytes:>13} {bytes_ratio:>8}"
        for path in paths:
            p = by_key[context, n_kv_heads, path]
            r = ratio.get((context, n_kv_heads, path))
            line += f" | {1e3 * p.seconds:>13.4f} {(f'{r:.2f}x' if r is not None else '-'):>8}"
        line += f" | {first.bandwidth / 1e9:>12.2f}"
        lines.append(line)
    return "\n".join(lines)
