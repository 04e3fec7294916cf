"""``attention-course grade ASSIGNMENT SUBMISSIONS``: from an LMS download to grades and feedback.

1. once per class: nbgrader registers the assignment (in this process, through its Python API);
2. collect: one notebook per student into nbgrader's ``submitted/`` (unusable files: a status and 0);
3. each notebook is a job (``notebook_job``) for a worker process: nbgrader's own autograde (its
   sanitizing, the confined execution in a kernel forked from the worker's pre-loaded zygote, the
   harvest and its verdicts, nbgrader's scoring) and its feedback, in a scratch course of the job's
   own; the workers run in parallel, with a progress bar; each finished job is kept under
   ``.grading/``, so a run that stops resumes and a notebook graded before is not run again;
4. this process, the only writer, copies the grades into ``gradebook.db`` in batches (formgrader,
   ``generate_feedback`` and ``export`` keep working) and the files into ``autograded/`` and ``feedback/``;
5. once per class: ``grades.csv``, a printed summary and a summary figure.
"""

import concurrent.futures
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import nbformat

from attention_course.grading.cells import grade_id, is_test_cell
from attention_course.grading.collect import Entry, answer_ids, collect, place, restore_originals, snapshot
from attention_course.grading.course import ASSIGNMENTS, source_notebook
from attention_course.grading.integrity import integrity_report
from attention_course.grading.late import describe, lateness, prepare_late_work
from attention_course.grading.limits import Limits, confined
from attention_course.grading.lms import moodle_submission_times, read_moodle_worksheet, write_lms_files
from attention_course.grading.nbgrader_plugin import configured_limits
from attention_course.grading.nbgrader_steps import export_grades, register_assignment, stored_grades
from attention_course.grading.cluster import configured_cluster
from attention_course.grading.notebook_job import ClassBundle, NotebookJob, NotebookOutcome, bundle_of, store_outcomes, write_files
from attention_course.grading.workers import RETRIES, Workers, workers_for

WORK = ".grading"


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
    # Where the time went: per-class steps, the driver's own work per notebook, waiting on the workers.
    timings: dict[str, float] = field(default_factory=dict)
    integrity: str = ""  # the integrity report's line: who is flagged, where to read why


def _progress(total: int):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="notebook", desc="grading", leave=True)
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        return None


def _register(root: Path, assignment: str, work: Path) -> None:
    """Let nbgrader record the assignment's cells in its gradebook, unless it already has this source."""
    digest = hashlib.sha256(source_notebook(root, assignment).read_bytes()).hexdigest()
    marker = work / "registered-source.sha256"
    if (root / "gradebook.db").is_file() and marker.is_file() and marker.read_text() == digest:
        return
    register_assignment(root, assignment)
    marker.write_text(digest)


def _seed(work: Path, student: str) -> int:
    """A student's harvest seed: secret (drawn once per class and kept in .grading/), the same on every run."""
    salt = work / "seed-salt"
    if not salt.is_file():
        salt.write_text(secrets.token_hex(16))
    return int.from_bytes(hashlib.sha256(f"{salt.read_text()}:{student}".encode()).digest()[:4], "big") % 2**30


def _extensions(root: Path, assignment: str) -> dict[str, float]:
    """Extensions of the due date already in the class's gradebook (seconds, by student)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return {s.student.id: s.extension.total_seconds() for s in gradebook.assignment_submissions(assignment) if s.extension}


def _job(root: Path, assignment: str, entry: Entry, work: Path, extensions: dict[str, float]) -> NotebookJob:
    folder = root / "submitted" / entry.student / assignment
    timestamp = folder / "timestamp.txt"
    return NotebookJob(entry.student, (folder / ASSIGNMENTS[assignment]).read_bytes(), _seed(work, entry.student),
                       timestamp.read_text() if timestamp.is_file() else None, extensions.get(entry.student))


def _finished(path: Path, key: str) -> NotebookOutcome | None:
    """The outcome of an earlier run of this very job, if it ran to the end (a stopped one runs again)."""
    try:
        outcome = NotebookOutcome.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return outcome if outcome.key == key and outcome.status.startswith("ok") else None


def _keep(path: Path, outcome: NotebookOutcome) -> bytes:
    """Write the outcome atomically (a run stopped midway leaves no half file); its bytes."""
    data = json.dumps(outcome.to_json()).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return data


def _run_jobs(workers: Workers, bundle: ClassBundle, jobs: list[NotebookJob], work: Path,
              written: dict[Path, bytes], clock: dict[str, float]) -> dict[str, NotebookOutcome]:
    """Each job's outcome (kept under ``work``), earlier ones reused; ``written`` gets the bytes kept."""
    outcomes, pending = {}, []
    for job in jobs:
        path = work / "outcomes" / f"{job.student}.json"
        earlier = _finished(path, job.key(bundle))
        if earlier is not None:
            outcomes[job.student] = earlier
            written[path] = path.read_bytes()
        else:
            pending.append(job)
    if not pending:
        return outcomes
    bar = _progress(len(pending))
    started = time.perf_counter()
    futures = {workers.submit_job(bundle, job): job for job in pending}  # the first waits for the workers to start
    waiting = time.perf_counter() - started
    given = dict.fromkeys((job.student for job in pending), 1)
    remaining = set(futures)
    while remaining:
        started = time.perf_counter()
        done, remaining = concurrent.futures.wait(remaining, return_when=concurrent.futures.FIRST_COMPLETED)
        waiting += time.perf_counter() - started
        for future in done:
            job = futures.pop(future)
            try:
                outcome = future.result()
            except BrokenProcessPool as error:
                if workers.own_retries and given[job.student] <= RETRIES:
                    given[job.student] += 1
                    retry = workers.submit_job(bundle, job)
                    futures[retry] = job
                    remaining.add(retry)
                    continue
                outcome = NotebookOutcome(job.student, "", status=f"the worker process grading it died {given[job.student]} "
                                                                  f"times ({error}); scored 0")
            except Exception as error:  # the grader's own failure on one notebook: that student only
                outcome = NotebookOutcome(job.student, "", status=f"the grader could not run this notebook "
                                                                  f"({type(error).__name__}: {str(error)[:200]}); scored 0")
            path = work / "outcomes" / f"{job.student}.json"
            written[path] = _keep(path, outcome)
            outcomes[job.student] = outcome
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    clock["waiting on workers"] = clock.get("waiting on workers", 0.0) + waiting
    return outcomes


def _pass_rates(root: Path, assignment: str, students: list[StudentResult]) -> dict[str, tuple[int, int]]:
    source = nbformat.read(source_notebook(root, assignment), as_version=4)
    return {grade_id(cell): (sum(1 for r in students if grade_id(cell) not in r.lost), len(students))
            for cell in source.cells if is_test_cell(cell)}


def grade_class(root: Path, assignment: str, submissions: Path, workers: int | None = None, limits: Limits | None = None,
                id_patterns: tuple[str, ...] = (), only_student: str | None = None, scheduler: str | None = None,
                compare_with: tuple[Path, ...] = (), run_on: Workers | None = None, due: str | None = None,
                extensions: Path | None = None, canvas_column: str | None = None,
                moodle_worksheet: Path | None = None) -> ClassResult:
    """Grade a class. The jobs run on ``run_on`` if given, else on the Dask cluster ``scheduler`` names
    (default: ``c.Cluster.scheduler`` of nbgrader_config.py), else on a pool of ``workers`` processes here
    (default: one per core). ``compare_with``: earlier classes' submissions, for the integrity report.
    ``due``, ``extensions``: late work (``late``); ``canvas_column``, ``moodle_worksheet``: the LMS's files (``lms``)."""
    started = time.perf_counter()
    root, submissions = Path(root).resolve(), Path(submissions)
    work = root / WORK / assignment
    work.mkdir(parents=True, exist_ok=True)
    clock: dict[str, float] = {}
    settings = configured_cluster(root)
    scheduler = settings.scheduler if scheduler is None else scheduler
    # Started first, so that the workers' zygotes import while nbgrader registers the assignment.
    step = time.perf_counter()
    pool = None if run_on is not None else workers_for(scheduler, workers or os.cpu_count() or 1, settings)
    run_on = run_on or pool
    clock["starting and stopping the workers"] = time.perf_counter() - step
    try:
        step = time.perf_counter()
        _register(root, assignment, work)
        clock["registering the assignment"] = time.perf_counter() - step
        assignment_ids = {a: answer_ids(nbformat.read(source_notebook(root, a), as_version=4))
                          for a in ASSIGNMENTS if source_notebook(root, a).is_file()}
        originals = snapshot(submissions)
        worksheet = read_moodle_worksheet(moodle_worksheet) if moodle_worksheet else None
        entries, notes = collect(submissions, assignment_ids, assignment, id_patterns, scratch=work,
                                 lms_times=moodle_submission_times(worksheet) if worksheet else None)
        notes += prepare_late_work(root, assignment, entries, due, extensions)  # due date, extensions; before place()
        everyone = entries
        report = integrity_report(root, assignment, {e.student: e.notebook for e in entries if e.notebook is not None},
                                  root / "integrity" / assignment, earlier=compare_with)  # the whole class, always
        if only_student:
            entries = [e for e in entries if e.student == only_student]
        if not entries:
            raise ValueError(f"no notebook {'of ' + repr(only_student) + ' ' if only_student else ''}found in {submissions}")
        for entry in entries:
            place(entry, root, assignment, ASSIGNMENTS[assignment])
        results = {e.student: StudentResult(e.student, e.origin, status=e.problem or "ok") for e in entries}

        limits = limits or configured_limits(root)  # by default what nbgrader_config.py sets
        if limits.threads is None:  # the cores shared among the kernels here (two a worker: a notebook's and its
            # harvest's, side by side); a cluster's workers run one per core
            threads = max(1, (os.cpu_count() or 1) // (2 * run_on.count)) if scheduler == "" else 1
            limits = replace(limits, threads=threads)
        notes += confined(limits)[1]  # what this machine cannot enforce (each worker confines its kernels itself)
        bundle = bundle_of(root, assignment, ASSIGNMENTS[assignment], limits)
        extensions = _extensions(root, assignment)
        jobs = [_job(root, assignment, entry, work, extensions) for entry in entries if entry.notebook is not None]
        # Where kernels are not isolated, their code could change the grader's files: kept and put back.
        kept = {folder: snapshot(folder) for folder in (root / "submitted", root / "gradebook.db")}
        written: dict[Path, bytes] = {}
        outcomes = _run_jobs(run_on, bundle, jobs, work, written, clock)
    finally:
        if pool is not None:
            step = time.perf_counter()
            pool.close()
            clock["starting and stopping the workers"] += time.perf_counter() - step
    changed = restore_originals(submissions, originals)
    changed += [path for folder, files in kept.items() for path in restore_originals(folder, files)]
    changed += restore_originals(work / "outcomes", written)
    notes += [f"{path}: changed while grading, by a student's code; restored" for path in changed]
    for student, outcome in outcomes.items():
        results[student].status = outcome.status
    for entry in entries:
        if entry.repairs:
            results[entry.student].status += "; repaired: " + ", ".join(entry.repairs)
    for student, outcome in outcomes.items():
        results[student].status = "; ".join([results[student].status, *outcome.notes])

    graded = [outcome for outcome in outcomes.values() if outcome.graded]
    for outcome in graded:
        write_files(root / "autograded" / outcome.student / assignment, outcome.autograded)
        write_files(root / "feedback" / outcome.student / assignment, outcome.feedback)
    zeros = sorted(set(results) - {outcome.student for outcome in graded})
    for student in zeros:  # nothing of an earlier run may stand for this one
        write_files(root / "autograded" / student / assignment, {})
        write_files(root / "feedback" / student / assignment, {})
    store_outcomes(root, assignment, graded, zeros)
    step = time.perf_counter()
    export_grades(root, root / "grades.csv")
    notes += [f"for the LMS: {path.name}" for path in write_lms_files(root, assignment, everyone, canvas_column, worksheet)]
    clock["exporting grades.csv"] = time.perf_counter() - step

    students = sorted(results.values(), key=lambda r: r.student)
    grades = stored_grades(root, assignment, [r.student for r in students])
    late = lateness(root, assignment, [r.student for r in students])
    for result in students:
        result.score, result.max_score, result.lost = grades[result.student]
        seconds, penalty = late.get(result.student, (0.0, 0.0))
        if seconds:
            result.score = max(0.0, result.score - penalty)
            result.status += f"; {describe(seconds, penalty)}"
    seconds = time.perf_counter() - started
    once = clock["registering the assignment"] + clock["exporting grades.csv"] + clock["starting and stopping the workers"]
    clock["driver, per notebook"] = (seconds - once - clock.get("waiting on workers", 0.0)) / len(students)
    return ClassResult(assignment, students, notes, seconds, _pass_rates(root, assignment, students), clock, report.summary_line())
