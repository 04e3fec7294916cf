"""The limits a student's kernel runs within, one set of defaults for every way of grading, and
what this machine can enforce of them (``confined``)."""

import os
import stat
import sys
from dataclasses import dataclass, replace

from attention_course.grading.isolation import isolation_possible


@dataclass(frozen=True)
class Limits:
    cell_seconds: int = 120
    notebook_seconds: int = 600
    output_bytes: int = 1_000_000  # per cell
    memory_bytes: int | None = 8 * 2**30
    # When the grader runs as root, each kernel runs as its own unprivileged user (uids from here on).
    first_uid: int | None = 61000
    threads: int | None = None  # torch threads per kernel; grade_class shares the cores among its workers
    # A bubblewrap sandbox for each kernel: namespaces of its own, a file system of an allow-list (see ``isolation``).
    isolate: bool = False


def confined(limits: Limits) -> tuple[Limits, list[str]]:
    """The limits as this machine can enforce them, and notes on what it cannot."""
    limits, notes = replace(limits, isolate=isolation_possible()), []
    if limits.first_uid is not None and not separate_users_possible():
        limits = replace(limits, first_uid=None)
    if limits.memory_bytes is not None and _has_a_gpu():
        # The memory limit is one of address space (RLIMIT_AS): CUDA reserves far more of it than it uses, and
        # reports out of memory under such limits (ulimit -v of 16 GB in Netflix/vmaf#1382).
        limits = replace(limits, memory_bytes=None)
        notes.append("no memory limit per kernel: this machine has a GPU, and CUDA fails under a limit of address space")
    if limits.isolate:
        return limits, notes
    return limits, notes + ["kernels ran without isolation (it needs bubblewrap, bwrap, on Linux, with user namespaces "
                    "allowed or run as root): student code could read and write "
                    "the grader's files and use the network; submitted files are checked and restored"]


def separate_users_possible() -> bool:
    """Kernels can run as users of their own only when the grader is root and other users can
    reach this Python (its standard library and site-packages)."""
    if os.getuid() != 0:
        return False
    import attention_course

    for place in (sys.base_prefix, sys.prefix, os.path.dirname(attention_course.__file__)):
        path = os.path.realpath(place)
        while True:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            if path == os.path.dirname(path):
                break
            path = os.path.dirname(path)
    return True


def _has_a_gpu() -> bool:
    """Whether kernels here may use CUDA, asked without starting CUDA in this process (the NVIDIA driver's devices)."""
    return os.path.exists("/dev/nvidiactl")
