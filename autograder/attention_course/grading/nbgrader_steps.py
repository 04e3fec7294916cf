"""nbgrader as the course uses it: its commands, run in the course directory (as commands, or in this
process through its Python API), and the grades it stored, with the error that cost each lost item."""

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import nbformat
from nbgrader import api as nbgrader_api
from nbgrader.converters import GenerateAssignment
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from attention_course.grading.cells import first_error, grade_id, is_test_cell, neutralise_hidden_test_markers
from attention_course.grading.course import ASSIGNMENTS


class NbgraderFailed(RuntimeError):
    """An nbgrader command exited with an error; ``log`` holds all it printed."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def _with_tools_on_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def nbgrader(root: Path, *args: str) -> str:
    """Run an nbgrader command in the course directory, with this Python's tools on PATH; its output."""
    env = dict(os.environ, PATH=_with_tools_on_path())
    completed = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True, text=True)
    if completed.returncode:
        raise NbgraderFailed(f"nbgrader {' '.join(args)} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}",
                             completed.stdout + completed.stderr)
    return completed.stdout + completed.stderr


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


def generate_release(root: Path, assignment: str) -> None:
    nbgrader(root, "generate_assignment", assignment, "--force")


def course_config(root: Path) -> Config:
    """The course's ``nbgrader_config.py``, as nbgrader's own commands load it there."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    return config


def register_assignment(root: Path, assignment: str) -> None:
    """``nbgrader generate_assignment ASSIGNMENT --force`` in this process: the assignment's cells
    recorded in the gradebook (and release/ written, as that command does)."""
    config = course_config(root)
    config.CourseDirectory.assignment_id = assignment
    # A new gradebook is stamped with the newest revision of nbgrader's schema, which nbgrader asks of a
    # subprocess, `alembic heads` (seconds); alembic's Python API answers the same at once.
    with mock.patch.object(nbgrader_api, "get_alembic_version", _schema_revision):
        GenerateAssignment(coursedir=CourseDirectory(config=config), config=config, force=True).start()


def _schema_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(nbgrader_api.__file__).with_name("alembic"))).get_current_head()


def export_grades(root: Path, to: Path) -> None:
    """``nbgrader export --to TO`` in this process, with the exporter the course configures."""
    from nbgrader.apps.exportapp import ExportApp
    from nbgrader.api import Gradebook

    config = course_config(root)
    coursedir = CourseDirectory(config=config)
    with Gradebook(coursedir.db_url, coursedir.course_id) as gradebook:
        ExportApp(config=config).plugin_class(config=config, to=str(to)).export(gradebook)


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
