"""The grader's side, on a notebook: append the harvest cell before execution; after it, judge
every graded item from what the harvest printed, and take points from the items it disproves."""

import json
import secrets

import nbformat

from attention_course.grading.cells import HARVEST_KEY, grade_id, is_harvest_cell, is_solution_cell, is_test_cell
from attention_course.grading.harvest import harvest_source
from attention_course.grading.verdicts import ERROR_NAME, HARVEST_MIME, assignment_spec, judge_exercise
from attention_course.grading.verdicts import quiz
from attention_course.grading.verdicts.quiz import is_quiz_cell
from attention_course.grading.verdicts.tampering import tampering

MAX_HARVEST_CHARS = 20_000_000


def add_harvest(nb, assignment: str, source_nb, seed: int | None = None) -> None:
    """Put a harvest cell after each test cell, for that cell's item (a fresh seed unless given):
    an item whose test ran keeps its evidence even if a later cell stops the kernel."""
    seed = secrets.randbits(30) if seed is None else seed
    keys = quiz.quiz_keys(source_nb)
    every = quiz.plan(keys, seed)
    exercises = {exercise.grade_id for exercise in assignment_spec(assignment).exercises}
    cells = []
    for cell in nb.cells:
        if is_harvest_cell(cell):
            continue
        cells.append(cell)
        item = grade_id(cell)
        if not is_test_cell(cell) or (item not in exercises and item not in keys):
            continue
        calls = keys.get(item, [])
        plan = {"assignment": assignment, "seed": seed, "exercises": [item] if item in exercises else [],
                "answers": [c.name for c in calls if c.kind != "check_formula" and c.name in every["answers"]],
                "formulas": {c.name: every["formulas"][c.name] for c in calls if c.kind == "check_formula"}}
        harvest = nbformat.v4.new_code_cell(harvest_source(plan))
        harvest.metadata[HARVEST_KEY] = plan
        cells.append(harvest)
    nb.cells = cells


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


def _merged(harvest_cells) -> tuple[dict, dict]:
    """(plan, harvested) of all harvest cells together: what each was asked, what each answered."""
    plan = {"seed": None, "formulas": {}}
    harvested = {"exercises": {}, "answers": {}, "formulas": {}}
    for cell in harvest_cells:
        asked = cell.metadata[HARVEST_KEY]
        plan["seed"] = asked["seed"]
        plan["formulas"] |= asked.get("formulas", {})
        answered = _harvested(cell)
        for part in harvested:
            if isinstance(answered.get(part), dict):
                wanted = set(asked.get(part, ()))
                harvested[part] |= {key: value for key, value in answered[part].items() if key in wanted}
    return plan, harvested


def verdicts(assignment: str, source_nb, plan: dict, harvested: dict) -> dict[str, str]:
    """Test cell -> '' (passed) or why not, for every test cell of the source notebook."""
    import torch

    exercises = {exercise.grade_id: exercise for exercise in assignment_spec(assignment).exercises}
    keys = quiz.quiz_keys(source_nb)
    results = harvested.get("exercises") if isinstance(harvested.get("exercises"), dict) else {}
    found = {}
    for index, exercise in enumerate(assignment_spec(assignment).exercises):
        cases = exercise.cases(torch.Generator().manual_seed(plan["seed"] + index))
        found[exercise.grade_id] = judge_exercise(exercise, cases, results.get(exercise.grade_id))
    for cell in source_nb.cells:
        if not is_test_cell(cell) or grade_id(cell) in found:
            continue
        if is_quiz_cell(cell):
            found[grade_id(cell)] = quiz.judge_quiz_cell(keys[grade_id(cell)], plan, harvested)
        elif grade_id(cell) not in exercises:
            found[grade_id(cell)] = "this item has no out-of-process verdict, so it cannot be graded (a course error)"
    return found


def apply_verdicts(nb, assignment: str, source_nb) -> dict[str, str]:
    """Judge ``nb`` (executed, with its harvest cell), remove the harvest cell, and give each test
    cell that passed in the student's process but not here an error, so that it scores 0."""
    harvest_cells = [cell for cell in nb.cells if is_harvest_cell(cell)]
    nb.cells = [cell for cell in nb.cells if not is_harvest_cell(cell)]
    _renumber(nb)
    setup = [cell.source for cell in source_nb.cells if cell.cell_type == "code" and not is_test_cell(cell)
             and not is_solution_cell(cell)]
    tampered = tampering(nb, setup)
    if tampered:
        found = {grade_id(c): tampered for c in source_nb.cells if is_test_cell(c)}
    elif harvest_cells:
        found = verdicts(assignment, source_nb, *_merged(harvest_cells))
    else:
        found = {grade_id(c): "the notebook was not run with the grader's harvest" for c in source_nb.cells if is_test_cell(c)}
    for cell in nb.cells:
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
    return not any(output.get("output_type") == "error" or (output.get("output_type") == "stream" and output.get("name") == "stderr")
                   for output in cell.outputs)


def _renumber(nb) -> None:
    """Execution counts without the gaps the removed harvest cells leave, as the student's own run shows them."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = count
