"""Example submissions: each student is the instructor's solution with a typical mistake (or a
valid alternative) written into it, built from the source and release notebooks, so the
examples never drift from the assignment. One module per assignment lists its students."""

import copy
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from attention_course.grading.cells import grade_id, is_solution_cell, solution_code
from attention_course.grading.course import ASSIGNMENTS


@dataclass(frozen=True)
class Replace:
    """In answer cell ``cell``, replace ``old`` (which must occur exactly once) by ``new``."""

    cell: str
    old: str
    new: str


@dataclass(frozen=True)
class Student:
    name: str
    description: str
    edits: tuple[Replace, ...] = ()
    blank: bool = False  # the untouched release
    # Test cell -> a phrase its feedback must contain; every other test cell keeps its points.
    loses: dict[str, str] = field(default_factory=dict)


def students_of(assignment: str) -> list[Student]:
    """The example class of an assignment: module ``examples.<notebook name>``, list ``STUDENTS``."""
    module = importlib.import_module(f"attention_course.grading.examples.{Path(ASSIGNMENTS[assignment]).stem}")
    return module.STUDENTS


def build_submission(student: Student, source, release):
    """The student's notebook: the release (what students receive) with answer cells filled in."""
    submission = copy.deepcopy(release)
    if student.blank:
        return submission
    answers = {grade_id(cell): solution_code(cell) for cell in source.cells if is_solution_cell(cell)}
    for edit in student.edits:
        found = answers[edit.cell].count(edit.old)
        if found != 1:
            raise ValueError(f"example {student.name}: {edit.old!r} occurs {found} times in cell {edit.cell!r}, not once")
        answers[edit.cell] = answers[edit.cell].replace(edit.old, edit.new)
    for cell in submission.cells:
        if is_solution_cell(cell):
            cell.source = answers[grade_id(cell)]
    nbformat.validate(submission)
    return submission
