"""One student's notebook through nbgrader, in a course directory of its own: plain data in and out.

The grade command's unit of work, run by a worker process (of a local pool or of a Dask cluster). A
job carries all a worker needs as bytes: the ``ClassBundle`` every notebook of the assignment shares
(the course's ``nbgrader_config.py``, the assignment's source folder, the gradebook with the
assignment registered and no student in it, the limits) and the ``NotebookJob`` (the submitted
notebook, its timestamp and extension, the seed of its harvest). The worker lays out a scratch course
directory, runs nbgrader's own converters there in its own process (``Autograde``: nbgrader's
sanitizing, then the preprocessors ``nbgrader_config.py`` names: the confined execution, the harvest,
the verdicts, nbgrader's scoring and late penalty; then ``GenerateFeedback``), and returns what nbgrader
stored and wrote (``NotebookOutcome``). The driver, the only writer of the class's gradebook, copies
those rows into it in batches (``store_outcomes``) and the files into ``autograded/`` and ``feedback/``.
"""

import base64
import contextlib
import functools
import hashlib
import logging
import os
import sqlite3
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from nbgrader.converters import Autograde, GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import parse_utc
from sqlalchemy.exc import SAWarning

import attention_course
from attention_course.grading.cells import neutralise_hidden_test_markers
from attention_course.grading.limits import Limits
from attention_course.grading.nbgrader_plugin import RUN_STATUS
from attention_course.grading.nbgrader_steps import course_config

CONFIG = "nbgrader_config.py"
# The rows of a gradebook that belong to students; the rest is the course's (assignments, their cells).
STUDENT_TABLES = ("comment", "grade", "submitted_notebook", "submitted_assignment", "student")


@functools.cache
def grader_digest() -> str:
    """The grading code's own version: a digest of the package's source."""
    package = Path(attention_course.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ClassBundle:
    """What every notebook of one assignment's grading shares."""

    assignment: str
    notebook: str  # its file name, e.g. causal_attention.ipynb
    config: str  # the course's nbgrader_config.py
    source_files: tuple[tuple[str, bytes], ...]  # source/<assignment>/: (path inside it, bytes)
    gradebook: bytes  # gradebook.db with the assignment registered and no student in it
    limits: Limits
    grader: str  # the grading code's digest where the bundle was made: a worker's must be the same
    duedate: str | None  # the assignment's, in that gradebook: a new due date grades the class again

    @property
    def digest(self) -> str:
        parts = [self.assignment, self.notebook, self.config, repr(self.limits), self.grader, str(self.duedate)]
        parts += [f"{path}\x00{hashlib.sha256(data).hexdigest()}" for path, data in self.source_files]
        return hashlib.sha256("\x01".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class NotebookJob:
    student: str
    submitted: bytes  # the notebook as collected (and mended) into submitted/
    seed: int  # of the harvest's inputs: chosen by the driver, so that a retried job draws the same ones
    timestamp: str | None = None  # nbgrader's timestamp.txt, where the submission has one
    extension_seconds: float | None = None  # the student's extension of the due date, from the class's gradebook

    def key(self, bundle: ClassBundle) -> str:
        """Equal for the same notebook graded the same way: a finished job with this key is not run again."""
        parts = [bundle.digest, self.student, hashlib.sha256(self.submitted).hexdigest(), str(self.seed), str(self.timestamp),
                 str(self.extension_seconds)]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@dataclass
class NotebookOutcome:
    student: str
    key: str
    status: str  # "ok", or what went wrong running it
    notes: list[str] = field(default_factory=list)  # what else the student's status line says
    graded: bool = False  # nbgrader scored it (else every item is 0)
    scores: dict[str, float | None] = field(default_factory=dict)  # grade cell -> nbgrader's auto score
    comments: dict[str, str | None] = field(default_factory=dict)  # solution cell -> nbgrader's auto comment
    late_penalty: float | None = None
    timestamp: str | None = None  # when it was handed in, as nbgrader read it (ISO 8601, UTC)
    autograded: dict[str, str] = field(default_factory=dict)  # autograded/<student>/<assignment>/: path -> base64
    feedback: dict[str, str] = field(default_factory=dict)  # feedback/<student>/<assignment>/: path -> base64

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "NotebookOutcome":
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def bundle_of(root: Path, assignment: str, notebook: str, limits: Limits) -> ClassBundle:
    """The class's bundle, from the course directory (after nbgrader registered the assignment)."""
    source = root / "source" / assignment
    files = tuple(sorted((str(path.relative_to(source)), path.read_bytes()) for path in source.rglob("*") if path.is_file()))
    with sqlite3.connect(root / "gradebook.db") as gradebook:
        duedate = gradebook.execute("SELECT duedate FROM assignment WHERE name = ?", (assignment,)).fetchone()
    return ClassBundle(assignment, notebook, (root / CONFIG).read_text(), files, _without_students(root / "gradebook.db"), limits,
                       grader_digest(), duedate[0] if duedate else None)


def _without_students(gradebook: Path) -> bytes:
    """The gradebook's bytes less every student's rows (a scratch course starts from these, whatever the class's size)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "gradebook.db"
        with sqlite3.connect(gradebook) as original, sqlite3.connect(copy) as target:
            original.backup(target)
            for table in STUDENT_TABLES:
                target.execute(f"DELETE FROM {table}")  # noqa: S608 (our own table names)
        with sqlite3.connect(copy) as target:
            target.execute("VACUUM")
        return copy.read_bytes()


@contextlib.contextmanager
def quiet_gradebook(db_url: str):
    """nbgrader's gradebook, without the notices SQLAlchemy prints from inside nbgrader's API (its autoflush)."""
    with warnings.catch_warnings(), Gradebook(db_url) as gradebook:
        warnings.simplefilter("ignore", SAWarning)
        yield gradebook


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _nbgrader_error(messages: list[str]) -> str:
    """The exception nbgrader logged when it gave up on the notebook (its last line), or a pointer to the log."""
    for message in reversed(messages):
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith("Traceback"):
            return lines[-1][:300]
    return next((m.splitlines()[0][:300] for m in reversed(messages) if m.strip()), "see nbgrader's log")


class _Autograde(Autograde):
    """nbgrader's Autograde, keeping the status the course's execution left in the notebook's resources."""

    run_status = "ok"

    def write_single_notebook(self, output, resources):
        self.run_status = resources.get(RUN_STATUS, self.run_status)
        super().write_single_notebook(output, resources)


def _files_of(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): base64.b64encode(p.read_bytes()).decode() for p in sorted(folder.rglob("*")) if p.is_file()}


def grade_job(bundle: ClassBundle, job: NotebookJob) -> NotebookOutcome:
    """Run in a worker: the notebook through nbgrader's autograde and feedback, in a scratch course."""
    if bundle.grader != grader_digest():
        raise RuntimeError("this worker's attention_course is not the grader's: install the same version on every worker")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # notices from inside nbgrader's use of SQLAlchemy
        return _grade(bundle, job)


def _lay_out(root: Path, bundle: ClassBundle, job: NotebookJob):
    """The scratch course directory of one job, as nbgrader expects it; its configuration."""
    (root / CONFIG).write_text(bundle.config)
    for path, data in bundle.source_files:
        (root / "source" / bundle.assignment / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "source" / bundle.assignment / path).write_bytes(data)
    (root / "gradebook.db").write_bytes(bundle.gradebook)
    submitted = root / "submitted" / job.student / bundle.assignment
    submitted.mkdir(parents=True)
    (submitted / bundle.notebook).write_bytes(job.submitted)
    if job.timestamp:
        (submitted / "timestamp.txt").write_text(job.timestamp)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        gradebook.update_or_create_student(job.student)
        extension = None if job.extension_seconds is None else timedelta(seconds=job.extension_seconds)
        gradebook.update_or_create_submission(bundle.assignment, job.student, extension=extension)
    config = course_config(root)
    config.CourseDirectory.assignment_id = bundle.assignment
    config.CourseDirectory.student_id = job.student
    for name in ("cell_seconds", "notebook_seconds", "output_bytes", "memory_bytes", "threads"):
        config.ConfinedExecute[name] = getattr(bundle.limits, name)
    config.ConfinedExecute.seed = job.seed
    return config


def _stored(root: Path, bundle: ClassBundle, job: NotebookJob, outcome: NotebookOutcome) -> None:
    """What the scratch course's nbgrader stored for the notebook, into ``outcome``."""
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(bundle.assignment, job.student)
        outcome.timestamp = submission.timestamp.isoformat() if submission.timestamp else None
        for notebook in submission.notebooks:
            outcome.scores |= {grade.name: grade.auto_score for grade in notebook.grades}
            outcome.comments |= {comment.name: comment.auto_comment for comment in notebook.comments}
            outcome.late_penalty = notebook.late_submission_penalty
    outcome.graded = True


def _grade(bundle: ClassBundle, job: NotebookJob) -> NotebookOutcome:
    outcome = NotebookOutcome(job.student, job.key(bundle), status="ok")
    with tempfile.TemporaryDirectory(prefix="attention-course-job-") as scratch:
        root = Path(scratch)
        config = _lay_out(root, bundle, job)
        log = logging.getLogger(f"attention_course.job.{job.student}")
        log.propagate, handler = False, _ListHandler()
        log.handlers = [handler]
        coursedir = CourseDirectory(config=config, log=log)
        autograde = _Autograde(coursedir=coursedir, config=config, force=True, log=log)
        try:
            autograde.start()
        except Exception:  # nbgrader logged why; the notebook is left out below
            pass
        autograded = root / "autograded" / job.student / bundle.assignment
        if not (autograded / bundle.notebook).is_file():
            outcome.status = f"nbgrader could not grade the notebook ({_nbgrader_error(handler.messages)}); scored 0"
            return outcome
        outcome.status = autograde.run_status
        _stored(root, bundle, job, outcome)
        if neutralise_hidden_test_markers(nbformat.read(autograded / bundle.notebook, as_version=4)):
            outcome.notes.append("repaired: the words 'BEGIN/END HIDDEN TESTS' in a cell of yours, "
                                 "written with a no-break space in the feedback")
        outcome.autograded = _files_of(autograded)

        handler.messages.clear()
        try:
            GenerateFeedback(coursedir=coursedir, config=config, force=True, log=log).start()
        except Exception:  # as above: nbgrader logged why
            pass
        feedback = root / "feedback" / job.student / bundle.assignment
        if (feedback / f"{Path(bundle.notebook).stem}.html").is_file():
            outcome.feedback = _files_of(feedback)
        else:
            outcome.notes.append(f"no feedback: nbgrader could not write it ({_nbgrader_error(handler.messages)})")
    return outcome


def write_files(folder: Path, files: dict[str, str]) -> None:
    """A student's folder of autograded/ or feedback/ as the worker's nbgrader left it (an earlier one replaced)."""
    if folder.exists():
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        os.chmod(path, 0o444)  # as nbgrader leaves them


def store_outcomes(root: Path, assignment: str, outcomes: list[NotebookOutcome], zeros: list[str], batch: int = 200) -> None:
    """Copy what each worker's nbgrader stored into the class's gradebook, one writer, a commit per batch.
    ``zeros``: students with nothing gradable (every item 0, as nbgrader does for a missing notebook)."""
    with quiet_gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for count, outcome in enumerate([*outcomes, *(NotebookOutcome(student, "", "") for student in zeros)], start=1):
            gradebook.update_or_create_student(outcome.student)
            handed_in = {"timestamp": parse_utc(outcome.timestamp)} if outcome.timestamp else {}
            submission = gradebook.update_or_create_submission(assignment, outcome.student, **handed_in)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if not outcome.graded:
                        grade.auto_score, grade.manual_score, grade.needs_manual_grade = 0, None, False
                        continue
                    grade.auto_score = outcome.scores.get(grade.name, 0)
                    # SaveAutoGrades' rule: a manual grade, or no automatic one, asks for review.
                    grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
                for comment in notebook.comments:
                    comment.auto_comment = outcome.comments.get(comment.name) if outcome.graded else None
                notebook.late_submission_penalty = outcome.late_penalty if outcome.graded else None
            if count % batch == 0:
                gradebook.db.commit()
        gradebook.db.commit()
