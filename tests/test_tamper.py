"""The tamper suite: submissions that try to earn points without solving anything score 0 on every
item, through the grading command and through plain ``nbgrader autograde`` alike, while honest ones
keep every point; and a kernel cannot read the grader's files, write grades, reach the network, or
leave a process behind that changes files after its notebook ends.

Each tamper case answers every question wrongly and then tries to make its test cells pass anyway
(see ``tamper_class``). ``in_process_points`` is what stock nbgrader would have given: the points
of the test cells that raised nothing in the student's process."""

import hashlib
import os
import shutil
import time

import nbformat
import pytest
from nbgrader.utils import determine_grade

from attention_course.grading.cells import grade_id, is_test_cell
from class_fixtures import ASSIGNMENT
from course_copy import copy_course
from tamper_class import IN_AN_ADDED_CELL, NOTEBOOK, TAMPERS, tamper_class

CASES = [*TAMPERS, *IN_AN_ADDED_CELL]

pytestmark = pytest.mark.nbgrader

# Cases whose test cells all pass in the student's process: stock nbgrader gives them 20 / 20.
FOOLS_STOCK_NBGRADER = ("blank_later_cells", "swallow_errors_ast", "delete_checks_ast", "replace_checks", "fake_package",
                        "custom_exception_handler", "silenced_tracebacks")
# What each case's feedback says on its first code item. Where its test cells pass in the student's
# process, the verdict names why it fails: the construct outside the answer language that left its
# cell out of grading, or (a call at the top level of a cell is not run when grading) the wrong
# answer beside it.
LEFT_OUT = "left out of grading, outside the answer rules: "
NAMED = {
    "blank_later_cells": "every entry is True",
    "blank_later_cells_plainly": "every entry is True",
    "custom_exception_handler": "every entry is True",
    "swallow_errors_ast": LEFT_OUT + "import ast",
    "delete_checks_ast": LEFT_OUT + "import ast",
    "replace_checks": LEFT_OUT + "the name _m",
    "fake_package": LEFT_OUT + "import sys",
    "silenced_tracebacks": LEFT_OUT + "import sys",
    "swap_in_references": LEFT_OUT + "from attention_course.kernels import ...",
    "reference_import": LEFT_OUT + "from attention_course.kernels.causal import ...",
    "exec_reference_source": LEFT_OUT + "import inspect",
}
# Where they fail in the student's process, the visible check has already named the rule.
VISIBLE = "outside the rules in the box at the top, so grading would leave the cell out: "
NAMED_BY_THE_VISIBLE_CHECK = {
    ("grading_alias", "test_causal_mask"): VISIBLE + "import attention_course",
    ("pickled_outputs", "test_causal_mask"): VISIBLE + "load: loads files (pickles)",
    ("threads_and_signals", "test_causal_mask"): VISIBLE + "import signal",
    ("top_level_patch", "test_causal_mask"): VISIBLE + "torch.allclose = ...: it changes something imported",
    ("popped_torch_mode", "test_attention"): VISIBLE + "exec: runs code from a string",
    ("computed_getattr", "test_attention"): VISIBLE + "getattr with a computed name",
    ("sdpa_alias", "test_attention"): VISIBLE + "the name _fused",
    ("setup_importlib", "test_causal_mask"): VISIBLE + "importlib (importlib): the notebook imports it for its own set-up",
}


def _digests(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    from attention_course.grading.class_grading import grade_class
    from attention_course.grading.limits import Limits

    course = copy_course(tmp_path_factory.mktemp("course"))
    hand_in = tmp_path_factory.mktemp("lms") / "download"
    drop = tmp_path_factory.mktemp("drop")
    drop.chmod(0o777)  # a kernel of its own user could write here: only the kill at its end stops a late child
    marker = drop / "late.txt"
    for relative, data in tamper_class(str(course), str(marker), lambda s: str(hand_in / s / NOTEBOOK)).items():
        (hand_in / relative).parent.mkdir(parents=True, exist_ok=True)
        (hand_in / relative).write_bytes(data)
    before = _digests(hand_in)
    result = grade_class(course, ASSIGNMENT, hand_in, workers=2, limits=Limits(cell_seconds=60, notebook_seconds=300))
    time.sleep(6)  # longer than the late child waits before it writes
    return course, hand_in, before, marker, result


def in_process_points(course, student: str) -> float:
    """What the test cells earned in the student's own process: the autograded notebook less the verdicts."""
    from attention_course.grading.verdicts.judge import ERROR_NAME

    autograded = course / "autograded" / student / ASSIGNMENT / NOTEBOOK
    if not autograded.is_file():
        return 0.0
    nb = nbformat.read(autograded, as_version=4)
    for cell in nb.cells:
        cell.outputs = [o for o in cell.get("outputs", []) if o.get("ename") != ERROR_NAME]
    return sum(determine_grade(cell)[0] or 0 for cell in nb.cells if is_test_cell(cell))


def test_every_tamper_case_scores_zero_on_every_item(tampered):
    course, _, _, _, result = tampered
    by = {r.student: r for r in result.students}
    scores = {name: (in_process_points(course, name), by[name].score) for name in CASES}
    print("\n".join(f"{name:<28} in the student's process {points:>4g} / 20   graded {score:g} / 20"
                    for name, (points, score) in scores.items()))
    assert {name: score for name, (_, score) in scores.items() if score} == {}
    for name in CASES:
        assert len(by[name].lost) == 11, f"{name} kept {set(by['honest'].lost) ^ set(by[name].lost)}"
    assert all(scores[name][0] == 20 for name in FOOLS_STOCK_NBGRADER), scores
    for name, phrase in NAMED.items():
        assert phrase in by[name].lost["test_causal_mask"], f"{name}: {by[name].lost['test_causal_mask']}"
    for (name, item), phrase in NAMED_BY_THE_VISIBLE_CHECK.items():
        assert phrase in by[name].lost[item], f"{name}: {by[name].lost[item]}"


def test_honest_students_keep_every_point(tampered):
    _, _, _, _, result = tampered
    by = {r.student: r for r in result.students}
    assert (by["honest"].score, by["honest"].lost) == (20, {})
    assert (by["prober"].score, by["prober"].lost) == (20, {})


def _printed(course, student: str, cell_id: str | None) -> str:
    """What a cell printed in the student's own run (``None``: the cell the student added)."""
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and grade_id(c) == cell_id)
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


@pytest.mark.skipif(os.getuid() != 0, reason="kernels are confined to users and namespaces of their own only when the grader is root")
def test_a_kernel_sees_nothing_of_the_graders_machine_but_python_and_cannot_reach_the_network(tampered):
    course, _, _, _, _ = tampered
    printed = _printed(course, "prober", None)
    assert "could not read the answer keys" in printed
    assert "wrote: []" in printed
    assert "network: unreachable" in printed
    assert "course notebooks elsewhere: []" in printed
    assert "could not read the answer keys" in _printed(course, "read_answer_keys", "causal_mask")


def test_nothing_is_changed_after_a_notebook_ends(tampered):
    course, hand_in, before, marker, _ = tampered
    assert _digests(hand_in) == before
    assert not marker.exists(), marker.read_text()


def test_plain_nbgrader_autograde_gives_the_same_verdicts(tampered, tmp_path):
    """What an instructor gets from formgrader's button: nbgrader's own command with the course's config."""
    from attention_course.grading.nbgrader_steps import nbgrader, stored_grades

    course, hand_in, _, _, result = tampered
    plain = copy_course(tmp_path / "course")
    students = ["honest", "sdpa_alias", "swallow_errors_ast", "replace_checks", "memorized_visible_outputs", "swap_in_references"]
    for student in students:
        folder = plain / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copy(hand_in / student / NOTEBOOK, folder / NOTEBOOK)
    nbgrader(plain, "generate_assignment", ASSIGNMENT, "--force")
    nbgrader(plain, "autograde", ASSIGNMENT, "--force")
    grades = stored_grades(plain, ASSIGNMENT, students)
    by = {r.student: r for r in result.students}
    assert {s: (grades[s][0], set(grades[s][2])) for s in students} == {s: (by[s].score, set(by[s].lost)) for s in students}
