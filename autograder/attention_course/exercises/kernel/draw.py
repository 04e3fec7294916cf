"""Drawing an exercise's inputs from a seed: the same tensors in the grader's process and in a kernel."""

import os

import torch

# The package's own tests on a GPU (scripts/gpu_check.sh) set this to run the thorough checks on CUDA
# too. Graded cells never do: a score must not depend on the grader's hardware (the meta-device
# requirement, ``devices.device_problem``, finds device bugs on any machine).
CUDA_CHECKS_ENV = "ATTENTION_COURSE_CHECKS_ON_CUDA"
RAISES = "raises"  # an output that is an exception: (RAISES, "ValueError")


def integer(generator: torch.Generator, low: int, high: int) -> int:
    """A whole number in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def randn(generator: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """Standard normal float64 numbers (cast them to the dtype under test: the same values in every dtype)."""
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


def devices(thorough: bool) -> list[str]:
    """Where cases compare values: the CPU, on every machine (so the same cases everywhere)."""
    opted_in = os.environ.get(CUDA_CHECKS_ENV) == "1" and torch.cuda.is_available()
    return ["cpu", "cuda"] if thorough and opted_in else ["cpu"]


def dtypes(thorough: bool) -> list[torch.dtype]:
    """float32, and the half-precision types in thorough cases."""
    return [torch.float32, torch.float16, torch.bfloat16] if thorough else [torch.float32]


def raised(fn, *args, **kwargs):
    """fn's result, or (RAISES, the exception's type name): for calls that must raise."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the spec judges which type was expected
        return (RAISES, type(error).__name__)


def shape(tensor) -> str:
    """A tensor's shape as the checks' messages write it: (2, 3, 8)."""
    return str(tuple(tensor.shape))
