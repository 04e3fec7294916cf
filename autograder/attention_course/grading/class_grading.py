"""``attention-course grade ASSIGNMENT SUBMISSIONS``: from an LMS download to grades and feedback.

1. collect: one notebook per student into nbgrader's ``submitted/`` (unusable files: a status and 0);
2. nbgrader prepares each notebook (its own sanitizing: instructor's test cells, missing cells back);
3. the prepared notebooks run in parallel, each in a fresh kernel forked from a pre-loaded zygote,
   within limits; executed copies are kept under ``.grading/``, so an interrupted run resumes;
4. nbgrader scores the executed notebooks and stores the grades (its gradebook stays the source
   of truth: formgrader, ``generate_feedback`` and ``export`` keep working);
5. feedback HTML, ``grades.csv``, a printed summary and a summary figure.
"""

import asyncio
import hashlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import nbformat

from attention_course.grading.cells import first_error, grade_id, is_test_cell
from attention_course.grading.collect import answer_ids, collect, place, restore_originals, snapshot
from attention_course.grading.course import ASSIGNMENTS, source_notebook
from attention_course.grading.example_class import generate_release, nbgrader
from attention_course.grading.execute import Limits, execute_notebook, separate_users_possible
from attention_course.grading.nbgrader_plugin import AUTOGRADE_PREPROCESSORS, EXECUTED_ENV, executed_path
from attention_course.grading.zygote import Zygote

WORK = ".grading"
RUN_KEY = "attention_course_run"  # in an executed copy: what it was executed from, and how it went


@dataclass
class StudentResult:
    student: str
    origin: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "ok"
    lost: dict[str, str] = field(default_factory=dict)  # test cell -> the error that cost its points


@dataclass
class ClassResult:
    assignment: str
    students: list[StudentResult]
    notes: list[str]
    seconds: float
    items: dict[str, tuple[int, int]] = field(default_factory=dict)  # test cell -> (passed, graded)


def _digest(nb) -> str:
    return hashlib.sha256("\x00".join(c.source for c in nb.cells if c.cell_type == "code").encode()).hexdigest()


def _progress(total: int):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="notebook", desc="executing", leave=True)
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        return None


async def _execute_all(jobs: list[tuple[str, Path, Path]], workers: int, limits: Limits) -> dict[str, str]:
    """Run each prepared notebook (student, prepared path, executed path); statuses by student."""
    statuses: dict[str, str] = {}
    pending = []
    for student, prepared, executed in jobs:
        nb = nbformat.read(prepared, as_version=4)
        if executed.is_file():
            earlier = nbformat.read(executed, as_version=4).metadata.get(RUN_KEY, {})
            if earlier.get("digest") == _digest(nb) and earlier["status"].startswith("ok"):  # a stopped run runs again
                statuses[student] = earlier["status"]
                continue
        pending.append((student, prepared, executed, nb))
    if not pending:
        return statuses
    bar = _progress(len(pending))
    semaphore = asyncio.Semaphore(workers)
    with Zygote() as zygote:

        async def run(student, prepared, executed, nb):
            async with semaphore:
                digest = _digest(nb)
                status = await execute_notebook(nb, zygote, limits, files_from=str(prepared.parent))
                nb.metadata[RUN_KEY] = {"digest": digest, "status": status}
                executed.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, executed)
                statuses[student] = status
                if bar is not None:
                    bar.update(1)

        await asyncio.gather(*(run(*job) for job in pending))
    if bar is not None:
        bar.close()
    return statuses


def _record_zero(root: Path, assignment: str, student: str) -> None:
    """A submission with nothing gradable: every item 0, as nbgrader does for a missing notebook."""
    from nbgrader.api import Gradebook

    with warnings.catch_warnings(), Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        warnings.simplefilter("ignore")  # SQLAlchemy's autoflush notices from inside nbgrader's API
        gradebook.update_or_create_student(student)
        submission = gradebook.update_or_create_submission(assignment, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                grade.auto_score, grade.manual_score, grade.needs_manual_grade = 0, None, False
        gradebook.db.commit()


def _scores(root: Path, assignment: str, students: list[StudentResult]) -> None:
    from nbgrader.api import Gradebook

    notebook_name = ASSIGNMENTS[assignment]
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for result in students:
            submission = gradebook.find_submission(assignment, result.student)
            result.score, result.max_score = submission.score, submission.max_score
            autograded = root / "autograded" / result.student / assignment / notebook_name
            errors = {}
            if autograded.is_file():
                nb = nbformat.read(autograded, as_version=4)
                errors = {grade_id(c): first_error(c) for c in nb.cells if is_test_cell(c)}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.score < grade.max_score:
                        result.lost[grade.name] = errors.get(grade.name) or "no notebook"


def _only(root: Path, assignment: str, batch: set[str]) -> list[str]:
    """nbgrader arguments that leave out the students of earlier batches."""
    others = sorted(d.name for d in (root / "submitted").iterdir() if (d / assignment).is_dir() and d.name not in batch)
    return [f"--CourseDirectory.student_id_exclude={','.join(others)}"] if others else []


def grade_class(root: Path, assignment: str, submissions: Path, workers: int | None = None, limits: Limits = Limits(),
                id_patterns: tuple[str, ...] = (), only_student: str | None = None) -> ClassResult:
    started = time.perf_counter()
    root = Path(root).resolve()
    workers = workers or os.cpu_count() or 1
    notebook_name = ASSIGNMENTS[assignment]
    work = root / WORK / assignment
    work.mkdir(parents=True, exist_ok=True)

    generate_release(root, assignment)  # registers the assignment's cells in the gradebook
    assignment_ids = {a: answer_ids(nbformat.read(source_notebook(root, a), as_version=4))
                      for a in ASSIGNMENTS if source_notebook(root, a).is_file()}
    originals = snapshot(Path(submissions))
    entries, notes = collect(Path(submissions), assignment_ids, assignment, id_patterns, scratch=work)
    if only_student:
        entries = [e for e in entries if e.student == only_student]
        if not entries:
            raise ValueError(f"no submission from student {only_student!r} in {submissions}")
    if not entries:
        raise ValueError(f"no student notebooks found in {submissions}")
    for entry in entries:
        place(entry, root, assignment, notebook_name)
    results = {e.student: StudentResult(e.student, e.origin, status=e.problem or "ok") for e in entries}

    selection = _only(root, assignment, {e.student for e in entries})
    # Phase 1: nbgrader's own sanitizing, nothing executed.
    try:
        nbgrader(root, "autograde", assignment, "--force", *selection, "--Autograde.autograde_preprocessors=[]")
    except RuntimeError:
        pass  # a notebook nbgrader cannot prepare is found below by its missing output
    jobs = []
    for entry in entries:
        prepared = root / "autograded" / entry.student / assignment / notebook_name
        if entry.notebook is None:
            continue
        if not prepared.is_file():
            results[entry.student].status = "nbgrader could not prepare the notebook (see nbgrader's log); scored 0"
            shutil.rmtree(root / "submitted" / entry.student / assignment)
            (root / "submitted" / entry.student / assignment).mkdir(parents=True)
            continue
        jobs.append((entry.student, prepared, executed_path(work / "executed", entry.student, assignment, Path(notebook_name).stem)))

    if limits.first_uid is not None and not separate_users_possible():
        limits = replace(limits, first_uid=None)
        notes.append("kernels ran as the grading user (separate users need root and a Python that other users can "
                     "read): student code could write the grader's files; submitted files are checked and restored")
    os.environ.setdefault("NBGRADER_EXECUTION", "autograde")
    statuses = asyncio.run(_execute_all(jobs, workers, limits))
    for relative in restore_originals(Path(submissions), originals):
        notes.append(f"{relative}: changed while grading, by a student's code; restored")
    for student, status in statuses.items():
        results[student].status = status
    for entry in entries:
        if entry.repairs:
            results[entry.student].status += "; repaired: " + ", ".join(entry.repairs)

    # Phase 3: nbgrader scores what ran, and stores the grades.
    preprocessors = "[" + ",".join(f"'{p}'" for p in AUTOGRADE_PREPROCESSORS) + "]"
    os.environ[EXECUTED_ENV] = str(work / "executed")
    try:
        nbgrader(root, "autograde", assignment, "--force", *selection, f"--Autograde.autograde_preprocessors={preprocessors}")
    finally:
        del os.environ[EXECUTED_ENV]
    for entry in entries:
        if not (root / "submitted" / entry.student / assignment / notebook_name).is_file():
            _record_zero(root, assignment, entry.student)
    nbgrader(root, "generate_feedback", assignment, "--force", *selection)
    nbgrader(root, "export", "--to", str(root / "grades.csv"))

    students = sorted(results.values(), key=lambda r: r.student)
    _scores(root, assignment, students)
    items: dict[str, tuple[int, int]] = {}
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    for cell in source.cells:
        if is_test_cell(cell):
            graded = len(students)
            failed = sum(1 for r in students if grade_id(cell) in r.lost)
            items[grade_id(cell)] = (graded - failed, graded)
    return ClassResult(assignment, students, notes, time.perf_counter() - started, items)
