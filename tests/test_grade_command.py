"""``attention-course grade``: from an LMS download to nbgrader grades, for a class where
everything that can go wrong does; and the pieces it is made of."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import nbformat
import pytest

from attention_course.grading.collect import collect, read_notebook, restore_originals, snapshot, student_id, STUDENT_PATTERNS
from attention_course.grading.summary import mistake_of

from class_fixtures import ASSIGNMENT, robustness_class
from course_copy import copy_course


@pytest.mark.parametrize(
    "path, student",
    [
        ("doejane_12345_67890_causal_attention.ipynb", "doejane"),
        ("doejane_LATE_12345_67890_Copy of causal_attention.ipynb", "doejane"),
        ("Jane Doe_123456_assignsubmission_file_/causal_attention.ipynb", "jane_doe"),
        ("export/Jane Doe_123456_assignsubmission_file_/kv_cache (1).ipynb", "jane_doe"),
        ("jdoe/Copy of causal_attention (1).ipynb", "jdoe"),
        ("jdoe.ipynb", "jdoe"),
        ("jdoe_causal_attention.ipynb", "jdoe"),
        ("JDoe - causal_attention.ipynb", "jdoe"),
    ],
)
def test_student_ids_from_lms_file_names(path, student):
    assert student_id(path, STUDENT_PATTERNS) == student


def test_a_configured_pattern_comes_first():
    pattern = r"^hw1-(?P<student>s\d+)\.ipynb$"
    assert student_id("hw1-s0042.ipynb", (pattern, *STUDENT_PATTERNS)) == "s0042"


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "the file is empty"),
        (b"   \n", "the file is empty"),
        (b'{"cells": [', "not a readable notebook"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "not text"),
        (b'{"answer": 42}', "not a readable notebook"),
    ],
)
def test_unreadable_files_say_why(data, problem):
    notebook, said = read_notebook(data)
    assert notebook is None and problem in said


def test_old_and_colab_notebooks_are_read():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    old = json.loads(nbformat.writes(nb))
    old["nbformat_minor"] = 0
    del old["cells"][0]["id"]
    old["metadata"] = {"colab": {"provenance": []}, "kernelspec": {"name": "python3", "display_name": "Python 3"}}
    notebook, problem = read_notebook(json.dumps(old).encode())
    assert problem == "" and notebook.cells[0].source == "x = 1"


def _notebook_with(*ids):
    nb = nbformat.v4.new_notebook()
    for cell_id in ids:
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["nbgrader"] = {"grade_id": cell_id}
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


def test_collect_from_a_zip_with_a_zip_inside(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("carol/causal_attention.ipynb", _notebook_with("a1"))
    path = tmp_path / "download.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("alice/Copy of causal_attention.ipynb", _notebook_with("a1", "a2"))
        archive.writestr("alice/old.ipynb", _notebook_with("a1"))
        archive.writestr("bob/kv_cache.ipynb", _notebook_with("b1"))
        archive.writestr("bob/notes.txt", b"hello")
        archive.writestr("__MACOSX/alice/._causal_attention.ipynb", b"junk")
        archive.writestr("more.zip", inner.getvalue())
    entries, notes = collect(path, {"A": {"a1", "a2"}, "B": {"b1"}}, "A", scratch=tmp_path)
    by_student = {e.student: e for e in entries}
    assert set(by_student) == {"alice", "bob", "carol"}
    assert by_student["bob"].notebook is None and "notebook of B, not of A" in by_student["bob"].problem
    assert by_student["carol"].notebook is not None
    assert any("alice: 2 notebooks" in n for n in notes) and any("notes.txt: not a notebook" in n for n in notes)


def test_changed_files_are_restored(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ipynb").write_bytes(b"original")
    before = snapshot(tmp_path)
    (tmp_path / "a" / "x.ipynb").write_bytes(b"overwritten")
    assert restore_originals(tmp_path, before) == ["a/x.ipynb"]
    assert (tmp_path / "a" / "x.ipynb").read_bytes() == b"original"


def test_mistakes_are_told_without_the_call_that_found_them():
    assert mistake_of("AssertionError: attention(q(1, 5, 8), k(1, 5, 8), v(1, 5, 10), causal=True) [torch.float32, cpu]: "
                      "the scores were not scaled") == "the scores were not scaled"
    assert mistake_of("AssertionError: split_heads(x(2, 5, 12), n_heads=3): reshaped straight to [B, H, T, d]: split") \
        == "reshaped straight to [B, H, T, d]: split"
    assert mistake_of("AssertionError: q2: 196,608 is not right.") == "q2: 196,608 is not right."


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from attention_course.grading.class_grading import grade_class
    from attention_course.grading.limits import Limits

    course = copy_course(tmp_path_factory.mktemp("course"))
    hand_in = tmp_path_factory.mktemp("lms") / "download"
    for relative, data in robustness_class(str(hand_in / "solution" / "Copy of causal_attention.ipynb")).items():
        (hand_in / relative).parent.mkdir(parents=True, exist_ok=True)
        (hand_in / relative).write_bytes(data)
    before = _digests(hand_in)
    limits = Limits(cell_seconds=10, notebook_seconds=90, output_bytes=100_000, memory_bytes=6 * 2**30)
    first = grade_class(course, ASSIGNMENT, hand_in, workers=2, limits=limits)
    return course, hand_in, before, limits, first


slow = pytest.mark.nbgrader


@slow
def test_every_student_gets_a_score_and_a_status(graded):
    _, _, _, _, result = graded
    by = {r.student: r for r in result.students}
    assert len(by) == 21
    assert by["solution"].score == by["solution"].max_score == 20 and by["solution"].status == "ok"
    assert by["no_scale"].score == 11 and "were not scaled" in by["no_scale"].lost["test_attention_weights"]
    assert by["untouched"].score == 0
    expected_status = {
        "empty": "the file is empty",
        "malformed": "not a readable notebook",
        "not_a_notebook": "not text",
        "json_not_notebook": "not a readable notebook",
        "wrong_notebook": "none of 01_causal_attention's cells are in it",
        "endless_loop": "ran longer than 10 s",
        "sleeper": "ran longer than 10 s",
        "dies": "the kernel died",
        "segfault": "the kernel died",
        "flood": "cut at 100,000 bytes",
    }
    for student, phrase in expected_status.items():
        assert phrase in by[student].status, f"{student}: {by[student].status}"
    for student in ("empty", "malformed", "not_a_notebook", "json_not_notebook", "wrong_notebook"):
        assert by[student].score == 0
    # A deleted test cell is put back and run: no free points, no "needs manual grading".
    assert by["deleted_tests"].score == 20
    # The kernel died in the attention cell: what ran before keeps its points, nothing after earns any.
    assert 0 < by["dies"].score < 20 and "TestNotRun" in by["dies"].lost["test_q5"]
    for student in ("colab", "nbformat_4_0", "endless_loop", "sleeper", "memory_hog", "flood", "writer"):
        assert by[student].score == 20, f"{student}: {by[student].score} {by[student].status} {by[student].lost}"
    # nbgrader 0.9 stops with a KeyError on these; they are mended first and graded.
    assert "unknown grade id 'my_test'" in by["changed_grade_id"].status and by["changed_grade_id"].score == 20
    assert "'attention' was there twice" in by["duplicated_cell"].status and by["duplicated_cell"].score == 20
    # A test cell turned into markdown is put back as code by nbgrader and run.
    assert by["retyped_cell"].score == 20


@slow
def test_the_submitted_files_are_never_changed(graded):
    _, hand_in, before, _, _ = graded
    assert _digests(hand_in) == before


@slow
def test_nbgrader_keeps_the_grades_and_exports_them(graded):
    import csv

    course, _, _, _, result = graded
    with open(course / "grades.csv") as handle:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle) if row["assignment"] == ASSIGNMENT}
    assert exported == {r.student: r.score for r in result.students}
    assert (course / "feedback" / "no_scale" / ASSIGNMENT / "causal_attention.html").is_file()


@slow
def test_grading_again_gives_the_same_grades_without_duplicates(graded):
    from attention_course.grading.class_grading import grade_class
    from nbgrader.api import Gradebook

    course, hand_in, _, limits, first = graded
    second = grade_class(course, ASSIGNMENT, hand_in, workers=2, limits=limits)
    assert [(r.student, r.score) for r in second.students] == [(r.student, r.score) for r in first.students]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert len(gradebook.assignment_submissions(ASSIGNMENT)) == len(first.students)


@slow
def test_one_student_can_be_regraded(graded):
    from attention_course.grading.class_grading import grade_class

    course, hand_in, _, limits, first = graded
    path = hand_in / "no_scale" / "causal_attention (1).ipynb"
    fixed = path.read_text().replace("scores = q @ k.transpose(-2, -1)  #", "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  #")
    path.write_text(fixed)
    again = grade_class(course, ASSIGNMENT, hand_in, workers=2, limits=limits, only_student="no_scale")
    assert [(r.student, r.score) for r in again.students] == [("no_scale", 20)]
    from attention_course.grading.nbgrader_steps import stored_grades

    others = [r for r in first.students if r.student != "no_scale"]
    stored = stored_grades(course, ASSIGNMENT, [r.student for r in others])
    assert {student: score for student, (score, _, _) in stored.items()} == {r.student: r.score for r in others}


@slow
def test_summary_and_figure(graded, tmp_path):
    from attention_course.grading.summary import render, save_figure

    course, _, _, _, result = graded
    text = render(result, 2)
    assert "pass rate per item" in text and "the scores were not scaled" in text and "most common mistakes" in text
    # The integrity report is written beside the grades, and flags the class's copies of the solution.
    import csv

    assert "integrity: " in text and (course / "integrity" / ASSIGNMENT / "integrity.html").is_file()
    with open(course / "integrity" / ASSIGNMENT / "integrity.csv") as table:
        flagged = {(row["student"], row["other"]) for row in csv.DictReader(table) if row["flagged"]}
    assert ("solution", "colab") in flagged or ("colab", "solution") in flagged
    assert save_figure(result, tmp_path / "summary.png").stat().st_size > 10_000


def test_hidden_test_markers_outside_test_cells_are_neutralised():
    from attention_course.grading.cells import neutralise_hidden_test_markers

    test = nbformat.v4.new_code_cell("check()\n### BEGIN HIDDEN TESTS\nhidden()\n### END HIDDEN TESTS")
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 1}
    answer = nbformat.v4.new_code_cell("x = 1  # ### BEGIN HIDDEN TESTS")
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "a"}
    added = nbformat.v4.new_markdown_cell("### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS")
    nb = nbformat.v4.new_notebook(cells=[test, answer, added])
    assert neutralise_hidden_test_markers(nb) == 2
    assert "### BEGIN HIDDEN TESTS" in test.source and "BEGIN HIDDEN TESTS" not in answer.source + added.source
    assert answer.source == "x = 1  # ### BEGIN\u00a0HIDDEN TESTS"


def _with_added_cell(nb, after: str, cell):
    import copy

    from attention_course.grading.cells import grade_id

    nb = copy.deepcopy(nb)
    position = next(i for i, c in enumerate(nb.cells) if grade_id(c) == after)
    nb.cells.insert(position + 1, cell)
    return nb


@slow
def test_one_students_text_never_stops_the_class(tmp_path, monkeypatch):
    """nbgrader's hidden-test delimiters in a student's own cells (pasted from an instructor notebook,
    or inside a string): each student still gets a grade and feedback, and grades.csv is written."""
    import csv

    from class_fixtures import _append, _solved, _text
    from attention_course.grading.class_grading import grade_class
    from attention_course.grading.limits import Limits

    _, _, solved = _solved()
    files = {
        "solution/causal_attention.ipynb": _text(solved),
        "pasted/causal_attention.ipynb": _text(_append(solved, "attention", "# ### BEGIN HIDDEN TESTS")),
        "in_string/causal_attention.ipynb": _text(_with_added_cell(
            solved, "heads", nbformat.v4.new_code_cell('note = "### BEGIN HIDDEN TESTS (copied from the source notebook)"'))),
        "markdown_region/causal_attention.ipynb": _text(_with_added_cell(
            solved, "q1", nbformat.v4.new_markdown_cell("### BEGIN HIDDEN TESTS\nmy notes\n### END HIDDEN TESTS"))),
    }
    course = copy_course(tmp_path / "course")
    hand_in = tmp_path / "download"
    for relative, data in files.items():
        (hand_in / relative).parent.mkdir(parents=True, exist_ok=True)
        (hand_in / relative).write_bytes(data)
    before = _digests(hand_in)
    result = grade_class(course, ASSIGNMENT, hand_in, workers=2,
                         limits=Limits(cell_seconds=60, notebook_seconds=300, memory_bytes=6 * 2**30))
    by = {r.student: r for r in result.students}
    assert {s: (r.score, r.max_score) for s, r in by.items()} == {s.split("/")[0]: (20, 20) for s in files}
    for student in ("pasted", "in_string", "markdown_region"):
        assert "HIDDEN TESTS" in by[student].status and "no feedback" not in by[student].status, by[student].status
    assert by["solution"].status == "ok"
    for student in by:
        page = course / "feedback" / student / ASSIGNMENT / "causal_attention.html"
        assert page.is_file(), student
    with open(course / "grades.csv") as handle:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle) if row["assignment"] == ASSIGNMENT}
    assert exported == {student: 20.0 for student in by}
    assert _digests(hand_in) == before
    page = (course / "feedback" / "pasted" / ASSIGNMENT / "causal_attention.html").read_text()
    assert "HIDDEN" in page and "thorough=True" not in page  # the student's text shown, the hidden tests not
    # Without the mend (stock nbgrader feedback), nbgrader fails on those three: they get a status, the rest goes on.
    config = course / "nbgrader_config.py"
    mended = "c.GenerateFeedback.preprocessors = FEEDBACK_PREPROCESSORS"
    assert mended in config.read_text()
    config.write_text(config.read_text().replace(mended, "c.GenerateFeedback.preprocessors = "
                                                  "[p for p in FEEDBACK_PREPROCESSORS if 'Neutralise' not in p]"))
    (course / "grades.csv").unlink()
    again = {r.student: r for r in grade_class(course, ASSIGNMENT, hand_in, workers=2).students}
    assert {s: r.score for s, r in again.items()} == {s: 20 for s in by}
    assert "no feedback: nbgrader could not write it (RuntimeError: No end hidden tests statement found)" in again["pasted"].status
    assert "Hidden test region detected in a non-grade cell" in again["markdown_region"].status
    assert again["solution"].status == "ok" and (course / "grades.csv").is_file()
    assert _digests(hand_in) == before
    # The grader's own failure on one notebook (here in a worker thread of this process) stops only that notebook.
    from concurrent.futures import ThreadPoolExecutor

    import attention_course.grading.workers as workers

    (course / ".grading" / ASSIGNMENT / "outcomes" / "pasted.json").unlink()
    real = workers.grade_job

    def broken(bundle, job):
        if job.student == "pasted":
            raise RuntimeError("the grader broke")
        return real(bundle, job)

    monkeypatch.setattr(workers, "grade_job", broken)
    with ThreadPoolExecutor(1) as thread:
        third = {r.student: r for r in grade_class(course, ASSIGNMENT, hand_in, run_on=workers.InExecutor(thread)).students}
    assert third["pasted"].score == 0 and "could not run this notebook (RuntimeError: the grader broke)" in third["pasted"].status
    assert {s: r.score for s, r in third.items() if s != "pasted"} == {s: 20 for s in by if s != "pasted"}
    assert (course / "grades.csv").is_file()


def test_the_limits_are_configured_in_nbgrader_config(tmp_path):
    from attention_course.grading.limits import Limits
    from attention_course.grading.nbgrader_plugin import configured_limits

    course = copy_course(tmp_path / "course")
    assert configured_limits(course) == Limits()  # the defaults, in one place
    with open(course / "nbgrader_config.py", "a") as config:
        config.write("\nc.ConfinedExecute.cell_seconds = 7\nc.ConfinedExecute.memory_bytes = None\n")
    assert configured_limits(course) == Limits(cell_seconds=7, memory_bytes=None)


@slow
def test_a_cell_time_out_set_in_nbgrader_config_takes_effect(tmp_path):
    """Plain ``nbgrader autograde`` with the course's configuration and a setting of its own: a cell
    that never ends is stopped after the configured time, not the default's."""
    from class_fixtures import NOTEBOOK, _append, _solved
    from attention_course.grading.nbgrader_steps import generate_release, nbgrader

    course = copy_course(tmp_path / "course")
    with open(course / "nbgrader_config.py", "a") as config:
        config.write("\nc.ConfinedExecute.cell_seconds = 3\n")
    generate_release(course, ASSIGNMENT)  # registers the assignment in the course's gradebook
    _, _, solved = _solved()
    folder = course / "submitted" / "looper" / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(_append(solved, "attention", "while True:\n    pass"), folder / NOTEBOOK)
    nbgrader(course, "autograde", ASSIGNMENT, "--force")
    graded = nbformat.read(course / "autograded" / "looper" / ASSIGNMENT / NOTEBOOK, as_version=4)
    errors = [output.get("evalue", "") for cell in graded.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert any("ran longer than 3 s" in error for error in errors), errors
