"""The main job: generate the student versions with nbgrader, hand in the example class,
autograde it, write feedback, export grades, and print what each example scored and why."""

from dataclasses import dataclass
from pathlib import Path

import nbformat

from attention_course.grading.examples import Student, build_submission, students_of
from attention_course.grading.course import ASSIGNMENTS, assignments_in, release_notebook, source_notebook
from attention_course.grading.nbgrader_steps import generate_release, nbgrader, stored_grades


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
    for assignment in assignments or assignments_in(root):
        students = students_of(assignment)
        print(f"{assignment}: generating release/, handing in {len(students)} example submissions, autograding ...", flush=True)
        generate_release(root, assignment)
        hand_in(root, assignment, students)
        nbgrader(root, "autograde", assignment, "--force")
        nbgrader(root, "generate_feedback", assignment, "--force")
        results += results_of(root, assignment, students)
    nbgrader(root, "export", "--to", str(root / "grades.csv"))
    print(render(results))
    print(f"\nFeedback: {root / 'feedback'}/<student>/<assignment>/*.html   Grades: {root / 'grades.csv'}")
    return results
