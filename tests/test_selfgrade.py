"""Self-grading takes the instructor's test cells whatever the student did to theirs, and never
changes the submitted file."""

import hashlib

import nbformat
import pytest

from attention_course.cli import main
from attention_course.examples import Student, build_submission
from attention_course.grading.cells import grade_id, is_test_cell
from attention_course.grading.selfgrade import grade_notebook, with_instructor_cells
from course_copy import ROOT

ASSIGNMENT = "01_causal_attention"
SOURCE = ROOT / "source" / ASSIGNMENT / "causal_attention.ipynb"
RELEASE = ROOT / "release" / ASSIGNMENT / "causal_attention.ipynb"


@pytest.fixture
def solved():
    source = nbformat.read(SOURCE, as_version=4)
    return build_submission(Student("solved", "solution"), source, nbformat.read(RELEASE, as_version=4)), source


def test_deleted_test_cell_is_put_back_in_place(solved):
    submission, source = solved
    ids = [grade_id(cell) for cell in submission.cells]
    submission.cells = [cell for cell in submission.cells if grade_id(cell) != "test_attention"]
    graded = with_instructor_cells(submission, source)
    assert [grade_id(cell) for cell in graded.cells] == ids


def test_edited_test_cell_is_replaced_by_the_instructors(solved):
    submission, source = solved
    for cell in submission.cells:
        if is_test_cell(cell):
            cell.source = "pass  # trust me"
    graded = with_instructor_cells(submission, source)
    tests = {grade_id(c): c.source for c in graded.cells if is_test_cell(c)}
    assert tests == {grade_id(c): c.source for c in source.cells if is_test_cell(c)}
    assert all("HIDDEN TESTS" in text for text in tests.values())


def test_answers_and_extra_cells_are_kept(solved):
    submission, source = solved
    submission.cells.insert(3, nbformat.v4.new_code_cell("scratch = 1"))
    graded = with_instructor_cells(submission, source)
    assert graded.cells[3].source == "scratch = 1"
    answer = next(c for c in graded.cells if grade_id(c) == "attention_weights")
    assert "### BEGIN SOLUTION" not in answer.source and "def attention_weights" in answer.source


def test_grade_notebook_counts_points_and_leaves_the_file_alone(tmp_path, solved, capsys):
    submission, _ = solved
    for cell in submission.cells:
        if grade_id(cell) == "test_heads":
            submission.cells.remove(cell)
            break
    path = tmp_path / "Copy of causal_attention (1).ipynb"
    nbformat.write(submission, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["grade-notebook", str(path), "--source", str(SOURCE)]) == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    printed = capsys.readouterr().out
    assert "20 / 20 points" in printed and "test_heads" in printed


def test_grade_notebook_reports_a_missing_file(capsys):
    assert main(["grade-notebook", "no_such_notebook.ipynb"]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_report_renders_the_named_mistake(tmp_path, solved):
    submission, source = solved
    for cell in submission.cells:
        if grade_id(cell) == "attention_weights":
            cell.source = cell.source.replace(" / math.sqrt(q.shape[-1])", "")
    path = tmp_path / "causal_attention.ipynb"
    nbformat.write(submission, path)
    report = grade_notebook(path, SOURCE)
    assert report.points == 11 and report.max_points == 20
    assert "were not scaled" in report.render()
