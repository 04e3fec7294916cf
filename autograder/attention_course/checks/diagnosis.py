"""Compare a learner's output with the reference, and when they differ, say which known
mistake the output matches instead of "assertion failed".

Functions here set ``__tracebackhide__`` so that IPython and pytest leave their frames out of a
failure's traceback: the learner sees their cell and the named mistake, not the checker's insides."""

import copy
import os
import re
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


# The package's own tests on a GPU (scripts/gpu_check.sh) set this to run the thorough checks on CUDA too.
# Graded cells never do: a score must not depend on the grader's hardware (``expect_on_device`` finds
# device bugs on any machine, with the meta device).
CUDA_CHECKS_ENV = "ATTENTION_COURSE_CHECKS_ON_CUDA"


def devices(thorough: bool) -> list[str]:
    """Where checks compare values: the CPU, on every machine (so the same cases everywhere)."""
    opted_in = os.environ.get(CUDA_CHECKS_ENV) == "1" and torch.cuda.is_available()
    return ["cpu", "cuda"] if thorough and opted_in else ["cpu"]


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


WRONG_DEVICE = ("made a tensor on the wrong device: pass device=... (the device of the inputs, e.g. device=q.device) "
                "when you create one, and never move data off the inputs' device")
# What the meta device cannot do, without anything being wrong: read data (.item(), bool(), .tolist(),
# printing values), or shapes that depend on data (nonzero, masked_select).
_MIXED_DEVICES = re.compile(r"device|devices", re.IGNORECASE)
_REAL_DEVICE = re.compile(r"\b(cpu|cuda|mps|xpu)(:\d+)?\b")


def on_meta(value):
    """``value`` with every tensor (in tuples, lists, dicts) and module on the meta device."""
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).to("meta")
    if isinstance(value, (tuple, list)):
        return type(value)(on_meta(v) for v in value)
    if isinstance(value, dict):
        return {key: on_meta(v) for key, v in value.items()}
    return value


def _tensors_in(value, depth: int = 0):
    """The tensors a function returned: itself, in tuples/lists/dicts, or an object's tensor attributes."""
    if depth > 2:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors_in(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v, depth + 1)
    elif isinstance(value, torch.nn.Module):
        yield from value.parameters()
        yield from value.buffers()
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for v in vars(value).values():
            yield from _tensors_in(v, depth + 1)


def mixes_devices(error: BaseException) -> bool:
    """True when ``error`` is PyTorch refusing to mix the meta device with a real one (a device bug);
    False for what meta cannot do at all (read values: ``.item()``, ``.tolist()``; data-dependent shapes)."""
    text = str(error)
    return bool(_MIXED_DEVICES.search(text)) and "meta" in text and bool(_REAL_DEVICE.search(text))


def _target_device(args, kwargs):
    """Where ``Tensor.to(...)`` sends a tensor: a device, a device string, another tensor's device; None for a dtype only."""
    for value in (kwargs.get("device"), *args[1:], kwargs.get("other")):
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, torch.device):
            return value
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                return torch.device(value)
            except (RuntimeError, TypeError):
                continue
    return None


class _DataMoves(torch.overrides.TorchFunctionMode):
    """Notes each move of a meta tensor to a real device (``.cpu()``, ``.cuda()``, ``.to('cpu')``, ``.numpy()``):
    meta refuses them with the same words as a read of values, so they are told apart here."""

    def __init__(self):
        super().__init__()
        self.moves: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if args and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta" and name in ("cpu", "cuda", "numpy", "to"):
            target = torch.device("cpu") if name in ("cpu", "numpy") else torch.device("cuda") if name == "cuda" else _target_device(args, kwargs)
            if target is not None and target.type != "meta":
                self.moves.append(f".{name}(...) sent a tensor to {target}")
        return func(*args, **kwargs)


def expect_on_device(fn: Callable, *args, what: str, **kwargs) -> bool:
    """Run the learner's function with every tensor argument on the ``meta`` device (shapes and dtypes,
    no data) and fail, naming the mistake, when it makes a tensor elsewhere: PyTorch then refuses to mix
    devices, or a returned tensor (or a tensor attribute of a returned object) is not on meta. This
    finds on a CPU-only machine the device bugs that a GPU finds (a mask built without ``device=``), so
    that a score does not depend on the grader's hardware. Returns True when the run was conclusive,
    False when meta could not run the code (``.item()`` and other reads of values, which is no mistake;
    or any other error, which the value checks judge on the CPU)."""
    __tracebackhide__ = True
    case = f"{what} [inputs on the meta device]"
    moves = _DataMoves()
    try:
        with moves:
            output = fn(*on_meta(args), **on_meta(kwargs))
    except Exception as error:
        if moves.moves:
            raise AssertionError(f"{case}: {WRONG_DEVICE} ({moves.moves[0]})") from error
        if mixes_devices(error):
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise AssertionError(f"{case}: {WRONG_DEVICE} ({type(error).__name__}: {first})") from error
        return False
    elsewhere = sorted({str(t.device) for t in _tensors_in(output) if t.device.type != "meta"})
    if elsewhere:
        raise AssertionError(f"{case}: {WRONG_DEVICE} (with inputs on meta, a result is on {', '.join(elsewhere)})")
    return True


def passed(what: str, n_cases: int) -> None:
    print(f"✓ {what}: {n_cases} cases passed")
