"""End to end through nbgrader: the example class of every assignment scores as described, the
feedback names each mistake, and self-grading agrees with nbgrader point for point."""

import csv
import html
import time

import pytest

from attention_course.grading.examples import students_of
from attention_course.grading.course import ASSIGNMENTS, assignments_in
from attention_course.grading.example_class import run_example_class
from attention_course.grading.selfgrade import grade_notebooks
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


def _item_points(course, assignment: str, students: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """nbgrader's stored points per item: {student: {test cell: (score, max score)}}."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {student: {grade.name: (grade.score, grade.max_score)
                          for notebook in gradebook.find_submission(assignment, student).notebooks for grade in notebook.grades}
                for student in students}


def test_self_grading_agrees_with_nbgrader_on_every_example(graded_class):
    """``grade-notebook`` (the same files nbgrader graded, the same instructor notebooks) gives every
    example student of every assignment nbgrader's total and nbgrader's points on each item."""
    course, results = graded_class
    pairs = [(course / "submitted" / r.student.name / r.assignment / ASSIGNMENTS[r.assignment],
              course / "source" / r.assignment / ASSIGNMENTS[r.assignment]) for r in results]
    started = time.perf_counter()
    reports = grade_notebooks(pairs)  # one zygote, as many notebooks at once as there are cores
    print(f"self-graded {len(pairs)} example submissions in {time.perf_counter() - started:.0f} s")
    stored = {a: _item_points(course, a, [r.student.name for r in results if r.assignment == a])
              for a in dict.fromkeys(r.assignment for r in results)}
    disagree = []
    for r, report in zip(results, reports):
        by_nbgrader = stored[r.assignment][r.student.name]
        by_self = {item.grade_id: (item.points, item.max_points) for item in report.items}
        if report.status != "ok" or report.points != r.score or by_self != by_nbgrader:
            differ = {k: (by_self.get(k), by_nbgrader.get(k)) for k in {*by_self, *by_nbgrader} if by_self.get(k) != by_nbgrader.get(k)}
            disagree.append(f"{r.assignment}/{r.student.name}: {report.points:g} vs nbgrader's {r.score:g} "
                            f"(status {report.status!r}; item: (self, nbgrader) {differ})")
    assert not disagree, "\n".join(disagree)


def test_every_example_edit_applies_once():
    from attention_course.grading.examples import build_submission
    import nbformat

    for assignment in assignments_in(ROOT):
        source = nbformat.read(ROOT / "source" / assignment / ASSIGNMENTS[assignment], as_version=4)
        release = nbformat.read(ROOT / "release" / assignment / ASSIGNMENTS[assignment], as_version=4)
        for student in students_of(assignment):
            build_submission(student, source, release)  # raises when an edit no longer matches the solution
