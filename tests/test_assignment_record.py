"""Every assignment is registered once (attention_course.assignments) and whole: its notebooks, its
checks, its exercises' specs (both halves), its examples; no module of those folders belongs to no
assignment; and its harvest kernel gets the kernel halves and the handed-over objects, nothing else
of the package (no reference solution of its own, no check, no grading code)."""

import ast
import importlib
import inspect
import pkgutil
import sys

import nbformat
import pytest

from attention_course.assignments import RECORDS
from attention_course.grading.cells import grade_id, is_test_cell
from attention_course.grading.course import release_notebook, source_notebook
from attention_course.exercises import exercises_of
from attention_course.grading.harvest_kernel import KERNEL_HALF, kernel_modules
from attention_course.grading.verdicts.quiz import is_quiz_cell
from course_copy import ROOT

SHARED = {"checks": {"diagnosis", "quiz"}, "grading.verdicts": {"judge", "quiz"}, "grading.examples": set(), "kernels": set(),
          "exercises": {"kernel"}, "exercises.kernel": {"allocations", "devices", "draw", "harvest", "plain_data"}}
# What a kernel half may import besides the package's kernel halves and its assignment's hand-overs.
KERNEL_HALF_LIBRARIES = {"torch", "numpy", "IPython", "math", "transformers", "weakref", "copy", "re", "os", "json", "signal",
                         "importlib", "base64", "numbers", "collections", "dataclasses", "functools", "itertools", "typing"}


def _modules(package: str) -> set[str]:
    path = importlib.import_module(f"attention_course.{package}").__path__
    return {info.name for info in pkgutil.iter_modules(path)}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.id)
def test_an_assignment_is_registered_whole(record):
    assert source_notebook(ROOT, record.id).is_file() and release_notebook(ROOT, record.id).is_file()
    importlib.import_module(f"attention_course.checks.{record.topic}")
    assert importlib.import_module(f"attention_course.grading.examples.{record.topic}").STUDENTS
    source = nbformat.read(source_notebook(ROOT, record.id), as_version=4)
    code_items = {grade_id(c) for c in source.cells if is_test_cell(c) and not is_quiz_cell(c)}
    if record.kernels is None:
        assert code_items == set(), f"{record.id} has code exercises but no reference kernels"
        return
    exercises = exercises_of(record.id)
    assert [exercise.grade_id for exercise in exercises] == sorted(code_items, key=[grade_id(c) for c in source.cells].index), \
        "every code item has exactly one spec, in the notebook's order"
    for exercise in exercises:  # the harvest finds a kernel half's functions by module and name
        for fn in (exercise.cases, exercise.run):
            assert fn.__module__.startswith(KERNEL_HALF + "."), f"{exercise.grade_id}: {fn.__qualname__} is not in a kernel half"
            assert getattr(sys.modules[fn.__module__], fn.__name__) is fn, f"{exercise.grade_id}: {fn.__qualname__} is not module-level"
    for path in record.handed_over:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


@pytest.mark.parametrize("package", list(SHARED))
def test_every_module_of_an_assignment_folder_belongs_to_a_registered_assignment(package):
    owned = {r.kernels for r in RECORDS} if package == "kernels" else {r.topic for r in RECORDS}
    orphans = _modules(package) - owned - SHARED[package]
    assert orphans == set(), f"attention_course.{package}: {sorted(orphans)} belong to no assignment in attention_course.assignments"


def test_every_assignment_folder_of_the_course_is_registered():
    folders = {path.name for path in (ROOT / "source").iterdir() if path.is_dir()}
    assert folders == {record.id for record in RECORDS}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.id)
def test_the_harvest_kernel_gets_the_kernel_halves_and_the_hand_overs_only(record):
    shipped = dict(kernel_modules(record.id))
    handed = {path.rpartition(".")[0] for path in record.handed_over}
    for module, source in shipped.items():
        assert module.startswith(KERNEL_HALF) or module in handed or module in ("attention_course", "attention_course.runtime") \
            or source == "", f"{record.id}'s harvest kernel would get {module}"
    if record.kernels:
        assert f"attention_course.kernels.{record.kernels}" not in shipped, "its own reference solutions"
    for module in handed:  # only the definitions a hand-over needs, not the module's other solutions
        defined = {node.name for node in ast.parse(shipped[module]).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        everything = {name for name, obj in vars(importlib.import_module(module)).items()
                      if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module}
        assert {path.rpartition(".")[2] for path in record.handed_over if path.startswith(module + ".")} <= defined < everything | defined


@pytest.mark.parametrize("module", sorted(info.name for info in pkgutil.iter_modules(importlib.import_module(KERNEL_HALF).__path__)))
def test_a_kernel_half_imports_only_libraries_and_other_kernel_halves(module):
    tree = ast.parse(inspect.getsource(importlib.import_module(f"{KERNEL_HALF}.{module}")))
    handed = {path for record in RECORDS for path in record.handed_over}
    for node in ast.walk(tree):
        names = [(node.module, alias.name) for alias in node.names] if isinstance(node, ast.ImportFrom) else \
                [(alias.name, None) for alias in node.names] if isinstance(node, ast.Import) else []
        for origin, name in names:
            top = origin.split(".")[0]
            if top == "attention_course":
                assert origin.startswith(KERNEL_HALF) or f"{origin}.{name}" in handed, f"{module} imports {origin}.{name}"
            else:
                assert top in KERNEL_HALF_LIBRARIES, f"{module} imports {origin}"
