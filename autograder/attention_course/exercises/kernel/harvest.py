"""The harvest: run in a kernel of its own after the student's accepted code, it calls the student's
functions on the inputs each exercise draws from the grader's fresh seed, reads the quiz answers and
the formulas' values, and prints all of it as plain data. It judges nothing: the grader does.

A watch notes any call of torch's fused attention (``scaled_dot_product_attention``,
``multi_head_attention_forward``: seen by a torch function mode, whatever alias reaches them) while
an exercise that forbids it runs. In this kernel nothing else calls them: the package's code is
absent, and no harness of an exercise that forbids fused attention uses it. Reading the answers
(``answer_rules``) is the first layer; this is the second.
"""

import importlib
import json
import signal

import torch
from torch.overrides import TorchFunctionMode

from attention_course.exercises.kernel.plain_data import encode

HARVEST_MIME = "application/vnd.attention-course.harvest+json"
CASE_SECONDS = 20  # one call of the student's code
FUSED = ("scaled_dot_product", "multi_head_attention")


class FusedWatch(TorchFunctionMode):
    """Notes the first call of a fused attention kernel made while it is active."""

    def __init__(self, fused: tuple[str, ...]):
        super().__init__()
        self.fused = fused
        self.found = ""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if not self.found and any(part in name for part in self.fused):
            self.found = f"it calls torch's {name}, the fused kernel that the exercise asks you to write"
        return func(*args, **(kwargs or {}))


def fused_names(fused_forbidden: bool) -> tuple[str, ...]:
    """What the watch looks for: torch's multi-head attention always, SDPA where it is the answer."""
    return FUSED if fused_forbidden else ("multi_head_attention",)


class _Timeout(BaseException):
    pass


def _alarm(*_):
    raise _Timeout()


def call_within(fn, seconds: int = CASE_SECONDS):
    """fn() within ``seconds`` (a SIGALRM in the main thread), else TimeoutError."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    except _Timeout:
        raise TimeoutError(f"it ran longer than {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Student:
    """The student's names, looked up when used: in the notebook's globals, or the functions a check was given."""

    def __init__(self, namespace: dict):
        self._namespace = namespace

    def __getattr__(self, name: str):
        if name not in self._namespace:
            raise NameError(f"{name} is not defined in the notebook")
        return self._namespace[name]


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}"


def run_exercise(asked: dict, namespace: dict) -> dict:
    """{"cases": [outputs per case, as plain data], "forbidden": ...} of one exercise the grader asked for."""
    module = importlib.import_module(asked["module"])
    cases = getattr(module, asked["cases"])(torch.Generator().manual_seed(asked["seed"]), True)
    run, student = getattr(module, asked["run"]), Student(namespace)
    results = []
    with FusedWatch(fused_names(asked["fused_forbidden"])) as watch:
        for case in cases:
            try:
                outputs = call_within(lambda case=case: run(student, case))
                results.append({key: encode(value) for key, value in outputs.items()})
            except Exception as error:  # noqa: BLE001 - the student's error is this case's result
                results.append({"error": _error(error)})
            if watch.found:
                break
    return {"cases": results, "forbidden": watch.found}


def formula_value(formula, name: str, config: list, fused_forbidden: bool) -> dict:
    if not callable(formula):
        return {"error": f"{name} is not a function"}
    try:
        with FusedWatch(fused_names(fused_forbidden)) as watch:
            value = call_within(lambda: formula(*config))
    except BaseException as error:  # noqa: BLE001 - whatever the student's formula raises is its answer
        return {"error": _error(error)[:200]}
    return {"forbidden": watch.found} if watch.found else {"value": encode(value)}


def collect(namespace: dict, plan: dict) -> dict:
    """Everything the grader asked for, as plain data."""
    exercises = {}
    for asked in plan.get("exercises", ()):
        try:
            exercises[asked["grade_id"]] = run_exercise(asked, namespace)
        except BaseException as error:  # noqa: BLE001 - a broken item must not stop the others
            exercises[asked["grade_id"]] = {"error": _error(error)}
    answers = {name: encode(namespace.get(name)) for name in plan.get("answers", [])}
    formulas = {name: [formula_value(namespace.get(name), name, config, plan["fused_forbidden"]) for config in configs]
                for name, configs in plan.get("formulas", {}).items()}
    return {"exercises": exercises, "answers": answers, "formulas": formulas}


def harvest(namespace: dict, plan_json: str) -> None:
    """The harvest cell's one call: print the results as the cell's only output."""
    from IPython.display import display

    display({HARVEST_MIME: json.dumps(collect(namespace, json.loads(plan_json)))}, raw=True)
