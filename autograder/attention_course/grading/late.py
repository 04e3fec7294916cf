"""Late work, through nbgrader's own mechanism, so that its gradebook, formgrader, feedback and export agree.

nbgrader's autograde reads when a notebook was handed in from ``submitted/<student>/<assignment>/timestamp.txt``
(``collect.place`` writes it), stores it on the submission, compares it with the assignment's due date plus the
student's extension (both in the gradebook: ``record_due_dates``), and its ``AssignLatePenalties`` asks the
configured plugin what the lateness costs. The course's plugin, ``CoursePenalty``, and the due dates are set
in ``nbgrader_config.py``::

    c.AssignLatePenalties.plugin_class = "attention_course.grading.late.CoursePenalty"
    c.CoursePenalty.per = "hour"          # or "day": each started hour (day) late costs `penalty`
    c.CoursePenalty.penalty = 0.05        # 5% of the notebook's points per hour ...
    c.CoursePenalty.unit = "fraction"     # ... ("points": that many points per hour)
    c.CoursePenalty.cap = 0.5             # never more than half of them (same unit; None: no cap)
    c.CoursePenalty.grace_minutes = 10    # up to 10 minutes late is on time; past that, counted from the due date
    c.LateWork.due = {"01_causal_attention": "2026-03-02 23:59 Europe/Berlin"}
    c.LateWork.extensions = "extensions.csv"   # columns: student, and hours or days

The grade command's ``--due`` and ``--extensions`` take precedence over the last two. A score never goes
below 0 (nbgrader caps a penalty at the score).

When each file was handed in: a folder's or a zip's own file times for files of any names; for Canvas and
Moodle downloads, whose file times are when the zip was made, only the LMS's record: Moodle's grading
worksheet ("Last modified (submission)"), and Canvas's ``_LATE_`` in the file name. Canvas tells *that* a
file was late, not by how much: a LATE file without a time is taken as handed in one second after the
student's due date, so it costs what the policy charges for the first hour (day) late; Canvas's own late
policy can charge by the hour where that matters.
"""

import csv
import math
import warnings
from datetime import datetime, timedelta
from pathlib import Path

from dateutil.tz import gettz
from nbgrader.plugins import LateSubmissionPlugin
from nbgrader.utils import parse_utc
from traitlets import Dict, Enum, Float, Unicode
from traitlets.config import Configurable

from attention_course.grading.collect import Entry
from attention_course.grading.nbgrader_steps import course_config

SECONDS = {"hour": 3600, "day": 86400}


class CoursePenalty(LateSubmissionPlugin):
    """A penalty per started hour or day late, as a share of the notebook's points or in points, with a cap
    and a grace period (nbgrader's ``AssignLatePenalties`` calls it for each late notebook)."""

    per = Enum(["hour", "day"], default_value="day", help="the period each penalty is charged for").tag(config=True)
    penalty = Float(0.0, min=0.0, help="what each started period late costs, in `unit`").tag(config=True)
    unit = Enum(["fraction", "points"], default_value="fraction",
                help="'fraction': of the notebook's maximum score; 'points': points").tag(config=True)
    cap = Float(None, allow_none=True, min=0.0, help="the most a late notebook loses, in `unit` (None: no cap)").tag(config=True)
    grace_minutes = Float(0.0, min=0.0, help="lateness up to this many minutes costs nothing").tag(config=True)

    def deduction(self, seconds_late: float, max_score: float) -> float:
        if seconds_late <= self.grace_minutes * 60:
            return 0.0
        charged = math.ceil(seconds_late / SECONDS[self.per]) * self.penalty
        if self.cap is not None:
            charged = min(charged, self.cap)
        return charged * (max_score if self.unit == "fraction" else 1.0)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        # The parent is nbgrader's AssignLatePenalties, which has the notebook being graded open.
        grader = self.parent
        notebook = grader.gradebook.find_notebook(grader.notebook_id, grader.assignment_id)
        taken = self.deduction(total_seconds_late, notebook.max_score)
        self.log.info("%s: %.0f s late, penalty %g of %g", student_id, total_seconds_late, taken, notebook.max_score)
        return taken


class LateWork(Configurable):
    """Due dates and extensions, as ``nbgrader_config.py`` sets them."""

    due = Dict(value_trait=Unicode(), help="assignment -> due date, e.g. '2026-03-02 23:59 Europe/Berlin' "
               "or '2026-03-02T23:59:00+01:00' (without a zone: UTC)").tag(config=True)
    extensions = Unicode("", help="a CSV of extensions (columns: student, and hours or days), "
                         "relative to the course directory").tag(config=True)


def configured(root: Path) -> LateWork:
    return LateWork(config=course_config(root))


def parse_due(text: str) -> datetime:
    """A due date as nbgrader keeps it (UTC without a zone), from nbgrader's own formats."""
    parts = text.split()
    if len(parts) == 3 and not parts[2].lstrip("+-").isdigit() and gettz(parts[2]) is None:
        raise ValueError(f"due date {text!r}: no time zone is called {parts[2]!r} (e.g. Europe/Berlin, UTC)")  # nbgrader would take UTC
    try:
        return parse_utc(text.strip())
    except (ValueError, OverflowError) as error:
        raise ValueError(f"due date {text!r} is not a date nbgrader reads (e.g. '2026-03-02 23:59 Europe/Berlin'): {error}")


def read_extensions(path: Path) -> dict[str, timedelta]:
    """{student: extension} from a CSV with a column ``student`` and one of ``hours`` or ``days``."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    extensions = {}
    for number, row in enumerate(rows, start=2):
        row = {key.strip().lower(): (value or "").strip() for key, value in row.items() if key}
        if not row.get("student") or not (row.get("hours") or row.get("days")):
            raise ValueError(f"{path}, line {number}: an extension needs a student and hours or days")
        try:
            extensions[row["student"]] = timedelta(hours=float(row.get("hours") or 0), days=float(row.get("days") or 0))
        except ValueError:
            raise ValueError(f"{path}, line {number}: hours and days are numbers, not {row.get('hours') or row.get('days')!r}")
    return extensions


def record_due_dates(root: Path, assignment: str, students: list[str], due: datetime | None,
                     extensions: dict[str, timedelta] | None) -> None:
    """Into nbgrader's gradebook, where autograde, formgrader and export read them: the assignment's due date
    (left as it is when ``due`` is None, e.g. set in formgrader) and each student's extension (when
    ``extensions`` is given, it is the whole list: a student not in it has none)."""
    from nbgrader.api import Gradebook

    with warnings.catch_warnings(), Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        warnings.simplefilter("ignore")  # SQLAlchemy's autoflush notices from inside nbgrader's API
        if due is not None:
            gradebook.update_or_create_assignment(assignment, duedate=due)
        if extensions is not None:
            for student in students:
                gradebook.update_or_create_student(student)
                gradebook.update_or_create_submission(assignment, student, extension=extensions.get(student))
        gradebook.db.commit()


def due_dates(root: Path, assignment: str, students: list[str]) -> dict[str, datetime | None]:
    """Each student's due date as nbgrader sees it: the assignment's, plus the student's extension."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        base = gradebook.find_assignment(assignment).duedate
        found = {}
        for student in students:
            try:
                found[student] = gradebook.find_submission(assignment, student).duedate
            except MissingEntry:
                found[student] = base
        return found


def prepare_late_work(root: Path, assignment: str, entries: list[Entry], due: str | None = None,
                      extensions: Path | None = None) -> list[str]:
    """Before ``place``: the due date and extensions into the gradebook (``due`` and ``extensions`` over
    ``nbgrader_config.py``'s), a time for each Canvas LATE file that has none; notes for the summary."""
    settings = configured(root)
    due = due or settings.due.get(assignment)
    extensions = extensions or (Path(root) / settings.extensions if settings.extensions else None)
    granted = read_extensions(extensions) if extensions else None
    students = [entry.student for entry in entries]
    record_due_dates(root, assignment, students, parse_due(due) if due else None, granted)
    notes = [f"extension for {student!r}, who handed in nothing for {assignment}"
             for student in sorted(set(granted or {}) - set(students))]
    dues = due_dates(root, assignment, students)
    if not any(dues.values()):
        return notes
    for entry in entries:
        if entry.submitted is None and entry.late_flag:
            entry.submitted = dues[entry.student] + timedelta(seconds=1)
    # Canvas named the others on time; any other file without a time cannot be judged
    untimed = [e.student for e in entries if e.submitted is None and e.notebook is not None and e.lms != "canvas"]
    if untimed:
        notes.append(f"{len(untimed)} submission(s) without a submission time, so never late: {', '.join(untimed[:8])}"
                     f"{' ...' if len(untimed) > 8 else ''} (from Moodle: give its grading worksheet, --moodle-worksheet)")
    return notes


def lateness(root: Path, assignment: str, students: list[str]) -> dict[str, tuple[float, float]]:
    """{student: (seconds late, points taken)} as nbgrader stored them, for the summary."""
    from nbgrader.api import Gradebook, MissingEntry

    found = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                continue
            found[student] = (submission.total_seconds_late, submission.late_submission_penalty or 0.0)
    return found


def describe(seconds_late: float, penalty: float) -> str:
    """How late, for a status line: "3 h 10 min late: -3"; "late" alone under a minute (Canvas's LATE)."""
    minutes = math.ceil(seconds_late / 60) if seconds_late >= 60 else 0
    when = f"{minutes // 60} h {minutes % 60:02d} min late" if minutes else "late"
    return f"{when}: -{penalty:g}" if penalty else f"{when}, no penalty"
