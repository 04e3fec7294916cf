"""Grading time, and what grading that cannot be fooled costs, on the same class, on the same
machine, in one run, at each class size asked for (small classes matter: a TA regrading late work):

- stock: ``nbgrader autograde`` with nbgrader's own preprocessors (test cells judged in the
  student's process: the grading before out-of-process verdicts);
- nbgrader + course config: ``nbgrader autograde`` with the repository's ``nbgrader_config.py``
  (confined kernels, the harvest notebook in a clean kernel of its own, verdicts in nbgrader's process:
  what formgrader's "autograde" button does), one notebook after another;
- grade command: ``attention-course grade`` (the same, each notebook a job for a pool of worker
  processes, each running nbgrader's autograde and feedback through its Python API).

It checks that the three give every student the same score (the class is honest: the example
students), and breaks the command's time down: the per-class steps (registering the assignment, the
export), the driver's own serial work per notebook (collecting, storing the grades, writing files:
what caps grading on a cluster), and the time waiting on the workers; then, for a few notebooks run
again one at a time, the seconds a student's notebook and its harvest notebook take in a kernel, and
the seconds judging; and the start of a kernel with and without confinement.

    python benchmarks/grading_throughput.py --students 6 30 [--assignments 01_causal_attention ...] [--workers N]
"""

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import nbformat

from attention_course.grading.course import ASSIGNMENTS, assignments_in, copy_course, find_course_root, release_notebook, source_notebook
from attention_course.grading.examples import build_submission, students_of
from attention_course.grading.limits import Limits, confined
from attention_course.grading.zygote import Zygote

# The grade command's workers are spawned, and a spawned process imports the main module first: the
# heavier modules are imported where they are used, so that its workers start as the command's do.

ONCE = ("starting and stopping the workers", "registering the assignment", "exporting grades.csv")  # per class
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
    from attention_course.grading.nbgrader_steps import generate_release, nbgrader

    for student in folder.iterdir():
        target = course / "submitted" / student.name / assignment
        target.mkdir(parents=True)
        (target / ASSIGNMENTS[assignment]).write_bytes(next(student.iterdir()).read_bytes())
    generate_release(course, assignment)
    started = time.perf_counter()
    nbgrader(course, "autograde", assignment, "--force", *options)
    return time.perf_counter() - started


def breakdown(course: Path, assignment: str, limits: Limits, sample: int = 4) -> tuple[float, float, float]:
    """Per notebook: (seconds running a student's notebook, seconds running its harvest notebook,
    seconds judging), for the first ``sample`` submitted notebooks run again one at a time in kernels
    from one zygote."""
    from attention_course.grading.verdicts.judge import apply_verdicts, harvest_notebook, keep_harvest

    student = harvest = judging = 0.0
    source = nbformat.read(source_notebook(course, assignment), as_version=4)
    paths = sorted((course / "submitted").glob(f"*/{assignment}/{ASSIGNMENTS[assignment]}"))[:sample]
    with Zygote() as zygote:
        _running(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")]), zygote, limits)  # its imports, not timed
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            harvest_nb, left_out = harvest_notebook(nb, assignment, source)
            student += _running(nb, zygote, limits)
            harvest += _running(harvest_nb, zygote, limits, clean=True)
            keep_harvest(nb, harvest_nb, left_out)
            started = time.perf_counter()
            apply_verdicts(nb, assignment, source)
            judging += time.perf_counter() - started
    return student / len(paths), harvest / len(paths), judging / len(paths)


def _running(nb, zygote: Zygote, limits: Limits, clean: bool = False) -> float:
    from attention_course.grading.execute import execute_notebook

    started = time.perf_counter()
    asyncio.run(execute_notebook(nb, zygote, limits, clean=clean))
    return time.perf_counter() - started


def kernel_start(root: Path, isolate: bool, repeats: int = 5) -> float:
    """Seconds to start a kernel from the zygote, run one empty cell and shut it down."""
    from attention_course.grading.execute import execute_notebook

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
    from attention_course.grading.class_grading import grade_class

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, nargs="+", default=[6, 30], help="class sizes, each graded three ways")
    parser.add_argument("--assignments", nargs="*", default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    root = find_course_root(Path(__file__).resolve().parent)
    print(f"{os.cpu_count()} cores; {args.workers} workers for the grade command")
    unconfined, confined_start = kernel_start(root, isolate=False), kernel_start(root, isolate=True)
    print(f"kernel start + one cell + shutdown: {unconfined:.2f} s unconfined, {confined_start:.2f} s confined "
          f"({confined_start - unconfined:+.2f} s)\n")
    print(f"{'assignment':<20} {'students':>8} {'stock s/nb':>10} {'config s/nb':>11} {'command s/nb':>12} "
          f"{'stock/command':>13} {'config/command':>14} {'driver s/nb':>11} {'once s':>7} {'waiting s':>9}")
    totals: dict[int, list[float]] = {}
    kernels = []
    for assignment in args.assignments or assignments_in(root):
        for n in args.students:
            with tempfile.TemporaryDirectory() as scratch:
                scratch = Path(scratch)
                make_class(root, assignment, n, scratch / "class")
                stock, config, command = (copy_course(root, scratch / name) for name in ("stock", "config", "command"))
                stock_seconds = plain_autograde(stock, assignment, scratch / "class",
                                                "--Autograde.autograde_preprocessors=" + repr(STOCK_PREPROCESSORS))
                config_seconds = plain_autograde(config, assignment, scratch / "class")
                started = time.perf_counter()
                result = grade_class(command, assignment, scratch / "class", workers=args.workers)
                command_seconds = time.perf_counter() - started
                graded = {"stock": scores(stock, assignment), "config": scores(config, assignment), "command": scores(command, assignment)}
                differ = {s: {way: graded[way].get(s) for way in graded} for s in graded["stock"]
                          if len({graded[way].get(s) for way in graded}) > 1}
                assert not differ, f"the graders disagree: {differ}"
                if n == max(args.students):
                    kernels.append((assignment, *breakdown(command, assignment, confined(Limits())[0])))
            t = result.timings
            total = totals.setdefault(n, [0.0, 0.0, 0.0])
            for i, seconds in enumerate((stock_seconds, config_seconds, command_seconds)):
                total[i] += seconds
            print(f"{assignment:<20} {n:>8} {stock_seconds / n:>10.2f} {config_seconds / n:>11.2f} {command_seconds / n:>12.2f} "
                  f"{stock_seconds / command_seconds:>12.2f}x {config_seconds / command_seconds:>13.2f}x "
                  f"{t['driver, per notebook']:>11.3f} {sum(t[k] for k in ONCE):>7.1f} "
                  f"{t.get('waiting on workers', 0.0):>9.1f}", flush=True)
    for n, (stock_seconds, config_seconds, command_seconds) in totals.items():
        print(f"{'all':<20} {n:>8} {stock_seconds:>9.1f}s {config_seconds:>10.1f}s {command_seconds:>11.1f}s "
              f"{stock_seconds / command_seconds:>12.2f}x {config_seconds / command_seconds:>13.2f}x  (scores identical)")
    print(f"\n{'assignment':<20} {'student kernel s/nb':>19} {'harvest kernel s/nb':>19} {'judging s/nb':>12}  (notebooks run again, one at a time)")
    for assignment, student, harvest, judging in kernels:
        print(f"{assignment:<20} {student:>19.2f} {harvest:>19.2f} {judging:>12.3f}")


if __name__ == "__main__":
    main()
