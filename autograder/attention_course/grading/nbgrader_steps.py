"""nbgrader as the course uses it: its commands, run in the course directory, and the grades it
stored, with the error that cost each lost item."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat

from attention_course.grading.cells import first_error, grade_id, is_test_cell
from attention_course.grading.course import ASSIGNMENTS


def nbgrader(root: Path, *args: str) -> str:
    """Run an nbgrader command in the course directory, with this Python's tools on PATH; its output."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    completed = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}")
    return completed.stdout + completed.stderr


def generate_release(root: Path, assignment: str) -> None:
    nbgrader(root, "generate_assignment", assignment, "--force")


def stored_grades(root: Path, assignment: str, students: list[str]) -> dict[str, tuple[float, float, dict[str, str]]]:
    """Per student: (score, max score, {test cell: the error that cost its points}) from the gradebook
    and the autograded notebook ("no notebook" where there was none to run)."""
    from nbgrader.api import Gradebook

    grades = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in students:
            submission = gradebook.find_submission(assignment, student)
            autograded = root / "autograded" / student / assignment / ASSIGNMENTS[assignment]
            errors = {}
            if autograded.is_file():
                nb = nbformat.read(autograded, as_version=4)
                errors = {grade_id(cell): first_error(cell) for cell in nb.cells if is_test_cell(cell)}
            lost = {grade.name: errors.get(grade.name) or "no notebook"
                    for notebook in submission.notebooks for grade in notebook.grades if grade.score < grade.max_score}
            grades[student] = (submission.score, submission.max_score, lost)
    return grades
