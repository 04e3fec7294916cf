"""Run an exercise's spec on a learner's functions in the notebook: read them first (the answer
language), then every case, failing at the first that is wrong with the known mistake it matches
(``exercises.Exercise.problem``) instead of "assertion failed".

Functions here set ``__tracebackhide__`` so that IPython and pytest leave their frames out of a
failure's traceback: the learner sees their cell and the named mistake, not the checker's insides."""

import weakref
from collections.abc import Callable, Mapping

import torch

from attention_course.answer_rules import read_function
from attention_course.exercises.kernel.harvest import Student


_READ: "weakref.WeakKeyDictionary[Callable, list]" = weakref.WeakKeyDictionary()


def follows_the_rules(fn: Callable, what: str) -> None:
    """Fail, naming the construct and its line, when the cell that defines ``fn`` breaks a rule of
    the answer language (``answer_rules``): the grader would leave that cell out."""
    __tracebackhide__ = True
    key = getattr(fn, "__func__", fn)
    try:
        breaches = _READ[key]
    except (KeyError, TypeError):
        breaches = read_function(fn)
        try:
            _READ[key] = breaches
        except TypeError:  # an object that cannot be weakly referenced: read it again next time
            pass
    if breaches:
        more = f" (and {len(breaches) - 1} more)" if len(breaches) > 1 else ""
        raise AssertionError(f"{what}: outside the rules in the box at the top, so grading would leave the cell out: "
                             f"{breaches[0]}{more}")


# Errors whose cause is a known mistake: a part of the message -> what to do.
HINTS = {
    "view size is not compatible": "after a transpose the tensor is not contiguous; use .reshape(...) or .contiguous().view(...)",
    "without overflow": ("the mask's fill value does not fit in float16 (its largest magnitude is 65504): masked_fill(..., -1e9) "
                         "or torch.finfo(torch.float32).min overflow. Fill with float('-inf'), or torch.finfo(scores.dtype).min"),
}


def hint_for(error: BaseException) -> str:
    return "".join(f" Hint: {hint}." for part, hint in HINTS.items() if part in str(error))


def run_checks(exercise, student: Mapping[str, Callable], thorough: bool = False, seed: int = 0) -> None:
    """Run an exercise's spec on the student's functions (``student``: the notebook's names): its
    visible cases, or its thorough ones, drawn from ``seed``; fail at the first case that is wrong,
    naming the mistake where one is known. The grader judges the harvest with the same spec."""
    __tracebackhide__ = True
    for name, fn in student.items():
        follows_the_rules(fn, name)
    names = Student(dict(student))
    cases = exercise.cases(torch.Generator().manual_seed(seed), thorough)
    for case in cases:
        what = exercise.describe(case)
        try:
            outputs = exercise.run(names, case)
        except NotImplementedError as error:
            raise AssertionError(f"{what}: not implemented yet (it raised NotImplementedError)") from error
        except Exception as error:
            raise AssertionError(f"{what} raised {type(error).__name__}: {error}{hint_for(error)}") from error
        problem = exercise.problem(case, outputs)
        if problem:
            raise AssertionError(f"{what}: {problem}")
    passed(exercise.title, len(cases))


def passed(what: str, n_cases: int) -> None:
    print(f"✓ {what}: {n_cases} cases passed")
