"""nbgrader's autograde with the execution done beforehand, in parallel (see class_grading):
``UseExecuted`` stands where nbgrader's ``Execute`` stands and hands on the executed notebook,
so that nbgrader itself scores it and stores the grades in its gradebook."""

import os
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor

from attention_course.grading.execute import mark_unfinished_tests

EXECUTED_ENV = "ATTENTION_COURSE_EXECUTED"


def executed_path(folder: Path, student: str, assignment: str, notebook: str) -> Path:
    return Path(folder) / student / assignment / f"{notebook}.ipynb"


def code_of(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


class UseExecuted(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        path = executed_path(os.environ[EXECUTED_ENV], info["student"], info["assignment"], info["notebook"])
        if path.is_file():
            executed = nbformat.read(path, as_version=4)
            if code_of(executed) == code_of(nb):
                return executed, resources
            reason = "not graded: the executed copy is out of date; grade again"
        else:
            reason = "not graded: the notebook was not executed"
        mark_unfinished_tests(nb, reason)
        return nb, resources


AUTOGRADE_PREPROCESSORS = [
    "attention_course.grading.nbgrader_plugin.UseExecuted",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
