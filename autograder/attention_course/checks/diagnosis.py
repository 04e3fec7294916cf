"""Compare a learner's output with the reference, and when they differ, say which known
mistake the output matches instead of "assertion failed".

Functions here set ``__tracebackhide__`` so that IPython and pytest leave their frames out of a
failure's traceback: the learner sees their cell and the named mistake, not the checker's insides."""

import weakref
from collections.abc import Callable, Mapping

import torch

from attention_course.answer_rules import read_function
from attention_course.exercises import LOW_PRECISION, TOLERANCES, close  # noqa: F401 - the checks compare with them
from attention_course.exercises.kernel.devices import device_problem
from attention_course.exercises.kernel.draw import devices, dtypes  # noqa: F401 - the checks' cases use them
from attention_course.exercises.kernel.harvest import Student

Mistakes = Callable[[], Mapping[str, torch.Tensor]]


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


def call(fn: Callable, *args, what: str, **kwargs):
    """Run the learner's function; turn its exception into a failure that says where it came from."""
    __tracebackhide__ = True
    follows_the_rules(fn, what)
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        raise AssertionError(f"{what}: not implemented yet (it raised NotImplementedError)") from error
    except Exception as error:
        raise AssertionError(f"{what} raised {type(error).__name__}: {error}{hint_for(error)}") from error


def expect_tensor(actual, expected: torch.Tensor, what: str) -> None:
    __tracebackhide__ = True
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what} should return a torch.Tensor, got {type(actual).__name__}")
    if actual.device != expected.device:
        raise AssertionError(
            f"{what}: output is on {actual.device} but the inputs are on {expected.device}; "
            "keep every tensor on the device of the inputs (pass device=... when you create one)"
        )
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{what}: output dtype {actual.dtype}, expected {expected.dtype} (the dtype of the inputs)")


def expect_close(actual, expected: torch.Tensor, what: str, mistakes: Mistakes | None = None) -> None:
    """Pass when ``actual`` matches ``expected``; otherwise fail naming the first mistake it matches."""
    __tracebackhide__ = True
    if isinstance(actual, torch.Tensor) and close(actual, expected):
        expect_tensor(actual, expected, what)
        return
    if isinstance(actual, torch.Tensor) and mistakes is not None:
        for message, wrong in mistakes().items():
            if close(actual, wrong.to(actual.dtype) if wrong.dtype != torch.bool else wrong):
                raise AssertionError(f"{what}: {message}")
    expect_tensor(actual, expected, what)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: output shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if actual.dtype == torch.bool:
        wrong = (actual != expected).nonzero()
        raise AssertionError(f"{what}: {len(wrong)} entries differ, first at index {tuple(wrong[0].tolist())}")
    if torch.isnan(actual).any():
        raise AssertionError(
            f"{what}: the output contains NaN. A softmax over a row where every score is -inf gives NaN: "
            "does every query keep at least its own position?"
        )
    error = (actual.double() - expected.double()).abs()
    index = tuple(torch.unravel_index(error.argmax(), error.shape))
    raise AssertionError(
        f"{what}: values differ from the reference; largest error {error.max().item():.3g} at index "
        f"{tuple(int(i) for i in index)} (got {actual[index].item():.6g}, expected {expected[index].item():.6g})"
    )


def expect_value_error(fn: Callable, *args, what: str, problem: str) -> None:
    __tracebackhide__ = True
    try:
        fn(*args)
    except ValueError:
        return
    except NotImplementedError as error:
        raise AssertionError(f"{what}: not implemented yet") from error
    except Exception as error:
        raise AssertionError(f"{what} should raise ValueError for {problem}, but raised {type(error).__name__}: {error}") from error
    raise AssertionError(f"{what} should raise ValueError for {problem}, but returned normally")


def expect_on_device(fn: Callable, *args, what: str, **kwargs) -> None:
    """Fail, naming the mistake, when ``fn`` run on inputs on the meta device makes a tensor elsewhere."""
    __tracebackhide__ = True
    problem = device_problem(fn, *args, **kwargs)
    if problem:
        raise AssertionError(f"{what} [inputs on the meta device]: {problem}")


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
