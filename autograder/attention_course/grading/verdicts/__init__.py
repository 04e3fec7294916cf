"""Verdicts computed outside the student's process.

nbgrader runs a notebook's test cells in the student's own Python process, after the student's
code: whatever that process reports can be faked. So every graded item is also judged here, in the
grader's process, which never runs student code:

1. the grader picks a fresh seed and appends a *harvest* cell to the notebook (``harvest.py``);
2. in the student's process the harvest calls the student's functions on inputs drawn from that
   seed, reads the quiz answers, and prints the results as plain data (numbers, strings, raw array
   bytes in base64: nothing is unpickled);
3. the grader draws the same inputs from the same seed, computes the expected outputs with the
   reference kernels (quiz keys: the hidden tests' own code, run here), and compares.

An item earns its points only when its test cell passed in the student's process *and* its verdict
here passed. One module per assignment lists its exercises; ``quiz`` replays the quiz cells.
"""

import base64
import importlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from attention_course.assignments import BY_ID
from attention_course.checks.diagnosis import close

HARVEST_MIME = "application/vnd.attention-course.harvest+json"
ERROR_NAME = "OutOfProcessVerdict"

Case = dict  # the inputs of one call, drawn from the seed: tensors and plain values


@dataclass(frozen=True)
class Exercise:
    """A graded test cell that checks code.

    ``cases(generator)`` draws the inputs (the same in both processes: CPU tensors from a seeded
    generator); ``run(student, case)`` calls the student's code in the student's process and returns
    named outputs; ``expected(case)`` computes them with the reference, in the grader's process.
    ``judge(case, outputs)`` (optional) judges what a comparison cannot: e.g. bytes allocated."""

    grade_id: str
    names: tuple[str, ...]
    cases: Callable[[torch.Generator], list[Case]]
    run: Callable[[object, Case], dict]
    expected: Callable[[Case], dict]
    describe: Callable[[Case], str]
    judge: Callable[[Case, dict], str] | None = None
    # Objects the harvest builds and hands to the student's code (a model to decode with, a cache):
    # the student may call them, and what they call is theirs (``harness``: classes or functions
    # of the verdict module; ``allowed``: package objects the student's code calls directly).
    harness: tuple = ()
    allowed: tuple = ()


@dataclass(frozen=True)
class Assignment:
    exercises: tuple[Exercise, ...]
    # Functions and classes of the package that the notebook's setup cell hands to the student
    # (earlier assignments' solutions, the notebook's harness): calling them is not a shortcut.
    allowed: tuple[str, ...] = ()
    # Whether torch's fused attention is the answer to an exercise (not where the notebook hands
    # the student attention already, as 02 hands over 01's).
    fused_attention_forbidden: bool = True


def assignment_spec(assignment: str) -> Assignment:
    """An assignment's exercises (``verdicts/<topic>.py``'s ``EXERCISES``), with its record's hand-overs."""
    record = BY_ID[assignment]
    if record.kernels is None:
        return Assignment(())
    exercises = importlib.import_module(f"attention_course.grading.verdicts.{record.topic}").EXERCISES
    return Assignment(exercises, record.handed_over, not record.fused_attention_allowed)


# ------------------------------------------------------------------------------------------------
# Plain data across the process boundary
# ------------------------------------------------------------------------------------------------

_NUMPY = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16", torch.int64: "int64",
          torch.int32: "int32", torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}
_TORCH = {name: dtype for dtype, name in _NUMPY.items()} | {"bfloat16": torch.bfloat16}
MAX_ELEMENTS = 2_000_000  # a harvested tensor larger than this is refused


def encode(value):
    """A value of the student's process as JSON-able plain data."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu")
        name = "bfloat16" if tensor.dtype == torch.bfloat16 else _NUMPY.get(tensor.dtype)
        if name is None or tensor.numel() > MAX_ELEMENTS:
            return {"object": f"tensor of dtype {tensor.dtype} and shape {tuple(tensor.shape)}"}
        array = (tensor.float() if name == "bfloat16" else tensor).contiguous().numpy()
        return {"tensor": {"dtype": name, "shape": list(tensor.shape), "data": base64.b64encode(array.tobytes()).decode()}}
    if value is None or value is Ellipsis:
        return {"missing": True}
    if type(value) in (bool, str) or type(value) is int:
        return value
    if isinstance(value, float) or (hasattr(value, "__float__") and _is_real(value)):
        number = float(value)
        return int(number) if number.is_integer() and _is_integral(value) else number
    if isinstance(value, (tuple, list)):
        return {"sequence": [encode(v) for v in value]}
    return {"object": type(value).__name__}


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integral(value) -> bool:
    return isinstance(value, numbers.Integral)


class Foreign:
    """A harvested value that is not plain data: the checks see an object they reject."""

    def __init__(self, description: str):
        self.description = description

    def __repr__(self) -> str:
        return f"<{self.description}>"


def decode(data):
    """The grader's side of ``encode``; anything malformed decodes to a ``Foreign``."""
    if isinstance(data, (bool, int, float, str)):
        return data
    if not isinstance(data, dict):
        return Foreign("malformed data")
    if "missing" in data:
        return None
    if "sequence" in data and isinstance(data["sequence"], list):
        return tuple(decode(v) for v in data["sequence"])
    if "tensor" in data:
        try:
            spec = data["tensor"]
            shape = [int(n) for n in spec["shape"]]
            dtype = _TORCH[spec["dtype"]]
            numpy_dtype = "float32" if dtype == torch.bfloat16 else spec["dtype"]
            array = np.frombuffer(base64.b64decode(spec["data"]), dtype=numpy_dtype)
            if array.size != math.prod(shape):
                return Foreign("malformed tensor")
            return torch.from_numpy(array.copy()).reshape(shape).to(dtype)
        except (KeyError, TypeError, ValueError):
            return Foreign("malformed tensor")
    return Foreign(str(data.get("object", "an object that is not plain data"))[:100])


# ------------------------------------------------------------------------------------------------
# Judging one exercise
# ------------------------------------------------------------------------------------------------

RAISES = "raises"  # an expected output that is an exception: {"y": (RAISES, "ValueError")}


def _differs(name: str, actual, expected) -> str:
    """'' when ``actual`` matches ``expected``, else what is wrong with it."""
    if isinstance(expected, tuple) and expected and expected[0] == RAISES:
        return "" if actual == (RAISES, expected[1]) else f"{name} should raise {expected[1]}"
    if isinstance(actual, tuple) and actual and actual[0] == RAISES:
        return f"{name} raised {actual[1]}"
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return f"{name} should be a tensor, got {actual!r}"
        if tuple(actual.shape) != tuple(expected.shape):
            return f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        if not close(actual, expected):
            if expected.dtype == torch.bool or not expected.is_floating_point():
                return f"{name} differs from the reference"
            gap = (actual.double() - expected.double()).abs().nan_to_num(math.inf).max().item()
            return f"{name} differs from the reference (largest difference {gap:.3g})"
        return ""
    if isinstance(expected, bool):
        return "" if actual is expected else f"{name} is {actual!r}, expected {expected!r}"
    if isinstance(expected, int):  # a whole number, in any of the forms the in-notebook checks accept
        if isinstance(actual, torch.Tensor) and actual.numel() == 1:
            actual = actual.item()
        whole = isinstance(actual, (int, float)) and not isinstance(actual, bool) and float(actual).is_integer()
        return "" if whole and int(actual) == expected else f"{name} is {actual!r}, expected {expected:,}"
    if isinstance(expected, str):
        return "" if actual == expected else f"{name} is {actual!r}, expected {expected!r}"
    raise TypeError(f"cannot compare an expected {type(expected).__name__}")


def judge_exercise(exercise: Exercise, cases: list[Case], harvested: dict | None) -> str:
    """'' when every case of the exercise matched the reference, else the first problem."""
    if not isinstance(harvested, dict):
        return "no result came back from the notebook for this item (the harvest did not run to its end)"
    if harvested.get("forbidden"):
        return f"a forbidden shortcut: {harvested['forbidden']}"
    results = harvested.get("cases")
    if not isinstance(results, list):
        return str(harvested.get("error") or "no result came back for this item")[:500]
    for index, case in enumerate(cases):
        what = exercise.describe(case)
        if index >= len(results) or not isinstance(results[index], dict):
            return f"{what}: no result (the harvest stopped: {str(harvested.get('error') or 'unknown')[:300]})"
        outputs = {key: decode(value) for key, value in results[index].items()}
        if "error" in outputs:
            return f"{what} raised {outputs['error']}"
        expected = exercise.expected(case)
        for name, value in expected.items():
            if name not in outputs:
                return f"{what}: no {name} came back"
            problem = _differs(name, outputs[name], value)
            if problem:
                return f"{what}: {problem}"
        if exercise.judge is not None:
            problem = exercise.judge(case, outputs)
            if problem:
                return f"{what}: {problem}"
    return ""



# ------------------------------------------------------------------------------------------------
# Drawing inputs: the same in both processes
# ------------------------------------------------------------------------------------------------


def integer(generator: torch.Generator, low: int, high: int) -> int:
    """A whole number in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def randn(generator: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=generator)


def raised(fn, *args, **kwargs):
    """fn's result, or (RAISES, the exception's type name): for cases that must raise."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the grader judges which type was expected
        return (RAISES, type(error).__name__)


def shape(tensor) -> str:
    return f"[{', '.join(str(n) for n in tensor.shape)}]"
