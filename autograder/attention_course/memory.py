"""What a piece of PyTorch code allocates: the new tensor storages its operations create (not views
of their inputs), how many bytes of them are alive at the peak, and the biggest single one. Used by
the no-copy checks of 03/04 and the decode-attention measurements of the lessons and benchmark."""

from collections.abc import Callable

import torch

from attention_course.exercises.kernel.allocations import NewStorages
from attention_course.timing import synchronize


def peak_memory(fn: Callable, *args, device=None) -> int:
    """Peak bytes that ``fn(*args)`` allocates beyond what exists before it (its output included).
    CUDA: the caching allocator's own peak statistic. CPU: ``NewStorages``; args must already exist."""
    device = torch.device(device or "cpu")
    with torch.no_grad():
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            output = fn(*args)
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
        else:
            mode = NewStorages()
            with mode:
                output = fn(*args)
            peak = mode.peak
    del output
    return peak
