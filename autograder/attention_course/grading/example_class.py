"""The main job: generate the student versions with nbgrader, hand in the example class,
autograde it, write feedback, export grades, and print what each example scored and why."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from attention_course.examples import Student, build_submission, students_of
from attention_course.grading.cells import first_error, grade_id, is_test_cell
from attention_course.grading.course import ASSIGNMENTS, assignments_in, release_notebook, source_notebook


def nbgrader(root: Path, *args: str) -> str:
    """Run an nbgrader command in the course directory, with this Python's tools on PATH; its output."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    completed = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}")
    return completed.stdout + completed.stderr


def generate_release(root: Path, assignment: str) -> None:
    nbgrader(root, "generate_assignment", assignment, "--force")


def hand_in(root: Path, assignment: str, students: list[Student]) -> None:
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    release = nbformat.read(release_notebook(root, assignment), as_version=4)
    for student in students:
        folder = root / "submitted" / student.name / assignment
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(build_submission(student, source, release), folder / ASSIGNMENTS[assignment])


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


def collect(root: Path, assignment: str, students: list[Student]) -> list[ExampleResult]:
    from nbgrader.api import Gradebook

    results = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in students:
            submission = gradebook.find_submission(assignment, student.name)
            autograded = nbformat.read(root / "autograded" / student.name / assignment / ASSIGNMENTS[assignment], as_version=4)
            errors = {grade_id(cell): first_error(cell) for cell in autograded.cells if is_test_cell(cell)}
            notebook = submission.notebooks[0]
            lost = {grade.name: errors.get(grade.name, "") for grade in notebook.grades if grade.score < grade.max_score}
            results.append(ExampleResult(assignment, student, submission.score, submission.max_score, lost))
    return results


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
    for assignment in assignments or assignments_in(root):
        students = students_of(assignment)
        print(f"{assignment}: generating release/, handing in {len(students)} example submissions, autograding ...", flush=True)
        generate_release(root, assignment)
        hand_in(root, assignment, students)
        nbgrader(root, "autograde", assignment, "--force")
        nbgrader(root, "generate_feedback", assignment, "--force")
        results += collect(root, assignment, students)
    nbgrader(root, "export", "--to", str(root / "grades.csv"))
    print(render(results))
    print(f"\nFeedback: {root / 'feedback'}/<student>/<assignment>/*.html   Grades: {root / 'grades.csv'}")
    return results
