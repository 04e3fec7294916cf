"""Measuring time on the device in use, shared by the lessons' plots and the benchmark scripts."""

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device="cpu", repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` after ``warmup`` calls, waiting for the GPU each time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
