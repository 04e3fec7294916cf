"""One submission graded on a course platform, written as that platform's results.json.

Gradescope's ``run_autograder`` and PrairieLearn's entry point run ``python -m
attention_course.grading.platforms.run gradescope|prairielearn``. The notebook is found as the class
grading finds it (``collect``: any file name, a zip opened, the assignment read from the cells, broken
cell metadata mended) and graded by the self-grading code path (``selfgrade.grade_notebook``: the
student's notebook in a confined kernel, the harvest notebook in a clean one, the verdicts judged
out of process, nbgrader's scoring rule), within the limits the package was built with.

Folders, as each platform lays them out; the base is overridable (``--base``, or the environment
variables below) so that tests and a dry run use a folder of their own:

- Gradescope (``ATTENTION_COURSE_AUTOGRADER``, default ``/autograder``): ``source/`` the autograder zip
  unpacked (the instructor notebook with its hidden tests: students never see this folder),
  ``submission/`` what the student uploaded, ``results/results.json``.
- PrairieLearn (``ATTENTION_COURSE_GRADE``, default ``/grade``): ``tests/`` the question's tests folder
  (the instructor notebook), ``student/`` the uploaded files, ``data/data.json``, ``results/results.json``
  (which PrairieLearn does not create).

What students see: each graded item is one test with its points and, when it lost points, the named
mistake (the first error line, as on the feedback page). On Gradescope an item whose test cell has
hidden tests gets the package's ``hidden_visibility`` ("after_due_date" by default: no probing the hidden
tests before the deadline; Gradescope then shows students their total only after the due date too);
every other item is "visible" (its checks are the ones in the student's own notebook). PrairieLearn shows
results at once and has no such setting. A file that cannot be graded scores 0 on Gradescope with the
reason in the output, and is "not gradable" on PrairieLearn (no attempt used up), with the reason.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from attention_course.grading.cells import ItemResult, grade_id, hidden_test_lines, is_test_cell, nbgrader_meta
from attention_course.grading.collect import collect
from attention_course.grading.course import ASSIGNMENTS
from attention_course.grading.limits import Limits, confined
from attention_course.grading.selfgrade import Report, grade_notebook

CONFIG = "attention_course_grading.json"  # beside the instructor notebook: what the package was built with
GRADESCOPE_ENV = "ATTENTION_COURSE_AUTOGRADER"
PRAIRIELEARN_ENV = "ATTENTION_COURSE_GRADE"
# One submission: every file stands for itself (collect's patterns are for a class's files).
EVERY_FILE = r"^(?P<student>.+)$"


@dataclass(frozen=True)
class Config:
    assignment: str
    assignment_ids: dict[str, list[str]]  # the grade ids of every assignment: another one's notebook is named as such
    limits: dict  # the fields of ``Limits``
    hidden_visibility: str = "after_due_date"  # Gradescope's visibility of an item with hidden tests

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> "Config":
        return cls(**json.loads((Path(folder) / CONFIG).read_text()))


def source_path(folder: Path, assignment: str) -> Path:
    """Where a package keeps the instructor notebook: ``source/<assignment>/``, as in the course
    directory (the self-grading takes the assignment from that folder's name)."""
    return Path(folder) / "source" / assignment / ASSIGNMENTS[assignment]


@dataclass(frozen=True)
class Item:
    grade_id: str
    max_points: float
    hidden: bool  # its test cell has hidden tests


@dataclass
class Outcome:
    items: list[Item]  # every graded item of the assignment, in order
    report: Report | None  # None: nothing gradable was handed in
    origin: str = ""  # the file graded, as its path inside the submission
    problem: str = ""  # why nothing was graded
    notes: list[str] = field(default_factory=list)  # for the student: files left aside, cells mended
    grader_notes: list[str] = field(default_factory=list)  # for the instructor's log: what the kernels could not be given

    def result(self, item: Item) -> ItemResult | None:
        found = [r for r in self.report.items if r.grade_id == item.grade_id] if self.report else []
        return found[0] if found else None

    @property
    def points(self) -> float:
        return self.report.points if self.report else 0.0

    @property
    def max_points(self) -> float:
        return sum(item.max_points for item in self.items)


def grade_submission(submission: Path, package: Path, config: Config) -> Outcome:
    """Find the notebook in the folder ``submission`` and grade it with the instructor notebook that
    ``package`` (the unpacked autograder) carries."""
    source = source_path(package, config.assignment)
    items = [Item(grade_id(cell), float(nbgrader_meta(cell).get("points", 0)), bool(hidden_test_lines(cell)))
             for cell in nbformat.read(source, as_version=4).cells if is_test_cell(cell)]
    ids = {assignment: set(found) for assignment, found in config.assignment_ids.items()}
    with tempfile.TemporaryDirectory(prefix="submission-") as scratch:
        entries, notes = (collect(Path(submission), ids, config.assignment, (EVERY_FILE,), scratch=Path(scratch))
                          if Path(submission).is_dir() else ([], []))
        usable = [entry for entry in entries if entry.notebook is not None]
        if not usable:
            problem = "; ".join(f"{entry.origin}: {entry.problem}" for entry in entries) or "no notebook (.ipynb) was handed in"
            return Outcome(items, None, problem=problem, notes=notes)
        chosen = usable[-1]  # as collect chooses among one student's notebooks
        if len(usable) > 1:
            notes.append(f"{len(usable)} notebooks of {config.assignment} were handed in: graded {chosen.origin}")
        notes += [f"{chosen.origin}: {repair}" for repair in chosen.repairs]
        path = Path(scratch) / "graded" / Path(chosen.origin).name
        path.parent.mkdir()
        nbformat.write(chosen.notebook, path)
        limits = Limits(**config.limits)
        report = grade_notebook(path, source, limits=limits)
    return Outcome(items, report, chosen.origin, notes=notes, grader_notes=confined(limits)[1])


def _not_graded(outcome: Outcome, notebook: str) -> str:
    return (f"Nothing was graded: {outcome.problem}. Hand in the assignment's notebook ({notebook}) as saved by "
            "Colab or Jupyter (File > Download .ipynb).")


def _summary(outcome: Outcome) -> list[str]:
    lines = [f"{outcome.origin}: {outcome.points:g} / {outcome.max_points:g} points"]
    if outcome.report.status != "ok":
        lines.append(f"The run: {outcome.report.status}")
    return lines + outcome.notes


def gradescope_results(outcome: Outcome, config: Config, seconds: float) -> dict:
    """Gradescope's results.json (its autograder specification): one test per graded item."""
    tests = []
    for item in outcome.items:
        result = outcome.result(item)
        tests.append({
            "name": item.grade_id,
            "score": result.points if result else 0.0,
            "max_score": item.max_points,
            "status": "passed" if result and not result.message else "failed",
            "output": result.message if result else "not graded",
            "visibility": config.hidden_visibility if item.hidden else "visible",
        })
    if outcome.report is None:
        output = "\n".join([_not_graded(outcome, ASSIGNMENTS[config.assignment]), *outcome.notes])
    else:
        lines = _summary(outcome)
        hidden = [item.grade_id for item in outcome.items if item.hidden]
        if hidden and config.hidden_visibility != "visible":
            when = {"after_due_date": "after the due date", "after_published": "once the grades are published",
                    "hidden": "never"}[config.hidden_visibility]
            lines.append(f"Items with hidden tests ({', '.join(hidden)}) show their result {when}.")
        output = "\n".join(lines)
    return {"score": outcome.points, "execution_time": round(seconds), "output": output, "output_format": "text",
            "stdout_visibility": "hidden", "tests": tests}


def prairielearn_results(outcome: Outcome, config: Config) -> dict:
    """PrairieLearn's results.json (its external grading documentation): score from 0 to 1, one test per item."""
    if outcome.report is None:
        message = _not_graded(outcome, ASSIGNMENTS[config.assignment])
        return {"gradable": False, "format_errors": [message, *outcome.notes], "message": message}
    tests = []
    for item in outcome.items:
        result = outcome.result(item)
        tests.append({"name": item.grade_id, "points": result.points if result else 0.0, "max_points": item.max_points,
                      "message": result.message if result else "not graded"})
    lines = _summary(outcome)
    return {"gradable": True, "score": outcome.points / outcome.max_points if outcome.max_points else 0.0,
            "message": lines[0], "output": "\n".join([outcome.report.render(), *lines[1:]]), "tests": tests}


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def _log(outcome: Outcome) -> None:
    """For the instructor: the platform keeps what the entry point prints (Gradescope's results/stdout)."""
    print(outcome.report.render() if outcome.report else f"not graded: {outcome.problem}")
    for note in outcome.notes + outcome.grader_notes:
        print(f"note: {note}")


def run_gradescope(base: Path | None = None) -> dict:
    base = Path(base or os.environ.get(GRADESCOPE_ENV) or "/autograder")
    config = Config.load(base / "source")
    started = time.monotonic()
    try:
        outcome = grade_submission(base / "submission", base / "source", config)
    except Exception as error:
        _write(base / "results" / "results.json", {
            "score": 0.0, "execution_time": round(time.monotonic() - started), "stdout_visibility": "hidden",
            "output": f"The autograder itself failed ({type(error).__name__}); your instructor can see why in its log."})
        raise
    results = gradescope_results(outcome, config, time.monotonic() - started)
    _write(base / "results" / "results.json", results)
    _log(outcome)
    return results


def run_prairielearn(base: Path | None = None) -> dict:
    base = Path(base or os.environ.get(PRAIRIELEARN_ENV) or "/grade")
    config = Config.load(base / "tests")
    try:
        outcome = grade_submission(base / "student", base / "tests", config)
    except Exception as error:
        message = f"The grader itself failed ({type(error).__name__}); this attempt does not count."
        _write(base / "results" / "results.json", {"gradable": False, "format_errors": [message], "message": message})
        raise
    results = prairielearn_results(outcome, config)
    _write(base / "results" / "results.json", results)
    _log(outcome)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_course.grading.platforms.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("platform", choices=["gradescope", "prairielearn"])
    parser.add_argument("--base", help=f"the platform's folder (default: ${GRADESCOPE_ENV} or /autograder; "
                        f"${PRAIRIELEARN_ENV} or /grade)")
    args = parser.parse_args(argv)
    try:
        (run_gradescope if args.platform == "gradescope" else run_prairielearn)(args.base)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
