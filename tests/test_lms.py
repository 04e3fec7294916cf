"""Grades and feedback back into Canvas and Moodle, and late work, from downloads laid out as each LMS
makes them: their file and folder names, the worksheet Moodle downloads, and their zips' file times."""

import csv
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from nbgrader.coursedir import CourseDirectory

from attention_course.grading.collect import as_utc, collect, place
from attention_course.grading.late import CoursePenalty, parse_due, prepare_late_work, read_extensions
from attention_course.grading.lms import (CANVAS_COLUMNS, MOODLE_COLUMNS, moodle_date, moodle_submission_times,
                                          read_moodle_worksheet, write_lms_files)

from class_fixtures import ASSIGNMENT, NOTEBOOK
from course_copy import copy_course

DUE = datetime(2026, 3, 2, 22, 59)  # UTC: 23:59 in Berlin
ZIPPED_AT = (2026, 3, 5, 9, 30, 0)  # when the LMS made the zip: the time of every file in it


def _notebook(*ids) -> bytes:
    nb = nbformat.v4.new_notebook()
    for cell_id in ids:
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["nbgrader"] = {"grade_id": cell_id}
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIPPED_AT), data)
    return path


def _local(utc: datetime) -> datetime:
    """A UTC time as the Moodle user's clock shows it (this machine's zone, see ``moodle_submission_times``)."""
    return utc.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _worksheet(path: Path, rows: list[tuple[str, str, str, datetime | None]]) -> Path:
    """A grading worksheet as Moodle downloads it: (participant id, full name, email, submitted at, UTC)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MOODLE_COLUMNS)
        for participant, name, email, submitted in rows:
            writer.writerow([f"Participant {participant}", name, email, "Submitted for grading", "", "100.00", "Yes",
                             moodle_date(_local(submitted)) if submitted else "-", "", "-", ""])
    return path


IDS = {"A": {"a1", "a2"}, "B": {"b1"}}


def test_canvas_ids_and_its_late_flag_are_kept_and_its_zip_times_ignored(tmp_path):
    download = _zip(tmp_path / "submissions.zip", {
        "doejane_12345_67890_causal_attention.ipynb": _notebook("a1"),
        "smithbob_LATE_23456_78901_Copy of causal_attention-1.ipynb": _notebook("a1", "a2"),
    })
    entries = {e.student: e for e in collect(download, IDS, "A", scratch=tmp_path)[0]}
    assert set(entries) == {"doejane", "smithbob"}
    jane, bob = entries["doejane"], entries["smithbob"]
    assert (jane.lms, jane.lms_user, jane.lms_prefix, jane.late_flag) == ("canvas", "12345", "doejane_12345_67890_", False)
    assert (bob.lms, bob.lms_user, bob.lms_prefix, bob.late_flag) == ("canvas", "23456", "smithbob_LATE_23456_78901_", True)
    assert (jane.full_name, bob.full_name) == ("doejane", "smithbob")
    assert jane.submitted is None and bob.submitted is None  # the zip's times are when Canvas made it


def test_moodle_ids_and_the_worksheets_submission_times(tmp_path):
    download = _zip(tmp_path / "COURSE-Assignment 1-12345.zip", {
        "Jane Doe_123456_assignsubmission_file_/causal_attention.ipynb": _notebook("a1"),
        "Bob Smith_234567_assignsubmission_file/Copy of causal_attention.ipynb": _notebook("a1"),  # Moodle 4.1 and later
        "Ann Lee_345678_assignsubmission_file_causal_attention.ipynb": _notebook("a1"),  # downloaded without folders
    })
    handed_in = DUE - timedelta(minutes=7)
    rows = read_moodle_worksheet(_worksheet(tmp_path / "worksheet.csv", [
        ("123456", "Jane Doe", "jane@example.org", handed_in), ("234567", "Bob Smith", "bob@example.org", None),
        ("345678", "Ann Lee", "ann@example.org", None)]))
    assert moodle_submission_times(rows) == {"123456": handed_in}
    entries = {e.student: e for e in collect(download, IDS, "A", scratch=tmp_path, lms_times=moodle_submission_times(rows))[0]}
    assert {s: (e.lms, e.lms_user, e.full_name) for s, e in entries.items()} == {
        "jane_doe": ("moodle", "123456", "Jane Doe"), "bob_smith": ("moodle", "234567", "Bob Smith"),
        "ann_lee": ("moodle", "345678", "Ann Lee")}
    assert entries["jane_doe"].lms_prefix == "Jane Doe_123456_assignsubmission_file_/"
    assert entries["ann_lee"].lms_prefix == "Ann Lee_345678_assignsubmission_file_"
    assert entries["jane_doe"].submitted == handed_in and entries["bob_smith"].submitted is None


def test_a_folders_file_times_are_the_submission_times_and_nbgrader_reads_them_back(tmp_path):
    import os

    folder = tmp_path / "download"
    (folder / "jdoe").mkdir(parents=True)
    (folder / "jdoe" / "causal_attention.ipynb").write_bytes(_notebook("a1"))
    handed_in = datetime(2026, 3, 2, 21, 14, 5, 250000, tzinfo=timezone.utc)
    os.utime(folder / "jdoe" / "causal_attention.ipynb", (handed_in.timestamp(), handed_in.timestamp()))
    zipped = _zip(tmp_path / "mine.zip", {"asmith/causal_attention.ipynb": _notebook("a1")})

    entry = collect(folder, IDS, "A", scratch=tmp_path)[0][0]
    assert entry.submitted == handed_in.replace(tzinfo=None) and entry.lms == ""
    assert collect(zipped, IDS, "A", scratch=tmp_path)[0][0].submitted == as_utc(datetime(*ZIPPED_AT))  # local time where zipped
    place(entry, tmp_path / "course", "A", "a.ipynb")
    submitted = tmp_path / "course" / "submitted" / "jdoe" / "A"
    assert CourseDirectory().get_existing_timestamp(str(submitted)) == entry.submitted


@pytest.mark.parametrize("settings, seconds_late, max_score, expected", [
    (dict(per="hour", penalty=1.0, unit="points"), 3 * 3600 - 600, 20, 3.0),  # every started hour counts
    (dict(per="hour", penalty=1.0, unit="points"), 3 * 3600 + 1, 20, 4.0),
    (dict(per="hour", penalty=0.1), 2 * 3600, 20, 4.0),  # a share of the notebook's points
    (dict(per="day", penalty=0.1), 3600, 20, 2.0),
    (dict(per="day", penalty=0.1), 86400 + 1, 20, 4.0),
    (dict(per="hour", penalty=1.0, unit="points", cap=5.0), 30 * 3600, 20, 5.0),  # the cap holds
    (dict(per="hour", penalty=0.1, cap=0.25), 10 * 3600, 20, 5.0),
    (dict(per="hour", penalty=1.0, unit="points", grace_minutes=10), 599, 20, 0.0),  # grace
    (dict(per="hour", penalty=1.0, unit="points", grace_minutes=10), 601, 20, 1.0),  # then counted from the due date
    (dict(), 10 * 86400, 20, 0.0),  # by default nothing
])
def test_the_penalty_policy(settings, seconds_late, max_score, expected):
    assert CoursePenalty(**settings).deduction(seconds_late, max_score) == pytest.approx(expected)


def test_how_late_reads():
    from attention_course.grading.late import describe

    assert describe(3 * 3600 - 600, 3) == "2 h 50 min late: -3"
    assert describe(1, 2.5) == "late: -2.5"  # Canvas's LATE: one second past the due date
    assert describe(300, 0) == "0 h 05 min late, no penalty"


def test_due_dates_and_extensions_are_read_or_refused(tmp_path):
    assert parse_due("2026-03-02 23:59 Europe/Berlin") == DUE == parse_due("2026-03-02T23:59:00+01:00")
    with pytest.raises(ValueError, match="no time zone is called 'Europe/Nowhere'"):
        parse_due("2026-03-02 23:59 Europe/Nowhere")
    with pytest.raises(ValueError, match="not a date"):
        parse_due("next monday-ish")
    (tmp_path / "ext.csv").write_text("\ufeffstudent,hours,days\njane_doe,4,\nbob,,1.5\n")
    assert read_extensions(tmp_path / "ext.csv") == {"jane_doe": timedelta(hours=4), "bob": timedelta(days=1.5)}
    (tmp_path / "bad.csv").write_text("student,hours\njane_doe,four\n")
    with pytest.raises(ValueError, match="line 2: hours and days are numbers"):
        read_extensions(tmp_path / "bad.csv")


def test_canvas_late_files_are_charged_from_the_students_due_date_and_untimed_files_are_told(tmp_path):
    from nbgrader.api import Gradebook

    course = copy_course(tmp_path / "course")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        gradebook.add_assignment("A")
    download = _zip(tmp_path / "download.zip", {
        "doejane_12345_67890_a.ipynb": _notebook("a1"), "smithbob_LATE_23456_78901_a.ipynb": _notebook("a1"),
        "Ann Lee_111111_assignsubmission_file_/a.ipynb": _notebook("a1")})
    entries = collect(download, IDS, "A", scratch=tmp_path)[0]
    assert prepare_late_work(course, "A", entries) == []  # no due date: nothing is late, nothing to say
    assert all(e.submitted is None for e in entries)
    (tmp_path / "ext.csv").write_text("student,hours\nsmithbob,2\nnobody,1\n")
    notes = prepare_late_work(course, "A", entries, due="2026-03-02 23:59 Europe/Berlin", extensions=tmp_path / "ext.csv")
    by = {e.student: e for e in entries}
    assert by["smithbob"].submitted == DUE + timedelta(hours=2, seconds=1)  # just past his own due date
    assert by["doejane"].submitted is None and by["ann_lee"].submitted is None
    assert notes == ["extension for 'nobody', who handed in nothing for A",
                     "1 submission(s) without a submission time, so never late: ann_lee "
                     "(from Moodle: give its grading worksheet, --moodle-worksheet)"]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert gradebook.find_assignment("A").duedate == DUE
        assert gradebook.find_submission("A", "smithbob").extension == timedelta(hours=2)
        assert gradebook.find_submission("A", "doejane").extension is None


POLICY = """
c.AssignLatePenalties.plugin_class = "attention_course.grading.late.CoursePenalty"
c.CoursePenalty.per = "hour"
c.CoursePenalty.penalty = 1.0
c.CoursePenalty.unit = "points"
c.CoursePenalty.cap = 5.0
c.LateWork.due = {"01_causal_attention": "2026-03-02 23:59 Europe/Berlin"}
"""


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """A Canvas and a Moodle download of solved notebooks, graded by plain ``nbgrader autograde`` with the
    course's configuration and a late policy of 1 point per started hour, capped at 5."""
    from class_fixtures import _solved
    from attention_course.grading.course import ASSIGNMENTS, source_notebook
    from attention_course.grading.collect import answer_ids
    from attention_course.grading.nbgrader_steps import generate_release, nbgrader

    tmp = tmp_path_factory.mktemp("lms")
    course = copy_course(tmp / "course")
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(POLICY)
    generate_release(course, ASSIGNMENT)
    solved = nbformat.writes(_solved()[2]).encode()
    canvas = _zip(tmp / "submissions.zip", {
        "doejane_12345_67890_causal_attention.ipynb": solved,
        "smithbob_LATE_23456_78901_causal_attention.ipynb": solved,
    })
    moodle = _zip(tmp / "moodle.zip", {
        f"{name}_{participant}_assignsubmission_file_/causal_attention.ipynb": solved
        for name, participant in [("Ann Lee", "111111"), ("Carl Day", "222222"), ("Dee Fox", "333333"), ("Eve Gray", "444444")]})
    worksheet = _worksheet(tmp / "worksheet.csv", [
        ("111111", "Ann Lee", "ann@example.org", DUE - timedelta(minutes=5)),  # on time
        ("222222", "Carl Day", "carl@example.org", DUE + timedelta(hours=2, minutes=50)),  # 3 started hours late
        ("333333", "Dee Fox", "dee@example.org", DUE + timedelta(hours=2, minutes=50)),  # as late, with 4 hours more
        ("444444", "Eve Gray", "eve@example.org", DUE + timedelta(hours=30)),  # past the cap
        ("555555", "Fay Hill", "fay@example.org", None),  # handed in nothing
    ])
    (tmp / "extensions.csv").write_text("student,hours\ndee_fox,4\n")
    ids = {a: answer_ids(nbformat.read(source_notebook(course, a), as_version=4)) for a in ASSIGNMENTS
           if source_notebook(course, a).is_file()}
    rows = read_moodle_worksheet(worksheet)
    entries = collect(canvas, ids, ASSIGNMENT, scratch=tmp)[0] + \
        collect(moodle, ids, ASSIGNMENT, scratch=tmp, lms_times=moodle_submission_times(rows))[0]
    notes = prepare_late_work(course, ASSIGNMENT, entries, extensions=tmp / "extensions.csv")
    for entry in entries:
        place(entry, course, ASSIGNMENT, NOTEBOOK)
    nbgrader(course, "autograde", ASSIGNMENT, "--force")
    nbgrader(course, "generate_feedback", ASSIGNMENT, "--force")
    nbgrader(course, "export", "--to", str(course / "grades.csv"))
    written = write_lms_files(course, ASSIGNMENT, entries, canvas_column="Causal attention (4567)", moodle_worksheet=rows)
    return course, canvas, moodle, entries, notes, written


slow = pytest.mark.nbgrader
PENALTIES = {"doejane": 0.0, "smithbob": 1.0, "ann_lee": 0.0, "carl_day": 3.0, "dee_fox": 0.0, "eve_gray": 5.0}


@slow
def test_late_penalties_are_nbgraders_own(round_trip):
    """Stored by nbgrader's AssignLatePenalties through the course's plugin: what the policy says, an
    extension cancels it, the cap holds, Canvas's LATE costs the first hour; its export and feedback agree."""
    from nbgrader.api import Gradebook

    course, *_ = round_trip
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        stored = {s: (gradebook.find_submission(ASSIGNMENT, s).late_submission_penalty or 0.0,
                      gradebook.find_submission(ASSIGNMENT, s).score) for s in PENALTIES}
        assert gradebook.find_submission(ASSIGNMENT, "dee_fox").extension == timedelta(hours=4)
    assert {s: p for s, (p, _) in stored.items()} == PENALTIES
    assert {score for _, score in stored.values()} == {20.0}  # solved: the penalty comes off the full score
    with open(course / "grades.csv", newline="") as handle:
        exported = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert {s: float(exported[s]["late_submission_penalty"] or 0) for s in PENALTIES} == PENALTIES
    assert {s: float(exported[s]["score"]) for s in PENALTIES} == {s: 20.0 - p for s, p in PENALTIES.items()}
    page = (course / "feedback" / "carl_day" / ASSIGNMENT / "causal_attention.html").read_text()
    assert "Late submission penalty (Score: -3.0)" in page
    assert "Late submission penalty" not in (course / "feedback" / "dee_fox" / ASSIGNMENT / "causal_attention.html").read_text()


@slow
def test_canvas_gets_its_gradebook_import_and_its_reupload_zip(round_trip):
    course, canvas, _, _, _, written = round_trip
    with open(course / f"canvas_grades_{ASSIGNMENT}.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*CANVAS_COLUMNS, "Causal attention (4567)"]
    assert rows[1][0] == "Points Possible" and rows[1][-1] == "20"
    assert {row[1]: row[-1] for row in rows[2:]} == {"12345": "20", "23456": "19"}  # Canvas's user ids
    with zipfile.ZipFile(course / f"canvas_feedback_{ASSIGNMENT}.zip") as archive, zipfile.ZipFile(canvas) as download:
        # Canvas finds the submission by the user id and file id that begin the name it gave the file
        assert sorted(archive.namelist()) == sorted(n.replace(".ipynb", ".html") for n in download.namelist())
        assert b"Late submission penalty" in archive.read("smithbob_LATE_23456_78901_causal_attention.html")
    assert course / f"canvas_feedback_{ASSIGNMENT}.zip" in written


@slow
def test_moodle_gets_its_worksheet_back_and_a_feedback_zip_in_its_folders(round_trip):
    course, _, moodle, _, _, _ = round_trip
    with open(course / f"moodle_grades_{ASSIGNMENT}.csv", newline="", encoding="utf-8") as handle:
        rows = {row["Identifier"]: row for row in csv.DictReader(handle)}
        handle.seek(0)
        assert next(csv.reader(handle)) == MOODLE_COLUMNS
    # scaled to the Maximum Grade set in Moodle (100 here, 20 points in nbgrader)
    assert {i: r["Grade"] for i, r in rows.items()} == {
        "Participant 111111": "100.00", "Participant 222222": "85.00", "Participant 333333": "100.00",
        "Participant 444444": "75.00", "Participant 555555": ""}
    assert "17 / 20 after a late penalty of 3" in rows["Participant 222222"]["Feedback comments"]
    assert rows["Participant 555555"]["Last modified (grade)"] == "-"  # untouched: nothing to grade
    assert datetime.strptime(rows["Participant 111111"]["Last modified (grade)"], "%A, %d %B %Y, %I:%M %p") > datetime(2026, 1, 1)
    with zipfile.ZipFile(course / f"moodle_feedback_{ASSIGNMENT}.zip") as archive, zipfile.ZipFile(moodle) as download:
        folders = {name.split("/")[0] for name in download.namelist()}
        assert {name.split("/")[0] for name in archive.namelist()} == folders
        assert all(name.endswith("/causal_attention.html") for name in archive.namelist())


@slow
def test_the_notes_say_what_the_late_rules_could_not_use(round_trip):
    _, _, _, entries, notes, _ = round_trip
    assert notes == []  # every submission had a time, or Canvas's word that it was on time or late
    assert {e.student for e in entries if e.submitted is None} == {"doejane"}  # on time, says Canvas
    assert next(e for e in entries if e.student == "smithbob").submitted == DUE + timedelta(seconds=1)


def test_canvas_feedback_through_the_api_keeps_the_pages_names(tmp_path):
    """Against a stand-in for Canvas on this machine's loopback: the three calls of Canvas's file upload
    for a submission comment, per student, the token only where Canvas wants it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    from attention_course.grading.canvas_api import COMMENT, upload_feedback
    from attention_course.grading.lms import write_feedback_zip

    download = _zip(tmp_path / "submissions.zip", {"doejane_12345_67890_causal_attention.ipynb": _notebook("a1"),
                                                   "smithbob_LATE_23456_78901_Copy of causal_attention.ipynb": _notebook("a1")})
    entries = collect(download, {ASSIGNMENT: {"a1"}}, ASSIGNMENT, scratch=tmp_path)[0]
    for entry in entries:
        page = tmp_path / "feedback" / entry.student / ASSIGNMENT / "causal_attention.html"
        page.parent.mkdir(parents=True)
        page.write_text(f"<html>feedback of {entry.student}</html>")
    pack = write_feedback_zip(tmp_path / "pack.zip", tmp_path, ASSIGNMENT, entries, "canvas")
    calls = []

    class Canvas(BaseHTTPRequestHandler):
        def _answer(self, status, body=None, location=None):
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            payload = json.dumps(body or {}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _record(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append((self.command, self.path, self.headers.get("Authorization"), body))
            return body

        def do_POST(self):
            body = self._record()
            if self.path.endswith("/comments/files"):
                user = self.path.split("/")[-3]
                self._answer(200, {"upload_url": f"http://127.0.0.1:{port}/upload/{user}", "upload_params": {"key": user}})
            else:
                assert b'filename="causal_attention.html"' in body and b"feedback of" in body
                self._answer(302, location=f"http://127.0.0.1:{port}/done/{self.path.split('/')[-1]}")

        def do_GET(self):
            self._record()
            self._answer(200, {"id": 900 + int(self.path.split("/")[-1][-1])})

        def do_PUT(self):
            self._record()
            self._answer(200)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Canvas)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = upload_feedback(pack, f"http://127.0.0.1:{port}/", "7", "4567", "secret")
    finally:
        server.shutdown()
    assert sorted(done) == ["12345", "23456"]
    base = "/api/v1/courses/7/assignments/4567/submissions"
    for user in done:
        mine = [c for c in calls if user in c[1]]
        assert [(method, path.split("?")[0]) for method, path, _, _ in mine] == [
            ("POST", f"{base}/{user}/comments/files"), ("POST", f"/upload/{user}"), ("GET", f"/done/{user}"),
            ("PUT", f"{base}/{user}")]
        assert [auth for _, _, auth, _ in mine] == ["Bearer secret", None, "Bearer secret", "Bearer secret"]
        ticket, put = parse_qs(mine[0][3].decode()), parse_qs(mine[3][3].decode())
        assert ticket["name"] == ["causal_attention.html"] and ticket["content_type"] == ["text/html"]
        assert put == {"comment[file_ids][]": [str(900 + int(user[-1]))], "comment[text_comment]": [COMMENT]}


@slow
def test_the_grade_command_applies_the_same_late_work_and_a_new_due_date_grades_again(round_trip, tmp_path):
    """The same Moodle download through ``attention-course grade``'s pipeline (jobs in worker processes):
    the penalties nbgrader's own autograde stored above, in the class's gradebook, the summary and the
    export; then a later due date, and every job runs again (the due date is part of its key)."""
    from nbgrader.api import Gradebook

    from attention_course.grading.class_grading import grade_class

    _, _, moodle, *_ = round_trip
    course = copy_course(tmp_path / "course")
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(POLICY)
    worksheet = _worksheet(tmp_path / "worksheet.csv", [
        ("111111", "Ann Lee", "ann@example.org", DUE - timedelta(minutes=5)),
        ("222222", "Carl Day", "carl@example.org", DUE + timedelta(hours=2, minutes=50)),
        ("333333", "Dee Fox", "dee@example.org", DUE + timedelta(hours=2, minutes=50)),
        ("444444", "Eve Gray", "eve@example.org", DUE + timedelta(hours=30)),
    ])
    (tmp_path / "extensions.csv").write_text("student,hours\ndee_fox,4\n")
    moodle_penalties = {s: PENALTIES[s] for s in ("ann_lee", "carl_day", "dee_fox", "eve_gray")}

    def graded(**late):
        result = grade_class(course, ASSIGNMENT, moodle, workers=2, moodle_worksheet=worksheet,
                             extensions=tmp_path / "extensions.csv", **late)
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            stored = {s: gradebook.find_submission(ASSIGNMENT, s).late_submission_penalty or 0.0 for s in moodle_penalties}
        return {r.student: r for r in result.students}, stored

    by, stored = graded()
    assert stored == moodle_penalties
    assert {s: r.score for s, r in by.items()} == {s: 20.0 - p for s, p in moodle_penalties.items()}
    assert "2 h 50 min late: -3" in by["carl_day"].status and "late" not in by["ann_lee"].status
    by, stored = graded(due="2026-03-04 12:00 UTC")  # after every submission
    assert stored == dict.fromkeys(moodle_penalties, 0.0)
    assert {s: r.score for s, r in by.items()} == dict.fromkeys(moodle_penalties, 20.0)
