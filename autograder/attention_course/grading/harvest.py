"""The harvest: the one piece of grading that runs in the student's process, last in the notebook.

It calls the student's functions on inputs drawn from the grader's fresh seed, reads the quiz
answers and the formulas' values, and prints all of it as plain data (see ``verdicts``). It judges
nothing: a faked harvest can only report outputs, and outputs are judged by the grader.

While an exercise runs, a watch notes forbidden shortcuts: torch's fused attention
(``scaled_dot_product_attention``, ``multi_head_attention_forward``: seen by a torch function mode,
whatever alias or ``torch.ops`` path reaches them) and the Python code of the package's reference
kernels and checks, Hugging Face's attention modules and ``generate`` (seen by a profiler, by code
object, so aliases count too), when called from the student's code. Package functions that the
setup cell hands to the student are allowed, and so is what they call.
"""

import functools
import inspect
import json
import signal
import sys
import sysconfig
import threading
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from attention_course.assignments import RECORDS
from attention_course.grading.verdicts import HARVEST_MIME, Assignment, assignment_spec, encode

CASE_SECONDS = 20  # one call of the student's code
FUSED = ("scaled_dot_product", "multi_head_attention")

# Modules whose code is the answer to some exercise, or an oracle for it: every assignment's
# reference solutions and checks, and the oracles they are checked against.
ORACLES = (
    "attention_course.hf_compat",
    "attention_course.decode_attention",
    "attention_course.model_configs",
    "attention_course.gpt2_forward",
    "torch.nn.modules.activation",
    "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.llama.modeling_llama",
    "transformers.models.falcon.modeling_falcon",
    "transformers.models.mistral.modeling_mistral",
    "transformers.integrations.sdpa_attention",
    "transformers.generation.utils",
)
REFERENCE_MODULES = (*(f"attention_course.kernels.{r.kernels}" for r in RECORDS if r.kernels),
                     *(f"attention_course.checks.{r.topic}" for r in RECORDS), *ORACLES)


def _code_objects(obj, seen: set) -> set:
    """The code objects of a function, or of every method of a class, written in its own module's
    file (a decorator's wrapper is shared by many functions: its code is left out, the wrapped kept)."""
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    home = getattr(sys.modules.get(getattr(obj, "__module__", None)), "__file__", None)
    members = [getattr(m, "__func__", m) for m in vars(obj).values()] if inspect.isclass(obj) else [obj]
    codes = set()
    for member in members:
        if isinstance(member, property):
            member = member.fget
        while inspect.isfunction(member):
            if member.__code__.co_filename == home:
                codes.add(member.__code__)
            member = getattr(member, "__wrapped__", None)
    return codes


def _defined_in(module) -> list:
    return [obj for obj in vars(module).values()
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == module.__name__]


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


@functools.cache
def code_sets(spec: Assignment, also_allowed: tuple = ()) -> tuple[dict, set]:
    """({forbidden code object: its module's name}, allowed code objects) for an assignment (and an
    exercise's harness objects)."""
    forbidden, seen = {}, set()
    for name in REFERENCE_MODULES:
        try:
            module = __import__(name, fromlist=["_"])
        except ImportError:  # a model family missing from an older transformers
            continue
        for obj in _defined_in(module):
            forbidden |= dict.fromkeys(_code_objects(obj, seen), name)
    allowed, seen = set(), set()
    for obj in [_resolve(path) for path in spec.allowed] + list(also_allowed):
        allowed |= _code_objects(obj, seen)
    return {code: name for code, name in forbidden.items() if code not in allowed}, allowed


@functools.cache
def _trusted_folders() -> tuple[str, ...]:
    import attention_course

    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    folders |= {str(Path(module.__file__).parent) for module in (attention_course, torch)}
    return tuple(str(Path(folder).resolve()) + "/" for folder in folders)


class Watch(TorchFunctionMode):
    """Notes the first forbidden call made on the student's behalf while it is active.

    Who made a call is decided by the nearest deciding frame below it: the student's code (a file
    outside the libraries) or the harvest's call of a student's name (``student_side``: so that a
    name bound straight to a reference kernel is caught) decide "the student"; an allowed function,
    or the harness (``boundary``: objects the harvest builds and hands over), decide "not the
    student"; library frames in between are passed through."""

    def __init__(self, forbidden: dict, allowed: set, boundary: set, student_side: set, fused: tuple[str, ...] = FUSED):
        super().__init__()
        self.forbidden = {code: name for code, name in forbidden.items() if code not in boundary}  # the harness may be the package's
        self.allowed, self.boundary, self.student_side = allowed, boundary, student_side
        self.fused = fused
        self.trusted = _trusted_folders()
        self.found = ""

    def _from_student(self, frame) -> bool:
        while frame is not None:
            code = frame.f_code
            if code in self.allowed or code in self.boundary:
                return False
            if code in self.student_side or not code.co_filename.startswith(self.trusted):
                return True
            frame = frame.f_back
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if not self.found and any(part in name for part in self.fused) and self._from_student(sys._getframe(1)):
            self.found = f"it calls torch's {name}, the fused kernel that the exercise asks you to write"
        return func(*args, **(kwargs or {}))

    def profile(self, frame, event, arg):
        if event == "call" and not self.found and frame.f_code in self.forbidden and self._from_student(frame.f_back):
            code = frame.f_code
            self.found = (f"it calls {self.forbidden[code]}.{code.co_qualname}, "
                          "a reference implementation (or an oracle) of what the exercise asks you to write")

    def __enter__(self):
        super().__enter__()
        sys.setprofile(self.profile)
        threading.setprofile(self.profile)
        return self

    def __exit__(self, *exc):
        intact = sys.getprofile() == self.profile
        sys.setprofile(None)
        threading.setprofile(None)
        super().__exit__(*exc)
        if not intact and not self.found:
            self.found = "the grading's watch for forbidden calls was removed while it ran"
        return False


def _fused(spec: Assignment) -> tuple[str, ...]:
    return FUSED if spec.fused_attention_forbidden else ("multi_head_attention",)


class _Timeout(BaseException):
    pass


def _alarm(*_):
    raise _Timeout()


def _call(fn, seconds: int):
    """fn() within ``seconds`` (a SIGALRM in the main thread)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Student:
    """The student's names, looked up in the notebook's globals when used."""

    def __init__(self, namespace: dict):
        self._namespace = namespace

    def __getattr__(self, name: str):
        if name not in self._namespace:
            raise NameError(f"{name} is not defined in the notebook")
        return self._namespace[name]


def _run_exercise(exercise, spec: Assignment, student: Student, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    cases = exercise.cases(generator)
    results = []
    boundary = {_run_case.__code__} | set().union(*(_code_objects(obj, set()) for obj in exercise.harness))
    watch = Watch(*code_sets(spec, exercise.allowed), boundary, {exercise.run.__code__}, _fused(spec))
    with watch:
        for case in cases:
            results.append(_run_case(exercise, student, case))
            if watch.found:
                break
    return {"cases": results, "forbidden": watch.found}


def _run_case(exercise, student: Student, case) -> dict:
    try:
        outputs = _call(lambda: exercise.run(student, case), CASE_SECONDS)
        return {key: encode(value) for key, value in outputs.items()}
    except _Timeout:
        return {"error": f"TimeoutError: it ran longer than {CASE_SECONDS} s"}
    except Exception as error:
        return {"error": f"{type(error).__name__}: {str(error)[:300]}"}


def collect(namespace: dict, plan: dict) -> dict:
    """Everything the grader asked for, as plain data."""
    spec = assignment_spec(plan["assignment"])
    student = Student(namespace)
    exercises = {}
    for index, exercise in enumerate(spec.exercises):
        if exercise.grade_id not in plan.get("exercises", ()):
            continue
        try:
            exercises[exercise.grade_id] = _run_exercise(exercise, spec, student, plan["seed"] + index)
        except BaseException as error:  # noqa: BLE001 - a broken item must not stop the others
            exercises[exercise.grade_id] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    answers = {name: encode(namespace.get(name)) for name in plan.get("answers", [])}
    formulas = {name: [_formula_value(namespace.get(name), name, config, spec) for config in configs]
                for name, configs in plan.get("formulas", {}).items()}
    return {"exercises": exercises, "answers": answers, "formulas": formulas}


def _call_formula(formula, config):
    return formula(*config)


def _formula_value(formula, name: str, config: list, spec: Assignment) -> dict:
    if not callable(formula):
        return {"error": f"{name} is not a function"}
    watch = Watch(*code_sets(spec), {_formula_value.__code__}, {_call_formula.__code__}, _fused(spec))
    try:
        with watch:
            value = _call(lambda: _call_formula(formula, config), CASE_SECONDS)
    except _Timeout:
        return {"error": f"TimeoutError: it ran longer than {CASE_SECONDS} s"}
    except BaseException as error:  # noqa: BLE001 - whatever the student's formula raises is its answer
        return {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    return {"forbidden": watch.found} if watch.found else {"value": encode(value)}


def harvest(namespace: dict, plan_json: str) -> None:
    """The harvest cell's one call: print the results as the cell's only output."""
    from IPython.display import display

    result = collect(namespace, json.loads(plan_json))
    display({HARVEST_MIME: json.dumps(result)}, raw=True)


def harvest_source(plan: dict) -> str:
    return ("from attention_course.grading.harvest import harvest as _attention_course_harvest\n"
            f"_attention_course_harvest(globals(), {json.dumps(json.dumps(plan))})")
