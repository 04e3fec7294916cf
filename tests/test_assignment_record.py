"""Every assignment is registered once (attention_course.assignments) and whole: its notebooks, its
checks, its verdicts, its examples; and no module of those folders belongs to no assignment (a new
reference kernel that is not registered would otherwise be callable from an answer unseen)."""

import importlib
import pkgutil

import nbformat
import pytest

from attention_course.assignments import RECORDS
from attention_course.grading.cells import grade_id, is_test_cell
from attention_course.grading.course import release_notebook, source_notebook
from attention_course.grading.harvest import REFERENCE_MODULES
from attention_course.grading.verdicts.quiz import is_quiz_cell
from course_copy import ROOT

SHARED = {"checks": {"diagnosis", "quiz"}, "grading.verdicts": {"judge", "quiz"}, "examples": set(), "kernels": set()}


def _modules(package: str) -> set[str]:
    path = importlib.import_module(f"attention_course.{package}").__path__
    return {info.name for info in pkgutil.iter_modules(path)}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.id)
def test_an_assignment_is_registered_whole(record):
    assert source_notebook(ROOT, record.id).is_file() and release_notebook(ROOT, record.id).is_file()
    importlib.import_module(f"attention_course.checks.{record.topic}")
    assert importlib.import_module(f"attention_course.examples.{record.topic}").STUDENTS
    source = nbformat.read(source_notebook(ROOT, record.id), as_version=4)
    code_items = {grade_id(c) for c in source.cells if is_test_cell(c) and not is_quiz_cell(c)}
    if record.kernels is None:
        assert code_items == set(), f"{record.id} has code exercises but no reference kernels"
        return
    assert f"attention_course.kernels.{record.kernels}" in REFERENCE_MODULES
    assert f"attention_course.checks.{record.topic}" in REFERENCE_MODULES
    exercises = importlib.import_module(f"attention_course.grading.verdicts.{record.topic}").EXERCISES
    assert {exercise.grade_id for exercise in exercises} == code_items, "every code item has exactly one verdict"
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
