"""release/ is exactly what nbgrader generates from source/, and fit to hand to students."""

import json
import shutil

import nbformat
import pytest

from attention_course.grading.cells import is_solution_cell
from attention_course.grading.course import assignments_in, release_notebook, source_notebook
from attention_course.grading.nbgrader_steps import generate_release, nbgrader
from course_copy import ROOT, copy_course

ASSIGNMENTS = assignments_in(ROOT)


def test_every_assignment_has_a_committed_release():
    assert ASSIGNMENTS, "no source notebooks found"
    for assignment in ASSIGNMENTS:
        assert release_notebook(ROOT, assignment).is_file(), f"release/{assignment} is missing: run nbgrader generate_assignment"


@pytest.mark.nbgrader
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_regenerated_identically(tmp_path, assignment):
    course = copy_course(tmp_path)
    shutil.rmtree(course / "release")
    generate_release(course, assignment)
    regenerated = json.loads(release_notebook(course, assignment).read_text())
    committed = json.loads(release_notebook(ROOT, assignment).read_text())
    assert regenerated == committed, f"release/{assignment} drifted from source/: regenerate it with nbgrader and commit it"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_is_stored_without_outputs(assignment):
    source = nbformat.read(source_notebook(ROOT, assignment), as_version=4)
    for cell in source.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"source/{assignment}: strip the outputs"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_has_no_solutions_and_needs_no_nbgrader(assignment):
    release = nbformat.read(release_notebook(ROOT, assignment), as_version=4)
    text = "\n".join(cell.source for cell in release.cells)
    for secret in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert secret not in text
    assert "import nbgrader" not in text and "from nbgrader" not in text
    assert any(is_solution_cell(cell) for cell in release.cells)
    for cell in release.cells:
        if is_solution_cell(cell) and "def " in cell.source:
            assert "raise NotImplementedError()" in cell.source


@pytest.mark.nbgrader
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_nbgrader_validate_passes_on_source(assignment):
    output = nbgrader(ROOT, "validate", str(source_notebook(ROOT, assignment)))
    assert "Success! Your notebook passes all the tests." in output, output[-3000:]
