"""Grade one notebook the way nbgrader's autograde does, without its database: the instructor's
test cells (hidden tests included) replace the student's, deleted ones are put back, and each
test cell that runs without an error earns its points. For self-learners; the file is never changed."""

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from attention_course.grading.cells import ItemResult, grade_id, is_solution_cell, test_results

CELL_TIMEOUT = 120


@dataclass
class Report:
    notebook: str
    items: list[ItemResult]

    @property
    def points(self) -> float:
        return sum(item.points for item in self.items)

    @property
    def max_points(self) -> float:
        return sum(item.max_points for item in self.items)

    def render(self) -> str:
        width = max((len(item.grade_id) for item in self.items), default=10)
        lines = [f"{self.notebook}: {self.points:g} / {self.max_points:g} points"]
        for item in self.items:
            mark = "✓" if not item.message else "✗"
            lines.append(f"  {mark} {item.grade_id:<{width}}  {item.points:g} / {item.max_points:g}")
            if item.message:
                lines.append(f"      {item.message}")
        return "\n".join(lines)


def with_instructor_cells(submitted, source):
    """The submission with every non-answer cell of the source notebook in place: the instructor's
    version replaces the student's, and a deleted one is put back after its predecessor."""
    by_id = {grade_id(cell): cell for cell in source.cells if grade_id(cell)}
    graded = copy.deepcopy(submitted)
    graded.cells = [
        _fresh(by_id[grade_id(cell)]) if grade_id(cell) in by_id and not is_solution_cell(by_id[grade_id(cell)]) else cell
        for cell in graded.cells
    ]
    previous = None
    for cell in source.cells:
        cell_id = grade_id(cell)
        if cell_id is None:
            continue
        present = [grade_id(c) for c in graded.cells]
        if cell_id not in present and not is_solution_cell(cell):
            position = present.index(previous) + 1 if previous in present else 0
            graded.cells.insert(position, _fresh(cell))
        previous = cell_id
    return graded


def _fresh(cell):
    cell = copy.deepcopy(cell)
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    return cell


def grade_notebook(path: Path, source_path: Path, cell_timeout: int = CELL_TIMEOUT) -> Report:
    """As nbgrader grades it, out-of-process verdicts included (``source_path``'s folder names the assignment)."""
    from attention_course.grading.verdicts.judge import apply_verdicts, harvest_notebook, keep_harvest

    submitted = nbformat.read(path, as_version=4)
    source = nbformat.read(source_path, as_version=4)
    graded = with_instructor_cells(submitted, source)
    assignment = Path(source_path).parent.name
    harvest_nb, left_out = harvest_notebook(graded, assignment, source)
    for nb in (graded, harvest_nb):  # the student's notebook, then the grader's harvest in a fresh kernel
        with tempfile.TemporaryDirectory() as scratch:
            NotebookClient(
                nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": scratch}}
            ).execute()
    keep_harvest(graded, harvest_nb, left_out)
    apply_verdicts(graded, assignment, source)
    return Report(Path(path).name, test_results(graded))
