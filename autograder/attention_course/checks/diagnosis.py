"""Compare a learner's output with the reference, and when they differ, say which known
mistake the output matches instead of "assertion failed".

Functions here set ``__tracebackhide__`` so that IPython and pytest leave their frames out of a
failure's traceback: the learner sees their cell and the named mistake, not the checker's insides."""

import weakref
from collections.abc import Callable, Mapping

import torch

from attention_course.answer_rules import read_function

# (atol, rtol) against a float64 reference cast to the dtype under test.
TOLERANCES = {
    torch.float64: (1e-10, 1e-7),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}

LOW_PRECISION = (torch.float16, torch.bfloat16)

Mistakes = Callable[[], Mapping[str, torch.Tensor]]


def devices(thorough: bool) -> list[str]:
    """Where checks run: the CPU, and the GPU too in thorough (hidden) checks when there is one."""
    return ["cpu", "cuda"] if thorough and torch.cuda.is_available() else ["cpu"]


def dtypes(thorough: bool) -> list[torch.dtype]:
    """Which dtypes checks run in: float32, and the half-precision types in thorough checks."""
    return [torch.float32, torch.float16, torch.bfloat16] if thorough else [torch.float32]


def close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    __tracebackhide__ = True
    if actual.shape != expected.shape:
        return False
    atol, rtol = TOLERANCES.get(actual.dtype, TOLERANCES[torch.float32])
    if actual.dtype == torch.bool or expected.dtype == torch.bool:
        return bool((actual.bool() == expected.bool()).all())
    if actual.dtype in LOW_PRECISION:
        atol *= max(1.0, expected.abs().max().item())
    actual, expected = actual.double().cpu(), expected.double().cpu()
    return torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True)


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
        hint = ""
        if "view size is not compatible" in str(error):
            hint = " Hint: after a transpose the tensor is not contiguous; use .reshape(...) or .contiguous().view(...)."
        raise AssertionError(f"{what} raised {type(error).__name__}: {error}{hint}") from error


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


def passed(what: str, n_cases: int) -> None:
    print(f"✓ {what}: {n_cases} cases passed")
