"""The main job: hand in the example class of every assignment and grade it with the grade command
(nbgrader generates the student versions, autogrades, writes feedback and exports the grades), then
print what each example scored and why."""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from attention_course.grading.class_grading import grade_class
from attention_course.grading.course import ASSIGNMENTS, assignments_in, release_notebook, source_notebook
from attention_course.grading.examples import Student, build_submission, students_of
from attention_course.grading.nbgrader_steps import stored_grades
from attention_course.grading.workers import LocalPool


def hand_in(root: Path, assignment: str, students: list[Student], folder: Path) -> None:
    """The class as an LMS would hand it over: a folder per student."""
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    release = nbformat.read(release_notebook(root, assignment), as_version=4)
    for student in students:
        (folder / student.name).mkdir(parents=True)
        nbformat.write(build_submission(student, source, release), folder / student.name / ASSIGNMENTS[assignment])


@dataclass
class ExampleResult:
    assignment: str
    student: Student
    score: float
    max_score: float
    lost: dict[str, str]  # test cell -> the error that cost its points

    @property
    def as_expected(self) -> bool:
        return set(self.lost) == set(self.student.loses) and all(
            phrase in self.lost[cell] for cell, phrase in self.student.loses.items()
        )


def results_of(root: Path, assignment: str, students: list[Student]) -> list[ExampleResult]:
    grades = stored_grades(root, assignment, [student.name for student in students])
    return [ExampleResult(assignment, student, *grades[student.name]) for student in students]


def render(results: list[ExampleResult]) -> str:
    lines = []
    for assignment in dict.fromkeys(r.assignment for r in results):
        rows = [r for r in results if r.assignment == assignment]
        width = max(len(r.student.name) for r in rows)
        lines += [f"\n{assignment}", f"  {'student':<{width}}  {'score':>9}  as expected  what it shows"]
        for r in rows:
            lines.append(
                f"  {r.student.name:<{width}}  {r.score:>4g} / {r.max_score:<3g}  {'yes' if r.as_expected else 'NO ':<11}  "
                f"{r.student.description}"
            )
            for cell, error in r.lost.items():
                lines.append(f"  {'':<{width}}    - {cell}: {error[:220]}")
    return "\n".join(lines)


def run_example_class(root: Path, assignments: list[str] | None = None) -> list[ExampleResult]:
    results = []
    pool = LocalPool(os.cpu_count() or 1)  # one pool for every assignment's class
    try:
        for assignment in assignments or assignments_in(root):
            students = students_of(assignment)
            print(f"{assignment}: handing in {len(students)} example submissions, grading them ...", flush=True)
            with tempfile.TemporaryDirectory() as folder:
                hand_in(root, assignment, students, Path(folder))
                grade_class(root, assignment, Path(folder), run_on=pool)
            results += results_of(root, assignment, students)
    finally:
        pool.close()
    print(render(results))
    print(f"\nFeedback: {root / 'feedback'}/<student>/<assignment>/*.html   Grades: {root / 'grades.csv'}")
    return results
