"""Self-grading takes the instructor's test cells whatever the student did to theirs, and never
changes the submitted file."""

import hashlib

import nbformat
import pytest

from attention_course.cli import main
from attention_course.grading.examples import Student, build_submission
from attention_course.grading.cells import grade_id, is_test_cell
from attention_course.grading.selfgrade import grade_notebook, with_instructor_cells
from course_copy import ROOT

ASSIGNMENT = "01_causal_attention"
SOURCE = ROOT / "source" / ASSIGNMENT / "causal_attention.ipynb"
RELEASE = ROOT / "release" / ASSIGNMENT / "causal_attention.ipynb"


@pytest.fixture
def solved():
    source = nbformat.read(SOURCE, as_version=4)
    return build_submission(Student("solved", "solution"), source, nbformat.read(RELEASE, as_version=4)), source


def test_deleted_test_cell_is_put_back_in_place(solved):
    submission, source = solved
    ids = [grade_id(cell) for cell in submission.cells]
    submission.cells = [cell for cell in submission.cells if grade_id(cell) != "test_attention"]
    graded = with_instructor_cells(submission, source)
    assert [grade_id(cell) for cell in graded.cells] == ids


def test_edited_test_cell_is_replaced_by_the_instructors(solved):
    submission, source = solved
    for cell in submission.cells:
        if is_test_cell(cell):
            cell.source = "pass  # trust me"
    graded = with_instructor_cells(submission, source)
    tests = {grade_id(c): c.source for c in graded.cells if is_test_cell(c)}
    assert tests == {grade_id(c): c.source for c in source.cells if is_test_cell(c)}
    assert all("HIDDEN TESTS" in text for text in tests.values())


def test_answers_and_extra_cells_are_kept(solved):
    submission, source = solved
    submission.cells.insert(3, nbformat.v4.new_code_cell("scratch = 1"))
    graded = with_instructor_cells(submission, source)
    assert graded.cells[3].source == "scratch = 1"
    answer = next(c for c in graded.cells if grade_id(c) == "attention_weights")
    assert "### BEGIN SOLUTION" not in answer.source and "def attention_weights" in answer.source


def test_grade_notebook_counts_points_and_leaves_the_file_alone(tmp_path, solved, capsys):
    submission, _ = solved
    for cell in submission.cells:
        if grade_id(cell) == "test_heads":
            submission.cells.remove(cell)
            break
    path = tmp_path / "Copy of causal_attention (1).ipynb"
    nbformat.write(submission, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["grade-notebook", str(path), "--source", str(SOURCE)]) == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    printed = capsys.readouterr().out
    assert "20 / 20 points" in printed and "test_heads" in printed


def test_grade_notebook_reports_a_missing_file(capsys):
    assert main(["grade-notebook", "no_such_notebook.ipynb"]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_report_renders_the_named_mistake(tmp_path, solved):
    submission, source = solved
    for cell in submission.cells:
        if grade_id(cell) == "attention_weights":
            cell.source = cell.source.replace(" / math.sqrt(q.shape[-1])", "")
    path = tmp_path / "causal_attention.ipynb"
    nbformat.write(submission, path)
    report = grade_notebook(path, SOURCE)
    assert report.points == 11 and report.max_points == 20
    assert "were not scaled" in report.render()


# Without a clone (a self-learner in Colab): the hidden tests of the installed version come from the
# repository at the tag v<version>; here a file:// address of this checkout's source/ stands in for it.
def _no_clone(monkeypatch, tmp_path):
    from attention_course.grading import selfgrade

    monkeypatch.setenv(selfgrade.SOURCE_URL_ENV, (ROOT / "source").as_uri() + "/{assignment}/{notebook}")
    monkeypatch.setenv(selfgrade.CACHE_ENV, str(tmp_path / "cache"))
    content = tmp_path / "content"  # Colab's /content: no course directory at or above it
    content.mkdir()
    monkeypatch.chdir(content)
    return content


def _no_scale(submission):
    for cell in submission.cells:
        if grade_id(cell) == "attention_weights":
            cell.source = cell.source.replace(" / math.sqrt(q.shape[-1])", "")
    return submission


def test_the_released_source_is_the_tagged_one(monkeypatch, tmp_path):
    from attention_course import __version__
    from attention_course.grading import selfgrade

    monkeypatch.delenv(selfgrade.SOURCE_URL_ENV, raising=False)
    monkeypatch.setenv(selfgrade.CACHE_ENV, str(tmp_path))
    seen = []

    def fake_urlopen(url, timeout):
        seen.append(url)
        raise OSError("no network in tests")

    monkeypatch.setattr(selfgrade.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(FileNotFoundError, match="could not download"):
        selfgrade.released_source(ASSIGNMENT)
    assert seen == [f"https://raw.githubusercontent.com/attention-course/attention-course/v{__version__}/source/{ASSIGNMENT}/causal_attention.ipynb"]


@pytest.mark.parametrize("wrong", [False, True], ids=["solution", "no_scale"])
def test_grade_notebook_without_a_clone(monkeypatch, tmp_path, solved, capsys, wrong):
    """What the README tells a Colab student: `!attention-course grade-notebook /content/<file>.ipynb`."""
    submission, _ = solved
    content = _no_clone(monkeypatch, tmp_path)
    path = content / "Copy of causal_attention.ipynb"
    nbformat.write(_no_scale(submission) if wrong else submission, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["grade-notebook", str(path)]) == 0
    printed = capsys.readouterr()
    assert "hidden tests:" in printed.err and str(tmp_path / "cache") in printed.err
    if wrong:
        assert "11 / 20 points" in printed.out and "were not scaled" in printed.out
    else:
        assert "20 / 20 points" in printed.out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_grade_in_colab_grades_the_open_notebook(monkeypatch, tmp_path, solved, capsys):
    """``grade_in_colab()`` in a cell: Colab hands over the open notebook, it is saved and graded."""
    import json
    import sys
    import types

    from attention_course.grading.selfgrade import grade_in_colab

    submission, _ = solved
    content = _no_clone(monkeypatch, tmp_path)
    submission.metadata["colab"] = {"name": "Copy of causal_attention.ipynb", "provenance": []}
    asked = []

    def blocking_request(request, timeout_sec):
        asked.append(request)
        return {"ipynb": json.loads(nbformat.writes(_no_scale(submission)))}

    colab = types.ModuleType("google.colab")
    colab._message = types.SimpleNamespace(blocking_request=blocking_request)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab._message", colab._message)
    assert grade_in_colab(destination=content) == 0
    printed = capsys.readouterr().out
    assert asked == ["get_ipynb"] and (content / "Copy of causal_attention.ipynb").is_file()
    assert "11 / 20 points" in printed and "were not scaled" in printed


# One scoring rule: self-grading scores a test cell as nbgrader's determine_grade does (an error or
# anything on stderr gives 0; a result that reads as a number is partial credit), outputs in order.
def _test_cell(*outputs, points=3):
    cell = nbformat.v4.new_code_cell("check()", metadata={"nbgrader": {"grade": True, "solution": False, "locked": True,
                                                                       "grade_id": "t", "points": points}})
    cell.outputs = list(outputs)
    return cell


def _stream(name, text):
    return nbformat.v4.new_output("stream", name=name, text=text)


def _result(text):
    return nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=1)


ERROR = nbformat.v4.new_output("error", ename="AssertionError", evalue="wrong", traceback=["AssertionError: wrong"])
SCORED_CELLS = {
    "nothing": (),
    "stdout": (_stream("stdout", "ok\n"),),
    "stderr": (_stream("stderr", "UserWarning: x\n"),),
    "stdout_then_stderr": (_stream("stdout", "ok\n"), _stream("stderr", "x\n")),
    "error": (ERROR,),
    "stdout_then_error": (_stream("stdout", "ok\n"), ERROR),
    "display_data": (nbformat.v4.new_output("display_data", data={"text/plain": "1"}),),
    "result_partial": (_result("1.5"),),
    "result_zero": (_result("0"),),
    "result_list": (_result(["2"]),),
    "result_long_list": (_result(["1", "2"]),),
    "result_text": (_result("'a string'"),),
    "result_negative": (_result("-1"),),
    "result_then_stderr": (_result("1"), _stream("stderr", "x\n")),
    "stderr_then_result": (_stream("stderr", "x\n"), _result("1")),
}


@pytest.mark.parametrize("name", SCORED_CELLS)
def test_item_score_is_nbgrader_determine_grade(name):
    from attention_course.grading.cells import item_score, test_results

    determine_grade = pytest.importorskip("nbgrader.utils").determine_grade
    cell = _test_cell(*SCORED_CELLS[name])
    nb = nbformat.v4.new_notebook(cells=[cell])
    score, max_points = determine_grade(cell)
    assert item_score(cell) == score and max_points == 3
    [item] = test_results(nb)
    assert (item.points, item.max_points) == (score, 3)
    assert bool(item.message) == (score < 3)


def test_item_score_rejects_credit_beyond_the_points_as_nbgrader_does():
    from attention_course.grading.cells import item_score

    with pytest.raises(ValueError, match="partial credit"):
        item_score(_test_cell(_result("4")))


def test_the_verdicts_use_the_same_rule():
    from attention_course.grading.cells import failed
    from attention_course.grading.verdicts.judge import _passed_in_process

    for outputs in SCORED_CELLS.values():
        cell = _test_cell(*outputs)
        assert _passed_in_process(cell) == (not failed(cell))
        assert failed(cell) == any(o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr") for o in outputs)


def _graded_with(tmp_path, submission, source, cell_timeout=None):
    """Self-grade ``submission`` against ``source`` (an instructor notebook in an assignment's folder)."""
    folder = tmp_path / ASSIGNMENT
    folder.mkdir(exist_ok=True)
    nbformat.write(source, folder / SOURCE.name)
    nbformat.write(submission, tmp_path / SOURCE.name)
    return grade_notebook(tmp_path / SOURCE.name, folder / SOURCE.name, cell_timeout=cell_timeout)


def test_a_test_cell_that_writes_to_stderr_scores_zero(tmp_path, solved):
    """As nbgrader scores it: a warning, or a print to stderr, in a test cell costs its points."""
    submission, source = solved
    writes = {"test_causal_mask": 'import warnings\nwarnings.warn("deprecated")',
              "test_attention": 'import sys\nprint("to stderr", file=sys.stderr)'}
    for cell in source.cells:
        if grade_id(cell) in writes:
            cell.source += "\n" + writes[grade_id(cell)]
    report = _graded_with(tmp_path, submission, source)
    lost = {item.grade_id: item.message for item in report.items if item.points < item.max_points}
    assert report.points == 16 and set(lost) == set(writes)
    assert "stderr" in lost["test_attention"] and "to stderr" in lost["test_attention"]


def test_a_dead_kernel_costs_the_items_it_did_not_reach(tmp_path, solved):
    submission, source = solved
    at = next(i for i, cell in enumerate(submission.cells) if grade_id(cell) == "test_heads")
    submission.cells.insert(at, nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    report = _graded_with(tmp_path, submission, source)
    assert "kernel died" in report.status and "kernel died" in report.render()
    earned = {item.grade_id for item in report.items if item.points == item.max_points}
    assert earned == {"test_causal_mask", "test_attention_weights", "test_attention"}
    assert all("TestNotRun" in item.message for item in report.items if item.grade_id not in earned)


def test_a_cell_past_the_time_out_is_interrupted(tmp_path, solved):
    submission, source = solved
    submission.cells.insert(3, nbformat.v4.new_code_cell("while True:\n    pass"))
    report = _graded_with(tmp_path, submission, source, cell_timeout=6)
    assert "ran longer than 6 s" in report.status and report.points == 20
