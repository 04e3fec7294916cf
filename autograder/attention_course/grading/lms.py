"""What Canvas and Moodle take back as they are: grades to import and feedback files, from nbgrader's
gradebook and the LMS ids that the download's file names carried (``collect.Entry``).

Canvas, "Grades > Import": a CSV whose header is "Student", "ID", "SIS User ID", "SIS Login ID", "Section",
then one column per assignment, "Title (assignment id)"; students are matched by "ID" (Canvas's user id)
first, an assignment column by its id, else by its title, else it becomes a new assignment; a row whose first
cell is "Points Possible" sets the assignment's points (canvas-lms app/models/gradebook_importer.rb:
``row_has_student_headers?``, ``update_column_count``, ``parse_assignments``, ``process_student``, ``process_pp``).
Canvas, "Re-Upload Submissions" on the assignment's page: a zip of files named as "Download Submissions"
named them; each becomes a comment attachment on that student's submission, found by the first two
all-digit parts of the name, the user id and the submitted file's id (canvas-lms app/models/assignment.rb:
``infer_comment_context_from_filename``), though under the name of the file the student handed in;
``canvas_api.py`` attaches the same files through Canvas's API, under their own names (it needs a token).

Moodle, "Upload grading worksheet" (assignfeedback_offline): a CSV with the columns of the worksheet it
downloads; it reads "Identifier" ("Participant 123456": the participant id), "Grade", "Last modified
(grade)" (a grade changed in Moodle after that time is not overwritten) and "Feedback comments"
(mod/assign/feedback/offline/importgradeslib.php ``init``, ``next``; locallib.php ``process_import_grades``).
Moodle, "Upload multiple feedback files in a zip" (assignfeedback_file): the folders of "Download all
submissions", "Full name_participant id_assignsubmission_file_/..."; the participant id is the second
"_"-separated part (mod/assign/feedback/file/importziplib.php ``is_valid_filename_for_import``).
"""

import csv
import zipfile
from datetime import datetime
from pathlib import Path

from attention_course.grading.collect import Entry, as_utc
from attention_course.grading.course import ASSIGNMENTS

CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade", "Grade can be changed",
                  "Last modified (submission)", "Online text", "Last modified (grade)", "Feedback comments"]
MOODLE_PARTICIPANT = "Participant "  # Moodle's get_string('hiddenuser', 'assign') in English, before the id
MOODLE_NO_DATE = "-"


def moodle_date(moment: datetime) -> str:
    """A local time as Moodle's userdate() writes it in the worksheet ("Tuesday, 1 December 2026, 1:41 PM"),
    which its import reads back with PHP's strtotime."""
    return f"{moment:%A}, {moment.day} {moment:%B %Y}, {int(moment.strftime('%I'))}:{moment:%M %p}"


def read_moodle_worksheet(path: Path) -> list[dict[str, str]]:
    """The rows of a grading worksheet downloaded from Moodle (its own header, any extra columns kept)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"Identifier", "Grade", "Last modified (grade)"} <= set(rows[0]):
        raise ValueError(f"{path} is not a Moodle grading worksheet (no Identifier, Grade, Last modified (grade) columns)")
    return rows


def moodle_submission_times(rows: list[dict[str, str]]) -> dict[str, datetime]:
    """{participant id: when it was handed in (UTC)} from a worksheet's "Last modified (submission)", a
    local time of the Moodle user who downloaded it: run the grade command in that time zone (TZ=...)."""
    from dateutil import parser

    times = {}
    for row in rows:
        when = (row.get("Last modified (submission)") or "").strip()
        if when and when != MOODLE_NO_DATE:
            times[row["Identifier"].removeprefix(MOODLE_PARTICIPANT)] = as_utc(parser.parse(when))
    return times


def stored_scores(root: Path, assignment: str, students: list[str]) -> dict[str, tuple[float, float, float]]:
    """{student: (score after the late penalty, max score, penalty)}, as nbgrader's export computes them."""
    from nbgrader.api import Gradebook, MissingEntry

    found = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                continue
            penalty = submission.late_submission_penalty or 0.0
            found[student] = (max(0.0, submission.score - penalty), submission.max_score, penalty)
    return found


def _comment(score: float, top: float, penalty: float) -> str:
    late = f" after a late penalty of {penalty:g}" if penalty else ""
    return f"{score:g} / {top:g}{late}; the details are in the attached feedback."


def write_canvas_grades(path: Path, column: str, entries: list[Entry], scores: dict) -> Path:
    """Canvas's gradebook import; ``column`` is the assignment's column as Canvas's export names it,
    "Title (assignment id)" (a bare title makes Canvas match by title, or create the assignment)."""
    rows = [e for e in entries if e.lms == "canvas" and e.student in scores]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CANVAS_COLUMNS, column])
        top = max((scores[e.student][1] for e in rows), default=0)
        writer.writerow(["Points Possible", "", "", "", "", f"{top:g}"])
        for entry in rows:
            writer.writerow([entry.full_name, entry.lms_user, "", "", "", f"{scores[entry.student][0]:g}"])
    return path


def write_moodle_worksheet(path: Path, entries: list[Entry], scores: dict, downloaded: list[dict[str, str]] | None,
                           graded_at: datetime) -> Path:
    """Moodle's grading worksheet: the downloaded one with Grade, Last modified (grade) and Feedback comments
    filled in (its grades scaled to its Maximum Grade), else one row per Moodle entry with the worksheet's columns."""
    by_participant = {e.lms_user: e for e in entries if e.lms == "moodle" and e.student in scores}
    rows = downloaded if downloaded is not None else [
        {column: "" for column in MOODLE_COLUMNS} | {
            "Identifier": f"{MOODLE_PARTICIPANT}{e.lms_user}", "Full name": e.full_name, "Grade can be changed": "Yes",
            "Maximum Grade": f"{scores[e.student][1]:.2f}",
            "Last modified (submission)": moodle_date(e.submitted) if e.submitted else MOODLE_NO_DATE}
        for e in by_participant.values()]
    for row in rows:
        entry = by_participant.get(row["Identifier"].removeprefix(MOODLE_PARTICIPANT))
        if entry is None:
            continue
        score, top, penalty = scores[entry.student]
        moodle_top = float(row.get("Maximum Grade") or top)
        row["Grade"] = f"{score / top * moodle_top:.2f}" if top else "0.00"
        row["Last modified (grade)"] = moodle_date(graded_at)
        row["Feedback comments"] = _comment(score, top, penalty)
    columns = list(rows[0]) if rows else MOODLE_COLUMNS
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_feedback_zip(path: Path, root: Path, assignment: str, entries: list[Entry], lms: str) -> Path | None:
    """Each student's feedback page, named as the LMS's download named the student's file (see above);
    None when nobody of that LMS has feedback."""
    page = f"{Path(ASSIGNMENTS[assignment]).stem}.html"
    written = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            feedback = root / "feedback" / entry.student / assignment / page
            if entry.lms == lms and feedback.is_file():
                archive.write(feedback, entry.lms_prefix + page)
                written += 1
    if not written:
        path.unlink()
        return None
    return path


def write_lms_files(root: Path, assignment: str, entries: list[Entry], canvas_column: str | None = None,
                    moodle_worksheet: list[dict[str, str]] | None = None) -> list[Path]:
    """After nbgrader's export: for the entries of each LMS present, its grade import and its feedback zip,
    beside grades.csv. ``canvas_column``: the assignment's column in Canvas's export (default: the assignment id
    as a title); ``moodle_worksheet``: the rows of the worksheet downloaded from Moodle, if any."""
    root = Path(root)
    scores = stored_scores(root, assignment, [e.student for e in entries])
    written = []
    if any(e.lms == "canvas" for e in entries):
        written.append(write_canvas_grades(root / f"canvas_grades_{assignment}.csv", canvas_column or assignment, entries, scores))
        written.append(write_feedback_zip(root / f"canvas_feedback_{assignment}.zip", root, assignment, entries, "canvas"))
    if any(e.lms == "moodle" for e in entries):
        written.append(write_moodle_worksheet(root / f"moodle_grades_{assignment}.csv", entries, scores, moodle_worksheet,
                                              datetime.now()))
        written.append(write_feedback_zip(root / f"moodle_feedback_{assignment}.zip", root, assignment, entries, "moodle"))
    return [path for path in written if path is not None]
