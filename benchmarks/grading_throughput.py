"""Grading time, and what grading that cannot be fooled costs, on the same class, on the same
machine, in one run:

- stock: ``nbgrader autograde`` with nbgrader's own preprocessors (test cells judged in the
  student's process: the grading before out-of-process verdicts);
- nbgrader + course config: ``nbgrader autograde`` with the repository's ``nbgrader_config.py``
  (isolated kernels, the harvest notebook in a kernel of its own, verdicts in nbgrader's process: what
  formgrader's "autograde" button does);
- grade command: ``attention-course grade`` (the same, notebooks run in parallel).

It checks that the three give every student the same score (the class is honest: the example
students), and breaks the cost of trusted verdicts down: seconds running a student's notebook and
seconds running its harvest notebook (each again, one at a time, in a kernel from the zygote),
seconds judging in the grader's process, and the start of a kernel with and without namespaces.

    python benchmarks/grading_throughput.py --students 10 [--assignments 01_causal_attention ...] [--workers N]
"""

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import nbformat

from attention_course.grading.examples import build_submission, students_of
from attention_course.grading.class_grading import WORK, grade_class
from attention_course.grading.course import ASSIGNMENTS, assignments_in, copy_course, find_course_root, release_notebook, source_notebook
from attention_course.grading.execute import execute_notebook
from attention_course.grading.limits import Limits, confined
from attention_course.grading.nbgrader_steps import generate_release, nbgrader
from attention_course.grading.verdicts.judge import apply_verdicts, harvest_notebook
from attention_course.grading.zygote import Zygote

STOCK_PREPROCESSORS = ["nbgrader.preprocessors.Execute", "nbgrader.preprocessors.IgnorePattern",
                       "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
                       "nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties",
                       "nbgrader.preprocessors.CheckCellMetadata"]


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


def plain_autograde(course: Path, assignment: str, folder: Path, *options: str) -> float:
    for student in folder.iterdir():
        target = course / "submitted" / student.name / assignment
        target.mkdir(parents=True)
        (target / ASSIGNMENTS[assignment]).write_bytes(next(student.iterdir()).read_bytes())
    generate_release(course, assignment)
    started = time.perf_counter()
    nbgrader(course, "autograde", assignment, "--force", *options)
    return time.perf_counter() - started


def breakdown(course: Path, assignment: str, limits: Limits) -> tuple[float, float, float]:
    """(seconds running the students' notebooks, seconds running their harvest notebooks, seconds
    judging), each notebook run again one at a time in a kernel from one zygote."""
    import copy

    student = harvest = judging = 0.0
    source = nbformat.read(source_notebook(course, assignment), as_version=4)
    with Zygote() as zygote:
        for path in sorted((course / WORK / assignment / "executed").rglob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            started = time.perf_counter()
            apply_verdicts(copy.deepcopy(nb), assignment, source)
            judging += time.perf_counter() - started
            harvest_nb, _ = harvest_notebook(nb, assignment, source)
            student += _running(nb, zygote, limits)
            harvest += _running(harvest_nb, zygote, limits, clean=True)
    return student, harvest, judging


def _running(nb, zygote: Zygote, limits: Limits, clean: bool = False) -> float:
    started = time.perf_counter()
    asyncio.run(execute_notebook(nb, zygote, limits, clean=clean))
    return time.perf_counter() - started


def kernel_start(root: Path, isolate: bool, repeats: int = 5) -> float:
    """Seconds to start a kernel from the zygote, run one empty cell and shut it down."""
    limits, _ = confined(Limits())
    limits = Limits(isolate=isolate and limits.isolate, first_uid=limits.first_uid)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")])
    with Zygote() as zygote:
        asyncio.run(execute_notebook(nb, zygote, limits))  # the zygote's imports, not timed
        started = time.perf_counter()
        for _ in range(repeats):
            asyncio.run(execute_notebook(nb, zygote, limits))
        return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=10)
    parser.add_argument("--assignments", nargs="*", default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    root = find_course_root(Path(__file__).resolve().parent)
    n = args.students
    print(f"{os.cpu_count()} cores; {n} students per assignment; {args.workers} workers for the grade command")
    plain, isolated = kernel_start(root, isolate=False), kernel_start(root, isolate=True)
    print(f"kernel start + one cell + shutdown: {plain:.2f} s plain, {isolated:.2f} s isolated ({isolated - plain:+.2f} s)\n")
    print(f"{'assignment':<20} {'stock s/nb':>10} {'config s/nb':>11} {'command s/nb':>12} {'student kernel s/nb':>19} "
          f"{'harvest kernel s/nb':>19} {'judging s/nb':>12} {'config/stock':>12}")
    totals = [0.0, 0.0, 0.0]
    for assignment in args.assignments or assignments_in(root):
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            make_class(root, assignment, n, scratch / "class")
            stock, config, command = (copy_course(root, scratch / name) for name in ("stock", "config", "command"))
            stock_seconds = plain_autograde(stock, assignment, scratch / "class",
                                            "--Autograde.autograde_preprocessors=" + repr(STOCK_PREPROCESSORS))
            config_seconds = plain_autograde(config, assignment, scratch / "class")
            started = time.perf_counter()
            grade_class(command, assignment, scratch / "class", workers=args.workers)
            command_seconds = time.perf_counter() - started
            graded = {"stock": scores(stock, assignment), "config": scores(config, assignment), "command": scores(command, assignment)}
            differ = {s: {way: graded[way].get(s) for way in graded} for s in graded["stock"]
                      if len({graded[way].get(s) for way in graded}) > 1}
            assert not differ, f"the graders disagree: {differ}"
            student, harvest, judging = breakdown(command, assignment, confined(Limits())[0])
        for i, seconds in enumerate((stock_seconds, config_seconds, command_seconds)):
            totals[i] += seconds
        print(f"{assignment:<20} {stock_seconds / n:>10.2f} {config_seconds / n:>11.2f} {command_seconds / n:>12.2f} "
              f"{student / n:>19.2f} {harvest / n:>19.2f} {judging / n:>12.3f} {config_seconds / stock_seconds:>11.2f}x")
    print(f"{'all':<20} {totals[0]:>9.1f}s {totals[1]:>10.1f}s {totals[2]:>11.1f}s {'':>19} {'':>19} {'':>12} "
          f"{totals[1] / totals[0]:>11.2f}x  (scores identical; stock / command {totals[0] / totals[2]:.2f}x)")


if __name__ == "__main__":
    main()
