"""End to end through nbgrader: the example class of every assignment scores as described, the
feedback names each mistake, and self-grading agrees with nbgrader point for point."""

import csv
import html

import pytest

from attention_course.grading.examples import students_of
from attention_course.grading.course import ASSIGNMENTS, assignments_in
from attention_course.grading.example_class import run_example_class
from attention_course.grading.selfgrade import grade_notebook
from course_copy import ROOT, copy_course

pytestmark = pytest.mark.nbgrader


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    course = copy_course(tmp_path_factory.mktemp("course"))
    return course, run_example_class(course)


def test_every_example_scores_as_described(graded_class):
    _, results = graded_class
    assert {r.assignment for r in results} == set(assignments_in(ROOT))
    for r in results:
        assert r.as_expected, f"{r.assignment}/{r.student.name}: lost {r.lost}, expected to lose {r.student.loses}"


def test_solution_scores_full_marks_and_untouched_release_zero(graded_class):
    _, results = graded_class
    for assignment in assignments_in(ROOT):
        scores = {r.student.name: (r.score, r.max_score) for r in results if r.assignment == assignment}
        score, max_score = scores["solution"]
        assert max_score > 0 and score == max_score
        assert scores["untouched"][0] == 0
        partial = [name for name, (s, m) in scores.items() if 0 < s < m]
        assert len(partial) >= 3, f"{assignment}: too few examples with partial credit: {partial}"


def test_feedback_html_names_each_mistake(graded_class):
    course, results = graded_class
    for r in results:
        page = course / "feedback" / r.student.name / r.assignment / ASSIGNMENTS[r.assignment].replace(".ipynb", ".html")
        text = html.unescape(page.read_text())
        for phrase in r.student.loses.values():
            assert phrase in text, f"{page} does not name: {phrase}"
        # Not even a traceback's quoted lines show the hidden tests, which can then serve again.
        assert "BEGIN HIDDEN TESTS" not in text and "thorough=True" not in text, f"{page} shows hidden tests"


def test_grades_are_exported(graded_class):
    course, results = graded_class
    with open(course / "grades.csv") as handle:
        rows = list(csv.DictReader(handle))
    exported = {(row["assignment"], row["student_id"]): float(row["score"]) for row in rows}
    for r in results:
        assert exported[(r.assignment, r.student.name)] == r.score


@pytest.mark.parametrize("assignment,student", [
    ("01_causal_attention", "solution"), ("01_causal_attention", "untouched"), ("01_causal_attention", "no_scale"),
    ("01_causal_attention", "top_left_mask"), ("02_kv_cache", "top_left_prefill"), ("03_mqa", "shared_queries"),
    ("04_gqa", "modulo_groups"), ("05_quiz", "seed_cache_formula"),
])
def test_self_grading_agrees_with_nbgrader(graded_class, assignment, student):
    course, results = graded_class
    nbgrader_result = next(r for r in results if r.assignment == assignment and r.student.name == student)
    submitted = course / "submitted" / student / assignment / ASSIGNMENTS[assignment]
    report = grade_notebook(submitted, course / "source" / assignment / ASSIGNMENTS[assignment])
    assert report.points == nbgrader_result.score
    assert {item.grade_id for item in report.items if item.message} == set(nbgrader_result.lost)


def test_every_example_edit_applies_once():
    from attention_course.grading.examples import build_submission
    import nbformat

    for assignment in assignments_in(ROOT):
        source = nbformat.read(ROOT / "source" / assignment / ASSIGNMENTS[assignment], as_version=4)
        release = nbformat.read(ROOT / "release" / assignment / ASSIGNMENTS[assignment], as_version=4)
        for student in students_of(assignment):
            build_submission(student, source, release)  # raises when an edit no longer matches the solution
