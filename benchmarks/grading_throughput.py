"""Grading throughput: stock ``nbgrader autograde`` against ``attention-course grade`` on the same
class, on the same machine, in one run. Asserts that both give every student the same score.

    python benchmarks/grading_throughput.py --students 30 [--assignments 01_causal_attention ...] [--workers N]

The class cycles through each assignment's example students (solution, typical mistakes, the
untouched release, a differently written solution), one folder per student as an LMS exports it.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat

from attention_course.examples import build_submission, students_of
from attention_course.grading.class_grading import grade_class
from attention_course.grading.course import ASSIGNMENTS, assignments_in, copy_course, find_course_root, release_notebook, source_notebook
from attention_course.grading.nbgrader_steps import generate_release, nbgrader


def make_class(root: Path, assignment: str, n_students: int, folder: Path) -> None:
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    release = nbformat.read(release_notebook(root, assignment), as_version=4)
    examples = students_of(assignment)
    for i in range(n_students):
        student = folder / f"s{i:03d}"
        student.mkdir(parents=True)
        nbformat.write(build_submission(examples[i % len(examples)], source, release), student / f"Copy of {ASSIGNMENTS[assignment]}")


def scores(course: Path, assignment: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {s.student.id: s.score for s in gradebook.assignment_submissions(assignment)}


def stock_autograde(course: Path, assignment: str, folder: Path) -> float:
    for student in folder.iterdir():
        target = course / "submitted" / student.name / assignment
        target.mkdir(parents=True)
        (target / ASSIGNMENTS[assignment]).write_bytes(next(student.iterdir()).read_bytes())
    started = time.perf_counter()
    nbgrader(course, "autograde", assignment, "--force")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--assignments", nargs="*", default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    root = find_course_root(Path(__file__).resolve().parent)
    print(f"{os.cpu_count()} cores; {args.students} students per assignment; {args.workers} workers")
    print(f"{'assignment':<22} {'stock s':>8} {'new s':>8} {'stock s/nb':>10} {'new s/nb':>9} {'speed-up':>9}")
    totals = [0.0, 0.0]
    for assignment in args.assignments or assignments_in(root):
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            make_class(root, assignment, args.students, scratch / "class")
            stock, new = copy_course(root, scratch / "stock"), copy_course(root, scratch / "new")
            generate_release(stock, assignment)  # the new command registers the assignment itself, timed
            stock_seconds = stock_autograde(stock, assignment, scratch / "class")
            started = time.perf_counter()
            grade_class(new, assignment, scratch / "class", workers=args.workers)
            new_seconds = time.perf_counter() - started
            assert scores(stock, assignment) == scores(new, assignment), "the two graders disagree"
        totals[0] += stock_seconds
        totals[1] += new_seconds
        n = args.students
        print(f"{assignment:<22} {stock_seconds:>8.1f} {new_seconds:>8.1f} {stock_seconds / n:>10.2f} {new_seconds / n:>9.2f} "
              f"{stock_seconds / new_seconds:>8.2f}x")
    print(f"{'all':<22} {totals[0]:>8.1f} {totals[1]:>8.1f} {'':>10} {'':>9} {totals[0] / totals[1]:>8.2f}x  (scores identical)")


if __name__ == "__main__":
    main()
