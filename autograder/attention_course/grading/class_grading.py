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
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import nbformat
from nbgrader.utils import setenv

from attention_course.grading.cells import grade_id, is_test_cell, neutralise_hidden_test_markers
from attention_course.grading.collect import Entry, answer_ids, collect, place, restore_originals, snapshot
from attention_course.grading.course import ASSIGNMENTS, source_notebook
from attention_course.grading.limits import Limits, confined
from attention_course.grading.nbgrader_plugin import (EXECUTED_AUTOGRADE_PREPROCESSORS, code_of, configured_limits, executed_path,
                                                     execute_with_harvest)
from attention_course.grading.nbgrader_steps import (NbgraderFailed, as_option, failures_by_student, generate_release, nbgrader,
                                                    stored_grades)
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
    return hashlib.sha256("\x00".join(code_of(nb)).encode()).hexdigest()


def _progress(total: int):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="notebook", desc="executing", leave=True)
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        return None


async def _execute_all(jobs: list[tuple[str, Path, Path]], workers: int, limits: Limits, zygote: Zygote,
                       assignment: str, source_nb, written: dict[Path, bytes]) -> dict[str, str]:
    """Run each prepared notebook (student, prepared path, executed path), the harvest appended;
    statuses by student. ``written`` gets the bytes of each executed copy as the grader wrote it."""
    statuses: dict[str, str] = {}
    pending = []
    for student, prepared, executed in jobs:
        nb = nbformat.read(prepared, as_version=4)
        if executed.is_file():
            earlier = nbformat.read(executed, as_version=4).metadata.get(RUN_KEY, {})
            if earlier.get("digest") == _digest(nb) and earlier["status"].startswith("ok"):  # a stopped run runs again
                statuses[student] = earlier["status"]
                written[executed] = executed.read_bytes()
                continue
        pending.append((student, prepared, executed, nb))
    if not pending:
        return statuses
    bar = _progress(len(pending))
    semaphore = asyncio.Semaphore(workers)

    async def run(student, prepared, executed, nb):
        async with semaphore:
            digest = _digest(nb)
            try:
                status = await execute_with_harvest(nb, assignment, source_nb, zygote, limits, str(prepared.parent))
                nb.metadata[RUN_KEY] = {"digest": digest, "status": status}
                executed.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, executed)
                written[executed] = executed.read_bytes()
            except Exception as error:  # the grader's own failure on one notebook: that student only, not the class
                executed.unlink(missing_ok=True)
                status = f"the grader could not run this notebook ({type(error).__name__}: {str(error)[:200]}); scored 0"
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


def _only(root: Path, assignment: str, batch: set[str]) -> list[str]:
    """nbgrader arguments that leave out the students of earlier batches."""
    others = sorted(d.name for d in (root / "submitted").iterdir() if (d / assignment).is_dir() and d.name not in batch)
    return [f"--CourseDirectory.student_id_exclude={','.join(others)}"] if others else []


def _register(root: Path, assignment: str, work: Path) -> None:
    """Let nbgrader record the assignment's cells in its gradebook, unless it already has this source."""
    digest = hashlib.sha256(source_notebook(root, assignment).read_bytes()).hexdigest()
    marker = work / "registered-source.sha256"
    if (root / "gradebook.db").is_file() and marker.is_file() and marker.read_text() == digest:
        return
    generate_release(root, assignment)
    marker.write_text(digest)


def _prepare(root: Path, assignment: str, entries: list[Entry], results: dict[str, StudentResult], selection: list[str],
             work: Path) -> list[tuple[str, Path, Path]]:
    """Phase 1: nbgrader's own sanitizing, nothing executed; the jobs for phase 2."""
    notebook_name = ASSIGNMENTS[assignment]
    try:
        nbgrader(root, "autograde", assignment, "--force", *selection, "--Autograde.autograde_preprocessors=[]")
    except RuntimeError:
        pass  # a notebook nbgrader cannot prepare is found below by its missing output
    jobs = []
    for entry in entries:
        if entry.notebook is None:
            continue
        prepared = root / "autograded" / entry.student / assignment / notebook_name
        if not prepared.is_file():
            results[entry.student].status = "nbgrader could not prepare the notebook (see nbgrader's log); scored 0"
            place(replace(entry, notebook=None), root, assignment, notebook_name)
            continue
        executed = executed_path(work / "executed", entry.student, assignment, Path(notebook_name).stem)
        jobs.append((entry.student, prepared, executed))
    return jobs


def _store_grades(root: Path, assignment: str, entries: list[Entry], selection: list[str], work: Path) -> dict[str, list[str]]:
    """Phase 3: nbgrader scores what ran and stores the grades; then feedback and the export.
    Whatever nbgrader cannot do for one student stops only that student: {student: what happened}."""
    said: dict[str, list[str]] = {}
    notebook_name = ASSIGNMENTS[assignment]
    graded = [e.student for e in entries if (root / "submitted" / e.student / assignment / notebook_name).is_file()]
    try:
        nbgrader(root, "autograde", assignment, "--force", *selection,
                 as_option("Autograde.autograde_preprocessors", EXECUTED_AUTOGRADE_PREPROCESSORS),
                 f"--UseExecuted.executed_folder={work / 'executed'}")
        failed = {}
    except NbgraderFailed as error:
        failed = failures_by_student(error.log, assignment)
    for entry in entries:
        if entry.student not in graded:
            _record_zero(root, assignment, entry.student)
        elif not (root / "autograded" / entry.student / assignment / notebook_name).is_file():
            _record_zero(root, assignment, entry.student)
            why = failed.get(entry.student, "see nbgrader's log")
            said.setdefault(entry.student, []).append(f"nbgrader could not score the notebook ({why}); scored 0")
    for student in graded:
        autograded = root / "autograded" / student / assignment / notebook_name
        if autograded.is_file() and neutralise_hidden_test_markers(nbformat.read(autograded, as_version=4)):
            said.setdefault(student, []).append(
                "repaired: the words 'BEGIN/END HIDDEN TESTS' in a cell of yours, written with a no-break space in the feedback")
    try:
        nbgrader(root, "generate_feedback", assignment, "--force", *selection)  # the course's preprocessors: nbgrader_config.py
        failed = {}
    except NbgraderFailed as error:
        failed = failures_by_student(error.log, assignment)
    for student in graded:
        if (root / "autograded" / student / assignment / notebook_name).is_file() and \
                not (root / "feedback" / student / assignment / f"{Path(notebook_name).stem}.html").is_file():
            why = failed.get(student, "see nbgrader's log")
            said.setdefault(student, []).append(f"no feedback: nbgrader could not write it ({why})")
    nbgrader(root, "export", "--to", str(root / "grades.csv"))
    return said


def _pass_rates(root: Path, assignment: str, students: list[StudentResult]) -> dict[str, tuple[int, int]]:
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    return {grade_id(cell): (sum(1 for r in students if grade_id(cell) not in r.lost), len(students))
            for cell in source.cells if is_test_cell(cell)}


def grade_class(root: Path, assignment: str, submissions: Path, workers: int | None = None, limits: Limits | None = None,
                id_patterns: tuple[str, ...] = (), only_student: str | None = None) -> ClassResult:
    started = time.perf_counter()
    root, submissions = Path(root).resolve(), Path(submissions)
    workers = workers or os.cpu_count() or 1
    work = root / WORK / assignment
    work.mkdir(parents=True, exist_ok=True)
    with Zygote() as zygote:  # it imports torch and transformers while nbgrader works
        _register(root, assignment, work)
        assignment_ids = {a: answer_ids(nbformat.read(source_notebook(root, a), as_version=4))
                          for a in ASSIGNMENTS if source_notebook(root, a).is_file()}
        originals = snapshot(submissions)
        entries, notes = collect(submissions, assignment_ids, assignment, id_patterns, scratch=work)
        if only_student:
            entries = [e for e in entries if e.student == only_student]
        if not entries:
            raise ValueError(f"no notebook {'of ' + repr(only_student) + ' ' if only_student else ''}found in {submissions}")
        for entry in entries:
            place(entry, root, assignment, ASSIGNMENTS[assignment])
        results = {e.student: StudentResult(e.student, e.origin, status=e.problem or "ok") for e in entries}
        selection = _only(root, assignment, set(results))
        jobs = _prepare(root, assignment, entries, results, selection, work)

        limits, cannot = confined(limits or configured_limits(root))  # by default what nbgrader_config.py sets
        notes += cannot
        if limits.threads is None:
            limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // workers))
        source_nb = nbformat.read(source_notebook(root, assignment), as_version=4)
        # Where kernels are not isolated, their code could change the grader's files: kept and put back.
        kept = {folder: snapshot(folder) for folder in (root / "submitted", root / "gradebook.db")}
        written: dict[Path, bytes] = {}
        with setenv(NBGRADER_EXECUTION="autograde"):  # what nbgrader's autograde tells a notebook, while it runs
            statuses = asyncio.run(_execute_all(jobs, workers, limits, zygote, assignment, source_nb, written))
    changed = restore_originals(submissions, originals)
    changed += [path for folder, files in kept.items() for path in restore_originals(folder, files)]
    changed += restore_originals(work / "executed", written)
    notes += [f"{path}: changed while grading, by a student's code; restored" for path in changed]
    for student, status in statuses.items():
        results[student].status = status
    for entry in entries:
        if entry.repairs:
            results[entry.student].status += "; repaired: " + ", ".join(entry.repairs)

    for student, said in _store_grades(root, assignment, entries, selection, work).items():
        results[student].status = "; ".join([results[student].status, *said])
    students = sorted(results.values(), key=lambda r: r.student)
    grades = stored_grades(root, assignment, [r.student for r in students])
    for result in students:
        result.score, result.max_score, result.lost = grades[result.student]
    return ClassResult(assignment, students, notes, time.perf_counter() - started, _pass_rates(root, assignment, students))
