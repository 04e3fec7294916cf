"""The Gradescope autograder and the PrairieLearn question that ``attention-course package`` builds: their
entry points, run as the platforms run them on a folder laid out as each lays it out, grade a submission
with the hidden tests and the trusted verdicts, and write results.json as each platform specifies it."""

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import nbformat
import pytest

from attention_course.grading.cells import grade_id, hidden_test_lines, is_test_cell, nbgrader_meta
from attention_course.grading.examples import build_submission, students_of
from attention_course.grading.platforms.run import CONFIG, GRADESCOPE_ENV, PRAIRIELEARN_ENV
from course_copy import ROOT

ASSIGNMENT = "01_causal_attention"
SOURCE = ROOT / "source" / ASSIGNMENT / "causal_attention.ipynb"
RELEASE = ROOT / "release" / ASSIGNMENT / "causal_attention.ipynb"
MISTAKE = "no_scale"  # grading/examples/causal_attention.py: forgot the 1/sqrt(d) scale
ITEMS = {grade_id(c): (float(nbgrader_meta(c)["points"]), bool(hidden_test_lines(c)))
         for c in nbformat.read(SOURCE, as_version=4).cells if is_test_cell(c)}


def _package(*args: str) -> None:
    """The command an instructor runs, in the course directory."""
    subprocess.run([sys.executable, "-m", "attention_course.cli", "package", *args], cwd=ROOT, check=True,
                   capture_output=True, text=True)


@pytest.fixture(scope="module")
def gradescope_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "autograder.zip"
    _package("gradescope", ASSIGNMENT, "--out", str(out))
    return out


@pytest.fixture(scope="module")
def prairielearn_question(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "question"
    _package("prairielearn", ASSIGNMENT, "--out", str(out), "--image", "example/attention-grader:1")
    return out


def _student(name: str):
    source, release = nbformat.read(SOURCE, as_version=4), nbformat.read(RELEASE, as_version=4)
    student = next(s for s in students_of(ASSIGNMENT) if s.name == name)
    return student, build_submission(student, source, release)


def _hand_in(folder: Path, handed_in: str) -> None:
    """The submission folder's content: an example student's notebook under a Colab name, or an unusable file."""
    folder.mkdir(parents=True)
    if handed_in == "unusable":
        (folder / "causal_attention.ipynb").write_text("{ this is not a notebook")
        (folder / "notes.txt").write_text("my answers are in the notebook")
    else:
        nbformat.write(_student(handed_in)[1], folder / "Copy of causal_attention (2).ipynb")


def _installed(wheel: Path, folder: Path) -> dict:
    """The environment of a Python whose course package is the packaged wheel (unpacked: a pure wheel
    installed is its files), first on the path; this Python's torch and the rest come from where they are."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    env = {**os.environ, "PYTHONPATH": str(folder), "ATTENTION_COURSE_PYTHON": sys.executable}
    found = subprocess.run([sys.executable, "-c", "import attention_course; print(attention_course.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).is_relative_to(folder)
    return env


def _run(entry_point: Path, env: dict) -> subprocess.CompletedProcess:
    """The entry point as the platform runs it: the script itself, with the package from the wheel it
    carries (the install step, setup.sh or the image's, is left out)."""
    return subprocess.run([str(entry_point)], env=env, cwd=entry_point.parent, capture_output=True, text=True, timeout=600)


# ---- Gradescope ------------------------------------------------------------------------------------------


def test_the_zip_has_gradescopes_layout(gradescope_zip):
    with zipfile.ZipFile(gradescope_zip) as archive:
        names = set(archive.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        (wheel,) = [n for n in names if n.endswith(".whl")]
        assert {"setup.sh", "run_autograder", "constraints.txt", CONFIG, wheel,
                f"source/{ASSIGNMENT}/causal_attention.ipynb"} == names
        assert all(modes[script] & stat.S_IXUSR for script in ("setup.sh", "run_autograder"))
        assert archive.read(f"source/{ASSIGNMENT}/causal_attention.ipynb") == SOURCE.read_bytes()  # the hidden tests
        config = json.loads(archive.read(CONFIG))
        (folder := Path(gradescope_zip).parent / "wheel").mkdir()
        archive.extract(wheel, folder)
    assert config["assignment"] == ASSIGNMENT and config["limits"]["threads"] == 1
    assert config["hidden_visibility"] == "after_due_date"
    with zipfile.ZipFile(folder / wheel) as packaged:
        assert "attention_course/grading/platforms/run.py" in packaged.namelist()
        assert "attention_course/grading/selfgrade.py" in packaged.namelist()


_STUBS = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [ "$(basename "$0")" = python3 ] && [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
fi
"""


def test_setup_sh_installs_the_packaged_wheel_beside_the_pinned_torch(gradescope_zip, tmp_path):
    """setup.sh run with apt-get and python3 stubbed (they log their arguments): what it would install, and where."""
    import torch

    base = tmp_path / "autograder"
    with zipfile.ZipFile(gradescope_zip) as archive:
        archive.extractall(base / "source")
        wheel = next(n for n in archive.namelist() if n.endswith(".whl"))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("apt-get", "python3"):
        (stubs / name).write_text(_STUBS)
        (stubs / name).chmod(0o755)
    log = tmp_path / "calls.log"
    subprocess.run(["bash", str(base / "source" / "setup.sh")], check=True, timeout=60,
                   env={"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), GRADESCOPE_ENV: str(base)})
    calls = log.read_text().splitlines()
    source, venv = base / "source", base / "venv"
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    assert calls[0] == "apt-get update -qq"
    assert calls[1].startswith("apt-get install") and {"python3", "python3-venv", "bubblewrap"} <= set(calls[1].split())
    assert calls[2] == f"python3 -m venv {venv}"
    assert calls[3] == f"python -m pip install --no-cache-dir {torch_pin} --index-url https://download.pytorch.org/whl/cpu"
    assert calls[4] == f"python -m pip install --no-cache-dir -c {source}/constraints.txt {source}/{wheel} ipykernel jupyter_client"
    assert calls[5] == "python -c import attention_course.grading.platforms.run"
    assert torch_pin in (source / "constraints.txt").read_text().splitlines()


def _gradescope(gradescope_zip: Path, tmp_path: Path, handed_in: str) -> tuple[dict, subprocess.CompletedProcess]:
    """/autograder as Gradescope lays it out, under ``tmp_path``: the zip in source/, run_autograder copied
    beside it, the student's files in submission/; then run_autograder."""
    base = tmp_path / "autograder"
    with zipfile.ZipFile(gradescope_zip) as archive:
        archive.extractall(base / "source")
    shutil.copy(base / "source" / "run_autograder", base / "run_autograder")
    (base / "run_autograder").chmod(0o755)  # extraction keeps no modes; Gradescope's harness runs it executable
    _hand_in(base / "submission", handed_in)
    (base / "results").mkdir()
    (wheel,) = (base / "source").glob("attention_course-*.whl")
    completed = _run(base / "run_autograder", {**_installed(wheel, tmp_path / "site-packages"), GRADESCOPE_ENV: str(base)})
    return json.loads((base / "results" / "results.json").read_text()), completed


def _check_gradescope_schema(results: dict) -> None:
    assert set(results) == {"score", "execution_time", "output", "output_format", "stdout_visibility", "tests"}
    assert isinstance(results["execution_time"], int) and results["stdout_visibility"] == "hidden"
    assert [test["name"] for test in results["tests"]] == list(ITEMS)
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        points, hidden = ITEMS[test["name"]]
        assert test["max_score"] == points and 0 <= test["score"] <= points
        assert test["visibility"] == ("after_due_date" if hidden else "visible")
        assert test["status"] == ("passed" if test["score"] == points and not test["output"] else "failed")
    assert results["score"] == sum(test["score"] for test in results["tests"])


def test_gradescope_full_marks_for_the_solution(gradescope_zip, tmp_path):
    results, completed = _gradescope(gradescope_zip, tmp_path, "solution")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    _check_gradescope_schema(results)
    assert results["score"] == sum(points for points, _ in ITEMS.values()) == 20
    assert all(test["status"] == "passed" for test in results["tests"])
    assert results["output"].startswith("Copy of causal_attention (2).ipynb: 20 / 20 points")
    assert any(hidden for _, hidden in ITEMS.values()) and "show their result after the due date" in results["output"]
    assert "20 / 20 points" in completed.stdout  # the instructor's log (Gradescope's results/stdout)


def test_gradescope_names_the_mistake_in_the_failing_tests(gradescope_zip, tmp_path):
    results, completed = _gradescope(gradescope_zip, tmp_path, MISTAKE)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    _check_gradescope_schema(results)
    student, _ = _student(MISTAKE)
    by_name = {test["name"]: test for test in results["tests"]}
    for name, test in by_name.items():
        if name in student.loses:
            assert test["score"] == 0 and test["status"] == "failed" and student.loses[name] in test["output"]
        else:
            assert test["score"] == test["max_score"] and test["output"] == ""
    assert results["score"] == 20 - sum(ITEMS[name][0] for name in student.loses) == 11


def test_gradescope_scores_an_unusable_file_0_and_says_why(gradescope_zip, tmp_path):
    results, completed = _gradescope(gradescope_zip, tmp_path, "unusable")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    _check_gradescope_schema(results)
    assert results["score"] == 0 and all(test["score"] == 0 for test in results["tests"])
    assert results["output"].startswith("Nothing was graded: causal_attention.ipynb: the file is not a readable notebook")
    assert "File > Download .ipynb" in results["output"] and "notes.txt: not a notebook, left aside" in results["output"]


def test_a_notebook_without_the_assignments_cells_is_not_graded(gradescope_zip, tmp_path):
    """The lesson notebook handed in for the assignment: no kernel runs, the output says what is wrong."""
    base = tmp_path / "autograder"
    with zipfile.ZipFile(gradescope_zip) as archive:
        archive.extractall(base / "source")
    (base / "submission").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "01_causal_attention.ipynb", base / "submission" / "homework.ipynb")
    from attention_course.grading.platforms.run import run_gradescope

    results = run_gradescope(base)
    assert results["score"] == 0 and [test["score"] for test in results["tests"]] == [0] * len(ITEMS)
    assert results["output"].startswith(f"Nothing was graded: homework.ipynb: none of {ASSIGNMENT}'s cells are in it")
    assert json.loads((base / "results" / "results.json").read_text()) == results


@pytest.mark.parametrize("platform", ["gradescope", "prairielearn"])
def test_results_are_written_when_the_grader_itself_fails(gradescope_zip, prairielearn_question, tmp_path, monkeypatch, platform):
    """The platforms' advice: a results.json whatever happens (Gradescope: 0 and a word; PrairieLearn: the
    attempt does not count); the error itself goes to the instructor's log."""
    from attention_course.grading.platforms import run

    def broken(*_):
        raise RuntimeError("the grader broke")

    monkeypatch.setattr(run, "grade_submission", broken)
    if platform == "gradescope":
        base = tmp_path / "autograder"
        with zipfile.ZipFile(gradescope_zip) as archive:
            archive.extractall(base / "source")
    else:
        base = tmp_path / "grade"
        shutil.copytree(prairielearn_question / "tests", base / "tests")
    assert run.main([platform, "--base", str(base)]) == 1
    results = json.loads((base / "results" / "results.json").read_text())
    if platform == "gradescope":
        assert results["score"] == 0 and "The autograder itself failed (RuntimeError)" in results["output"]
    else:
        assert results["gradable"] is False and "this attempt does not count" in results["message"]


# ---- PrairieLearn ----------------------------------------------------------------------------------------


def test_the_question_has_prairielearns_layout(prairielearn_question):
    info = json.loads((prairielearn_question / "info.json").read_text())
    options = info["externalGradingOptions"]
    assert info["gradingMethod"] == "External" and options["enabled"] is True
    assert options["image"] == "example/attention-grader:1" and options["timeout"] <= 600  # PrairieLearn's maximum
    assert options["entrypoint"] == "/grade/tests/run_grader"  # the question's tests/ is mounted at /grade/tests
    assert (prairielearn_question / "tests" / "run_grader").stat().st_mode & stat.S_IXUSR
    assert (prairielearn_question / "tests" / "source" / ASSIGNMENT / "causal_attention.ipynb").read_bytes() == SOURCE.read_bytes()
    assert 'file-patterns="*.ipynb"' in (prairielearn_question / "question.html").read_text()
    (wheel,) = (prairielearn_question / "image").glob("attention_course-*.whl")
    dockerfile = (prairielearn_question / "image" / "Dockerfile").read_text()
    assert f"COPY constraints.txt {wheel.name} /tmp/attention-course/" in dockerfile
    assert "--index-url https://download.pytorch.org/whl/cpu" in dockerfile and "bubblewrap" in dockerfile
    assert f"/tmp/attention-course/{wheel.name} ipykernel" in dockerfile
    assert str(uuid.UUID(info["uuid"])) == info["uuid"]


def _prairielearn(question: Path, tmp_path: Path, handed_in: str) -> tuple[dict, subprocess.CompletedProcess]:
    """/grade as PrairieLearn lays it out, under ``tmp_path``: the question's tests/, the uploaded file in
    student/, data/data.json; results/ is not made (PrairieLearn does not)."""
    base = tmp_path / "grade"
    shutil.copytree(question / "tests", base / "tests")
    _hand_in(base / "student", handed_in)
    (base / "data").mkdir()
    (base / "data" / "data.json").write_text(json.dumps({"params": {}, "submitted_answers": {}}))
    (wheel,) = (question / "image").glob("attention_course-*.whl")
    completed = _run(base / "tests" / "run_grader", {**_installed(wheel, tmp_path / "site-packages"), PRAIRIELEARN_ENV: str(base)})
    return json.loads((base / "results" / "results.json").read_text()), completed


def test_prairielearn_scores_the_mistake_and_names_it(prairielearn_question, tmp_path):
    results, completed = _prairielearn(prairielearn_question, tmp_path, MISTAKE)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert set(results) == {"gradable", "score", "message", "output", "tests"} and results["gradable"] is True
    student, _ = _student(MISTAKE)
    assert [test["name"] for test in results["tests"]] == list(ITEMS)
    for test in results["tests"]:
        assert set(test) == {"name", "points", "max_points", "message"}
        assert test["max_points"] == ITEMS[test["name"]][0]
        if test["name"] in student.loses:
            assert test["points"] == 0 and student.loses[test["name"]] in test["message"]
        else:
            assert test["points"] == test["max_points"] and test["message"] == ""
    assert results["score"] == pytest.approx(11 / 20)
    assert results["message"] == "Copy of causal_attention (2).ipynb: 11 / 20 points"


def test_prairielearn_finds_an_unusable_file_not_gradable(prairielearn_question, tmp_path):
    results, completed = _prairielearn(prairielearn_question, tmp_path, "unusable")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert results["gradable"] is False and "score" not in results  # no attempt used up
    assert results["format_errors"][0].startswith("Nothing was graded: causal_attention.ipynb: the file is not a readable notebook")
    assert "notes.txt: not a notebook, left aside" in results["format_errors"]
