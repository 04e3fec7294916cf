"""A class of submissions with everything that goes wrong in real hand-ins, built from the
solution of 01_causal_attention: each entry is a file name and its bytes."""

import copy
import json

import nbformat

from attention_course.grading.examples import Student, build_submission, students_of
from attention_course.grading.cells import grade_id
from course_copy import ROOT

ASSIGNMENT = "01_causal_attention"
NOTEBOOK = "causal_attention.ipynb"


def _solved():
    source = nbformat.read(ROOT / "source" / ASSIGNMENT / NOTEBOOK, as_version=4)
    release = nbformat.read(ROOT / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    return source, release, build_submission(Student("solution", ""), source, release)


def _append(nb, cell_id: str, code: str):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if grade_id(cell) == cell_id:
            cell.source += "\n" + code
    return nb


def _text(nb) -> bytes:
    return nbformat.writes(nb).encode()


def robustness_class(original_of_solution: str) -> dict[str, bytes]:
    """{relative path: bytes}, one folder per student. ``original_of_solution`` is where the
    solution's file will lie, for the student who tries to overwrite it."""
    source, release, solved = _solved()
    by_name = {s.name: s for s in students_of(ASSIGNMENT)}
    files = {
        "solution/Copy of causal_attention.ipynb": _text(solved),
        "no_scale/causal_attention (1).ipynb": _text(build_submission(by_name["no_scale"], source, release)),
        "untouched/causal_attention.ipynb": _text(release),
        "empty/causal_attention.ipynb": b"",
        "malformed/causal_attention.ipynb": b'{"cells": [{"cell_type": "code", ',
        "not_a_notebook/causal_attention.ipynb": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "json_not_notebook/causal_attention.ipynb": b'{"answer": 42}',
        "wrong_notebook/homework.ipynb": _text(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])),
    }
    deleted = copy.deepcopy(solved)
    deleted.cells = [c for c in deleted.cells if grade_id(c) not in ("test_attention", "test_q5")]
    files["deleted_tests/causal_attention.ipynb"] = _text(deleted)
    duplicated = copy.deepcopy(solved)
    position = next(i for i, c in enumerate(duplicated.cells) if grade_id(c) == "attention")
    duplicated.cells.insert(position, copy.deepcopy(duplicated.cells[position]))
    duplicated.cells[position]["id"] = "duplicate-of-attention"
    files["duplicated_cell/causal_attention.ipynb"] = _text(duplicated)
    retyped = copy.deepcopy(solved)
    for i, cell in enumerate(retyped.cells):
        if grade_id(cell) == "test_heads":
            retyped.cells[i] = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata, id=cell.get("id"))
    files["retyped_cell/causal_attention.ipynb"] = _text(retyped)
    renamed = copy.deepcopy(solved)
    for cell in renamed.cells:
        if grade_id(cell) == "test_gpt2_attention":
            cell.metadata["nbgrader"]["grade_id"] = "my_test"
    files["changed_grade_id/causal_attention.ipynb"] = _text(renamed)
    colab = copy.deepcopy(solved)
    colab.metadata = {"colab": {"provenance": [], "name": "causal_attention.ipynb"}, "kernelspec": {"name": "python3", "display_name": "Python 3"},
                      "accelerator": "GPU", "widgets": {"application/vnd.jupyter.widget-state+json": {"abc": {"model_name": "X"}}}}
    for cell in colab.cells:
        cell.metadata["colab"] = {"base_uri": "https://localhost:8080/"}
    files["colab/causal_attention.ipynb"] = _text(colab)
    old = json.loads(_text(solved))
    old["nbformat_minor"] = 0
    for cell in old["cells"]:
        cell.pop("id", None)
    files["nbformat_4_0/causal_attention.ipynb"] = json.dumps(old).encode()
    files["endless_loop/causal_attention.ipynb"] = _text(_append(solved, "heads", "while True:\n    pass"))
    files["sleeper/causal_attention.ipynb"] = _text(_append(solved, "q1", "import time\ntime.sleep(10_000)"))
    files["dies/causal_attention.ipynb"] = _text(_append(solved, "attention", "import os\nos._exit(3)"))
    files["segfault/causal_attention.ipynb"] = _text(_append(solved, "attention", "import ctypes\nctypes.string_at(0)"))
    files["memory_hog/causal_attention.ipynb"] = _text(_append(solved, "attention", "hog = bytearray(64 * 2**30)"))
    files["flood/causal_attention.ipynb"] = _text(_append(solved, "heads", "print('x' * 100_000_000)"))
    files["writer/causal_attention.ipynb"] = _text(_append(
        solved, "attention", f"open({original_of_solution!r}, 'w').write('overwritten')\nopen('../outside.txt', 'w').write('x')"))
    return files
