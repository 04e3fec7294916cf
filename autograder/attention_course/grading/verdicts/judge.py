"""The grader's side, on a notebook.

nbgrader runs a notebook's test cells in the student's own process, after the student's code:
whatever that process reports can be faked. So no point depends on it alone. Before execution,
``harvest_notebook`` builds the notebook the verdicts come from: the harness (``harvest_kernel``:
the exercises' kernel halves and the handed-over objects, as source), the source's set-up cells
less the checks, then the student's cells in their order, each read first (``answer_rules``) and
kept only when it is in the answer language, with only its imports, definitions and assignments (a
print or a magic runs in the student's own notebook, not here), and a harvest cell where each test
cell stood. It runs in a fresh kernel without the course package: no reference, no check, no
grading code, no test cell and no other code of the student's is there. ``keep_harvest`` files
what it printed with the student's executed notebook; ``apply_verdicts`` judges every graded item
from it with the exercises' specs (``exercises``) and the quiz keys (``quiz``), and takes the
points of an item it disproves: an item earns them only when its test cell passed in the student's
process *and* its verdict here passed."""

import ast
import json
import secrets

import nbformat

from attention_course.answer_rules import ALWAYS_HANDED_OVER, Breach, Rules, accepted_code, as_python, import_origins
from attention_course.assignments import BY_ID
from attention_course.exercises import exercises_of, harvest_request, judge_harvest
from attention_course.exercises.kernel.harvest import HARVEST_MIME
from attention_course.grading.cells import (HARVEST_KEY, failed, grade_id, hidden_test_lines, hide_hidden_tests_in_tracebacks,
                                           is_harvest_cell, is_solution_cell, is_test_cell, nbgrader_meta)
from attention_course.grading.harvest_kernel import harvest_source, loader_source, setup_source
from attention_course.grading.verdicts import quiz
from attention_course.grading.verdicts.quiz import is_quiz_cell

ERROR_NAME = "OutOfProcessVerdict"

MAX_HARVEST_CHARS = 20_000_000


def student_cells(nb) -> list[tuple[int, str, str]]:
    """(index, label, source) of the code the student wrote: answer cells and cells they added."""
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = nbgrader_meta(cell)
        if is_solution_cell(cell) or not (meta.get("locked") or meta.get("grade")):
            cells.append((index, meta.get("grade_id") or f"cell {index + 1}", cell.source))
    return cells


def _setup_cells(source_nb) -> list:
    """The source's cells before its first answer cell that are neither answers nor tests: the set-up."""
    setup = []
    for cell in source_nb.cells:
        if is_solution_cell(cell) or is_test_cell(cell):
            break
        if cell.cell_type == "code":
            setup.append(cell)
    return setup


def answer_rules(assignment: str, source_nb, nb) -> Rules:
    """The rules of an assignment's answers: what its given cells bind, what they hand over."""
    record = BY_ID[assignment]
    given = {}
    for cell in source_nb.cells:
        if cell.cell_type == "code" and not is_solution_cell(cell) and not is_test_cell(cell):
            given |= import_origins(cell.source)
    classes = set()
    for _, _, source in student_cells(nb):
        try:
            classes |= {node.name for node in ast.parse(as_python(source)).body if isinstance(node, ast.ClassDef)}
        except SyntaxError:
            continue
    return Rules(given=given, handed_over=frozenset(record.handed_over + ALWAYS_HANDED_OVER),
                 fused_allowed=record.fused_attention_allowed, own_classes=frozenset(classes))


def harvest_notebook(nb, assignment: str, source_nb, seed: int | None = None):
    """(the notebook the verdicts come from, the student's cells left out of it and why)."""
    seed = secrets.randbits(30) if seed is None else seed
    keys = quiz.quiz_keys(source_nb)
    every = quiz.plan(keys, seed)
    fused_forbidden = not BY_ID[assignment].fused_attention_allowed
    exercises = {exercise.grade_id: harvest_request(exercise, seed + index, fused_forbidden)
                 for index, exercise in enumerate(exercises_of(assignment))}
    nb.metadata.pop(HARVEST_KEY, None)  # only the grader files a harvest
    rules = answer_rules(assignment, source_nb, nb)
    ours = {index: (label, source) for index, label, source in student_cells(nb)}
    cells = [nbformat.v4.new_code_cell(loader_source(assignment)),
             nbformat.v4.new_code_cell(setup_source(assignment, [cell.source for cell in _setup_cells(source_nb)]))]
    left_out = []
    for index, cell in enumerate(nb.cells):
        if index in ours:
            code, breaches = accepted_code(ours[index][1], ours[index][0], rules)
            left_out += breaches[:1]  # the first is enough to say why; the visible checks show the rest
            if code.strip():
                cells.append(nbformat.v4.new_code_cell(code))
            continue
        item = grade_id(cell)
        if not is_test_cell(cell) or (item not in exercises and item not in keys):
            continue
        calls = keys.get(item, [])
        plan = {"seed": seed, "fused_forbidden": fused_forbidden, "exercises": [exercises[item]] if item in exercises else [],
                "answers": [c.name for c in calls if c.kind != "check_formula" and c.name in every["answers"]],
                "formulas": {c.name: every["formulas"][c.name] for c in calls if c.kind == "check_formula"}}
        harvest = nbformat.v4.new_code_cell(harvest_source(plan))
        harvest.metadata[HARVEST_KEY] = plan
        cells.append(harvest)
    return nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata), left_out


def keep_harvest(nb, harvested_nb, left_out: list[Breach]) -> None:
    """File what the executed harvest notebook printed, and what was left out, with ``nb``."""
    nb.metadata[HARVEST_KEY] = {
        "cells": [{"plan": cell.metadata[HARVEST_KEY], "result": _harvested(cell)} for cell in harvested_nb.cells
                  if is_harvest_cell(cell)],
        "left_out": [str(breach) for breach in left_out],
    }


def _harvested(cell) -> dict:
    for output in cell.get("outputs", []):
        data = output.get("data", {}).get(HARVEST_MIME) if output.get("output_type") == "display_data" else None
        if isinstance(data, str) and len(data) < MAX_HARVEST_CHARS:
            try:
                result = json.loads(data)
            except ValueError:
                return {}
            return result if isinstance(result, dict) else {}
    return {}


def _merged(records: list[dict]) -> tuple[dict, dict]:
    """(plan, harvested) of all harvest cells together: what each was asked, what each answered."""
    plan = {"seed": None, "formulas": {}}
    harvested = {"exercises": {}, "answers": {}, "formulas": {}}
    for record in records:
        asked, answered = record["plan"], record["result"]
        plan["seed"] = asked["seed"]
        plan["formulas"] |= asked.get("formulas", {})
        for part in harvested:
            if isinstance(answered.get(part), dict):
                wanted = {e["grade_id"] for e in asked["exercises"]} if part == "exercises" else set(asked.get(part, ()))
                harvested[part] |= {key: value for key, value in answered[part].items() if key in wanted}
    return plan, harvested


def verdicts(assignment: str, source_nb, plan: dict, harvested: dict) -> dict[str, str]:
    """Test cell -> '' (passed) or why not, for every test cell of the source notebook."""
    exercises = exercises_of(assignment)
    keys = quiz.quiz_keys(source_nb)
    results = harvested.get("exercises") if isinstance(harvested.get("exercises"), dict) else {}
    found = {}
    for index, exercise in enumerate(exercises):
        found[exercise.grade_id] = judge_harvest(exercise, plan["seed"] + index, results.get(exercise.grade_id))
    for cell in source_nb.cells:
        if not is_test_cell(cell) or grade_id(cell) in found:
            continue
        if is_quiz_cell(cell):
            found[grade_id(cell)] = quiz.judge_quiz_cell(keys[grade_id(cell)], plan, harvested)
        else:
            found[grade_id(cell)] = "this item has no out-of-process verdict, so it cannot be graded (a course error)"
    return found


def apply_verdicts(nb, assignment: str, source_nb) -> dict[str, str]:
    """Judge ``nb`` (executed, its harvest filed by ``keep_harvest``) and give each test cell that
    passed in the student's process but not here an error, so that it scores 0."""
    filed = nb.metadata.pop(HARVEST_KEY, None)
    if filed and filed["cells"]:
        found = verdicts(assignment, source_nb, *_merged(filed["cells"]))
        if filed["left_out"]:
            note = f"; left out of grading, outside the answer rules: {'; '.join(filed['left_out'][:3])}"
            found = {item: problem + note if problem else problem for item, problem in found.items()}
    else:
        found = {grade_id(c): "the notebook was not run with the grader's harvest" for c in source_nb.cells if is_test_cell(c)}
    hidden = {grade_id(c): hidden_test_lines(c) for c in source_nb.cells if is_test_cell(c)}
    for cell in nb.cells:
        if is_test_cell(cell):
            hide_hidden_tests_in_tracebacks(cell, hidden.get(grade_id(cell), set()))
        if not is_test_cell(cell) or grade_id(cell) not in found:
            continue
        # This course gives no partial credit inside a cell: a number a test cell shows is not a score.
        cell.outputs = [output for output in cell.outputs if output.get("output_type") != "execute_result"]
        problem = found[grade_id(cell)]
        if problem and _passed_in_process(cell):
            message = f"judged outside your notebook's process: {problem}"
            cell.outputs.insert(0, nbformat.v4.new_output("error", ename=ERROR_NAME, evalue=message,
                                                          traceback=[f"{ERROR_NAME}: {message}"]))
    return found


def _passed_in_process(cell) -> bool:
    """As nbgrader scores a test cell: an error, or anything written to stderr, costs its points."""
    return not failed(cell)
