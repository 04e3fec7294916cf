"""One spec per graded exercise, run by both the notebook's checks and the grader's verdicts.

An ``Exercise`` joins its kernel half (``kernel/<topic>.py``: how its inputs are drawn from a seed,
how the student's code is called) with its reference half (``<topic>.py``: the expected outputs,
the named mistakes, the requirements a comparison cannot judge). The notebook's test cells run it
in the student's process (``checks.diagnosis.run_checks``): visible cases from seed 0, hidden
thorough ones from the cell's seed. The grader runs the kernel half in the harvest kernel from a
fresh seed and judges what came back with the same reference half (``Exercise.problem``): one
spec, one judgement, the same named mistake in the notebook and in the grade.
"""

import functools
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from attention_course.assignments import BY_ID
from attention_course.exercises.kernel.draw import RAISES
from attention_course.exercises.kernel.plain_data import decode
from attention_course.tolerances import LOW_PRECISION, close

Case = dict  # the inputs of one call, drawn from the seed: tensors and plain values

@dataclass(frozen=True)
class Exercise:
    """A graded test cell that checks code.

    Kernel half: ``cases(generator, thorough)`` draws the inputs (CPU tensors from a seeded
    generator: the same in every process); ``run(student, case)`` calls the student's names
    (``student.causal_mask``) and returns named outputs, measured where they are made (bytes
    allocated, calls of a model). Reference half: ``expected(case)`` the outputs a correct answer
    gives (tensors in the dtype they should have, ``(RAISES, "ValueError")``, numbers, strings);
    ``mistakes(case)`` output -> {what a known mistake is: the output it gives}, computed only when
    an output is wrong; ``judge(case, outputs)`` what a comparison cannot judge ('' when fine)."""

    grade_id: str
    title: str
    cases: Callable[[torch.Generator, bool], list[Case]]
    run: Callable[[object, Case], dict]
    expected: Callable[[Case], dict]
    describe: Callable[[Case], str]
    mistakes: Callable[[Case], Mapping[str, Mapping[str, object]]] | None = None
    judge: Callable[[Case, dict], str] | None = None

    def problem(self, case: Case, outputs: dict) -> str:
        """'' when ``outputs`` are right for ``case``, else what is wrong, named where a mistake is known."""
        expected = self.expected(case)
        control = self.control(case, expected)
        for name, value in expected.items():
            if name not in outputs:
                return f"no {name} came back"
            label = f"{name}: " if len(expected) > 1 else ""
            named = (lambda name=name: (self.mistakes(case) or {}).get(name, {})) if self.mistakes else dict
            problem = compare(outputs[name], value, named, control.get(name))
            if problem:
                return label + problem
        return self.judge(case, outputs) if self.judge else ""

    def control(self, case: Case, expected: dict) -> dict:
        """The course's own solutions run on ``case`` when a result is expected in half precision (``{}`` else):
        the yardstick of its rounding (``tolerances``)."""
        if not any(isinstance(v, torch.Tensor) and v.dtype in LOW_PRECISION for v in expected.values()):
            return {}
        return self.run(_solutions(self.cases.__module__), case)


@functools.cache
def _solutions(kernel_module: str):
    """The reference solutions (``kernels/<module>``) of the assignment whose exercises draw their cases in ``kernel_module``."""
    topic = kernel_module.rsplit(".", 1)[-1]
    record = next(r for r in BY_ID.values() if r.topic == topic and r.kernels)
    return importlib.import_module(f"attention_course.kernels.{record.kernels}")


def exercises_of(assignment: str) -> tuple[Exercise, ...]:
    """An assignment's exercises: ``exercises/<topic>.py``'s ``EXERCISES`` (none for a quiz)."""
    record = BY_ID[assignment]
    if record.kernels is None:
        return ()
    return importlib.import_module(f"attention_course.exercises.{record.topic}").EXERCISES


def _raised(value) -> str | None:
    """The exception type of a raised output, (RAISES, type) or an expected (RAISES, type, why)."""
    return value[1] if isinstance(value, tuple) and len(value) in (2, 3) and value[0] == RAISES else None


def _matching_mistake(actual, named: Callable[[], Mapping[str, object]]) -> str:
    for message, wrong in named().items():
        if isinstance(wrong, torch.Tensor) and isinstance(actual, torch.Tensor):
            if close(actual, wrong if wrong.dtype == torch.bool else wrong.to(actual.dtype)):
                return message
        elif not isinstance(wrong, torch.Tensor) and _whole(actual) == wrong:
            return message
    return ""


def _whole(value):
    """A whole number in any of the forms the checks accept (an int, a float like 3.0, a 1-element tensor), else None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    return None


def compare(actual, expected, named: Callable[[], Mapping[str, object]] = dict, control=None) -> str:
    """'' when ``actual`` matches ``expected``, else what is wrong: the first known mistake it
    matches (``named``), or how it differs (``control``: the course's own result, see ``tolerances``)."""
    if _raised(expected):
        if _raised(actual) == _raised(expected):
            return ""
        got = f"raised {_raised(actual)}" if _raised(actual) else "returned normally"
        why = f" for {expected[2]}" if len(expected) == 3 else ""
        return f"should raise {_raised(expected)}{why}, but {got}"
    if _raised(actual):
        return f"raised {_raised(actual)}"
    if isinstance(expected, torch.Tensor):
        return _tensor_problem(actual, expected, named, control if isinstance(control, torch.Tensor) else None)
    if isinstance(expected, bool):
        return "" if actual is expected else f"is {actual!r}, expected {expected!r}"
    if isinstance(expected, int):
        if _whole(actual) == expected:
            return ""
        return _matching_mistake(actual, named) or f"is {actual!r}, expected {expected:,}"
    if isinstance(expected, str):
        if expected == "" and isinstance(actual, str):  # a requirement measured where the code ran: what broke it, or ''
            return actual
        return "" if actual == expected else f"is {actual!r}, expected {expected!r}"
    raise TypeError(f"cannot compare an expected {type(expected).__name__}")


def _tensor_problem(actual, expected: torch.Tensor, named, control: torch.Tensor | None) -> str:
    if not isinstance(actual, torch.Tensor):
        return f"should return a torch.Tensor, got {getattr(actual, 'description', type(actual).__name__)}"
    if actual.device != expected.device:
        return (f"the output is on {actual.device} but the inputs are on {expected.device}; keep every tensor on "
                "the device of the inputs (pass device=... when you create one)")
    if actual.dtype != expected.dtype:
        return _dtype_problem(actual, expected)
    if close(actual, expected, control):
        return ""
    mistake = _matching_mistake(actual, named)
    if mistake:
        return mistake
    if actual.shape != expected.shape:
        return f"output shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if actual.dtype == torch.bool or not actual.is_floating_point():
        wrong = (actual.cpu() != expected.cpu()).nonzero()
        return f"{len(wrong)} entries differ, first at index {tuple(wrong[0].tolist())}"
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        return ("the output contains NaN. A softmax over a row where every score is -inf gives NaN: "
                "does every query keep at least its own position?")
    error = (actual.double().cpu() - expected.double().cpu()).abs().nan_to_num(math.inf)
    index = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    return (f"values differ from the reference; largest error {error.max().item():.3g} at index {index} "
            f"(got {actual[index].item():.6g}, expected {expected[index].item():.6g})")


def _dtype_problem(actual: torch.Tensor, expected: torch.Tensor) -> str:
    if expected.dtype == torch.bool:
        return f"return a bool tensor, got dtype {actual.dtype}"
    return f"output dtype {actual.dtype}, expected {expected.dtype} (the dtype of the inputs)"


def harvest_request(exercise: Exercise, seed: int, fused_forbidden: bool) -> dict:
    """What the harvest kernel is asked to run for ``exercise``: its kernel half, by module and name."""
    return {"grade_id": exercise.grade_id, "module": exercise.cases.__module__, "cases": exercise.cases.__name__,
            "run": exercise.run.__name__, "seed": seed, "fused_forbidden": fused_forbidden}


def judge_harvest(exercise: Exercise, seed: int, harvested) -> str:
    """'' when every thorough case drawn from ``seed`` came back right from the harvest kernel, else the first problem."""
    if not isinstance(harvested, dict):
        return "no result came back from the notebook for this item (the harvest did not run to its end)"
    if harvested.get("forbidden"):
        return f"a forbidden shortcut: {harvested['forbidden']}"
    results = harvested.get("cases")
    if not isinstance(results, list):
        return str(harvested.get("error") or "no result came back for this item")[:500]
    for index, case in enumerate(exercise.cases(torch.Generator().manual_seed(seed), True)):
        what = exercise.describe(case)
        if index >= len(results) or not isinstance(results[index], dict):
            return f"{what}: no result (the harvest stopped: {str(harvested.get('error') or 'unknown')[:300]})"
        outputs = {key: decode(value) for key, value in results[index].items()}
        if "error" in outputs:
            return f"{what} raised {outputs['error']}"
        problem = exercise.problem(case, outputs)
        if problem:
            return f"{what}: {problem}"
    return ""
