"""nbgrader as the course uses it: its commands, run in the course directory, and the grades it
stored, with the error that cost each lost item."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor

from attention_course.grading.cells import first_error, grade_id, is_test_cell, neutralise_hidden_test_markers
from attention_course.grading.course import ASSIGNMENTS


class NbgraderFailed(RuntimeError):
    """An nbgrader command exited with an error; ``log`` holds all it printed."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def nbgrader(root: Path, *args: str) -> str:
    """Run an nbgrader command in the course directory, with this Python's tools on PATH; its output."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    completed = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True, text=True)
    if completed.returncode:
        raise NbgraderFailed(f"nbgrader {' '.join(args)} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}",
                             completed.stdout + completed.stderr)
    return completed.stdout + completed.stderr


def failures_by_student(log: str, assignment: str) -> dict[str, str]:
    """From an nbgrader converter's log (autograde, generate_feedback): {student: the exception that
    stopped nbgrader on that student's notebook} (nbgrader goes on with the others, then exits 1)."""
    found: dict[str, str] = {}
    blocks = re.split(r"There was an error processing assignment: ", log)[1:]
    for block in blocks:
        path = block.splitlines()[0].strip().rstrip("/\\")
        parts = Path(path).parts
        if len(parts) < 2 or parts[-1] != assignment:
            continue
        error = next((line.strip() for line in block.splitlines()[1:] if re.match(r"^\s*[A-Za-z_.]*(Error|Exception)\b.*:", line)), "")
        found[parts[-2]] = error or "an error (see nbgrader's log)"
    for student in re.findall(rf"There was an error processing assignment '{re.escape(assignment)}' for student '([^']+)'", log):
        found.setdefault(student, "an error (see nbgrader's log)")
    return found


class NeutraliseHiddenTestMarkers(NbGraderPreprocessor):
    """Before nbgrader's ``ClearHiddenTests`` in ``generate_feedback``: a student's own text that reads
    like a hidden-test delimiter (``# ### BEGIN HIDDEN TESTS`` pasted from an instructor notebook,
    the words in a string) is written with a no-break space, so that it stops only itself."""

    def preprocess(self, nb, resources):
        changed = neutralise_hidden_test_markers(nb)
        if changed:
            self.log.warning("%s: nbgrader's hidden-test delimiters in %d cell(s) of the student's; neutralised",
                             resources.get("nbgrader", {}).get("student", "?"), changed)
        return nb, resources


# nbgrader_config.py's GenerateFeedback.preprocessors, with the mend in front of ClearHiddenTests.
FEEDBACK_PREPROCESSORS = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "attention_course.grading.nbgrader_steps.NeutraliseHiddenTestMarkers",
    "nbgrader.preprocessors.ClearHiddenTests",
]


def as_option(traitlet: str, classes: list[str]) -> str:
    return f"--{traitlet}=[" + ",".join(f"'{c}'" for c in classes) + "]"


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
