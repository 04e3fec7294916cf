"""nbgrader's cell metadata, and what an executed notebook says about each graded cell."""

import re
from dataclasses import dataclass

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
HARVEST_KEY = "attention_course_harvest"  # metadata of the harvest cell: the plan it runs
# nbgrader's delimiters of hidden tests (ClearHiddenTests, in generate_feedback): in a cell that is not
# the instructor's test cell, an unmatched or stray one stops nbgrader for that student.
HIDDEN_TESTS_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
NO_BREAK_SPACE = "\u00a0"


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def grade_id(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_test_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.get("cell_type") == "code"


def neutralise_hidden_test_markers(nb) -> int:
    """In every cell but the instructor's test cells, write nbgrader's hidden-test delimiters with a
    no-break space (shown the same, no longer read as a delimiter); the number of cells changed.
    A student who pastes ``# ### BEGIN HIDDEN TESTS`` from an instructor notebook (or has the words
    in a string) otherwise makes nbgrader's ``generate_feedback`` fail ("No end hidden tests statement
    found", "Hidden test region detected in a non-grade cell")."""
    changed = 0
    for cell in nb.cells:
        if is_test_cell(cell) or not isinstance(cell.get("source"), str):
            continue
        source = cell.source
        for marker in HIDDEN_TESTS_MARKERS:
            source = source.replace(marker, marker.replace(" ", NO_BREAK_SPACE, 1))
        if source != cell.source:
            cell.source = source
            changed += 1
    return changed


def is_harvest_cell(cell) -> bool:
    """The cell the grader appends to collect the student's outputs (see ``verdicts``)."""
    return HARVEST_KEY in cell.get("metadata", {})


def is_solution_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution")) and cell.get("cell_type") == "code"


def solution_code(cell) -> str:
    """A source notebook's solution cell as a student who solved it would have it: markers removed."""
    return "\n".join(line for line in cell.source.splitlines() if line.strip() not in (SOLUTION_BEGIN, SOLUTION_END))


@dataclass
class ItemResult:
    grade_id: str
    points: float
    max_points: float
    message: str  # the error that cost the points, "" when passed


def first_error(cell) -> str:
    """The error a cell raised, as one line: for a failed check, the mistake it names."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = output.get("evalue", "").strip().splitlines()
            return f"{output.get('ename', 'Error')}: {value[0] if value else ''}".rstrip(": ")
    return ""


def _is_failure(output) -> bool:
    return output.get("output_type") == "error" or (output.get("output_type") == "stream" and output.get("name") == "stderr")


def failed(cell) -> bool:
    """nbgrader's rule (``nbgrader.utils.has_failed``): a code cell failed when it shows an error or
    wrote anything to stderr, a warning included."""
    return cell.get("cell_type") == "code" and any(_is_failure(output) for output in cell.get("outputs", []))


def _partial_grade(output, max_points: float) -> float:
    """``nbgrader.utils.get_partial_grade``: a test cell's result that reads as one number from 0 to
    its points is its score; anything else gives all its points."""
    grade = output["data"]["text/plain"]
    if not grade:
        raise KeyError("output ['data']['text/plain'] does not exist")
    if isinstance(grade, list):
        if len(grade) > 1:
            return max_points
        grade = grade[0]
    try:
        grade = float(grade)
    except ValueError:
        return max_points
    if grade < 0.0:
        return max_points
    if grade > max_points:
        raise ValueError("partial credit cannot be greater than maximum points for cell")
    return grade


def item_score(cell) -> float:
    """The points a test cell earns, by nbgrader's own rule (``nbgrader.utils.determine_grade``, which
    ``SaveAutoGrades`` applies; written out here because self-grading runs without nbgrader, in
    Colab): the outputs in order; an error or a stderr stream first gives 0, a result
    (``execute_result``) first gives the partial credit it reads as, else all the cell's points.
    (``apply_verdicts`` drops test cells' results: this course gives no partial credit.)"""
    max_points = float(nbgrader_meta(cell).get("points", 0))
    for output in cell.get("outputs", []):
        if _is_failure(output):
            return 0.0
        if output.get("output_type") == "execute_result":
            return float(_partial_grade(output, max_points))
    return max_points


def lost_because(cell) -> str:
    """Why a test cell lost points, as one line: its error, else what it wrote to stderr; "" if it lost none."""
    error = first_error(cell)
    if error:
        return error
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            lines = str(output.get("text", "")).strip().splitlines()
            return f"the cell wrote to stderr (nbgrader gives it 0): {lines[-1] if lines else ''}".rstrip(": ")
    return "" if item_score(cell) >= float(nbgrader_meta(cell).get("points", 0)) else "partial credit"


def test_results(executed_nb) -> list[ItemResult]:
    """Points per test cell of an executed notebook, as nbgrader scores them (``item_score``)."""
    results = []
    for cell in executed_nb.cells:
        if is_test_cell(cell):
            points = float(nbgrader_meta(cell).get("points", 0))
            results.append(ItemResult(grade_id(cell), item_score(cell), points, lost_because(cell)))
    return results


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A quoted source line of a traceback: "---->  12 code" or "     13 code" (IPython's Context mode, numbered,
# the lines around the failing one too), or "    code" (Plain mode: the failing line alone, under its frame).
_SOURCE_LINE = re.compile(r"^(\s*(?:-+>)?\s*)\d+\s(.*)$")


def hidden_test_lines(cell) -> set[str]:
    """The code lines of a test cell's hidden region (stripped), its delimiters included."""
    lines, hidden = set(), False
    for line in cell.source.splitlines():
        if HIDDEN_TESTS_MARKERS[0] in line:
            hidden = True
        if hidden and line.strip():
            lines.add(line.strip())
        if HIDDEN_TESTS_MARKERS[1] in line:
            hidden = False
    return lines


def hide_hidden_tests_in_tracebacks(cell, hidden: set[str]) -> None:
    """Tracebacks quote source lines (the failing one, and in IPython's Context mode those around it): leave
    the hidden tests' lines out (a failing hidden line is shown as "(a hidden test)"), so that feedback
    cannot show them."""
    for output in cell.get("outputs", []):
        if output.get("output_type") != "error":
            continue
        kept = []
        for entry in output.get("traceback", []):
            lines = []
            for line in entry.split("\n"):
                plain = ANSI.sub("", line)
                numbered = _SOURCE_LINE.match(plain)
                if numbered and numbered.group(2).strip() in hidden:
                    if "->" in numbered.group(1):
                        lines.append(f"{numbered.group(1)}(a hidden test)")
                    continue
                if plain.strip() in hidden:  # Plain mode's quote of the failing line
                    lines.append(f"{plain[:len(plain) - len(plain.lstrip())]}(a hidden test)")
                    continue
                lines.append(line)
            kept.append("\n".join(lines))
        output["traceback"] = kept
