"""Grade one notebook the way nbgrader's autograde does, without its database: the instructor's
test cells (hidden tests included) replace the student's, deleted ones are put back, and each
test cell that runs without an error earns its points. For self-learners; the file is never changed.

Without a clone (Google Colab): the instructor notebook is downloaded from the course repository at
the tag of the installed package, ``v<version>`` (``released_source``), and ``grade_in_colab()``
grades the notebook open in Colab, from one cell.

It runs the notebook as the class grading does (``execute.execute_with_harvest``): a kernel forked
from a zygote, within ``limits.Limits`` (seconds per cell and per notebook, output, memory; a dead
kernel costs the items it did not reach), then the harvest notebook in a clean kernel; and it
scores each item by nbgrader's rule (``cells.item_score``)."""

import asyncio
import concurrent.futures
import copy
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat

from attention_course.grading.cells import ItemResult, grade_id, is_solution_cell, test_results
from attention_course.grading.course import ASSIGNMENTS
from attention_course.grading.limits import Limits, confined


@dataclass
class Report:
    notebook: str
    items: list[ItemResult]
    status: str = "ok"  # how the run went: "ok", or what stopped or cut it (execute_notebook's status)

    @property
    def points(self) -> float:
        return sum(item.points for item in self.items)

    @property
    def max_points(self) -> float:
        return sum(item.max_points for item in self.items)

    def render(self) -> str:
        width = max((len(item.grade_id) for item in self.items), default=10)
        lines = [f"{self.notebook}: {self.points:g} / {self.max_points:g} points"]
        if self.status != "ok":
            lines.append(f"  ({self.status})")
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


def _limits(cell_timeout: int | None, limits: Limits | None) -> Limits:
    limits = limits or Limits()
    if cell_timeout is not None:
        limits = replace(limits, cell_seconds=cell_timeout)
    return confined(limits)[0]  # a self-learner's own code: no isolation without root (Colab) is no loss


async def _grade(path: Path, source_path: Path, zygote, limits: Limits) -> Report:
    from attention_course.grading.execute import execute_with_harvest
    from attention_course.grading.verdicts.judge import apply_verdicts

    submitted = nbformat.read(path, as_version=4)
    source = nbformat.read(source_path, as_version=4)
    graded = with_instructor_cells(submitted, source)
    assignment = Path(source_path).parent.name
    # The student's notebook, then the grader's harvest in a clean kernel, as nbgrader's autograde runs them.
    status = await execute_with_harvest(graded, assignment, source, zygote, limits)
    apply_verdicts(graded, assignment, source)
    return Report(Path(path).name, test_results(graded), status)


def _run(coroutine):
    """``asyncio.run``, also from code that already runs an event loop (a notebook's cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def grade_notebooks(notebooks: list[tuple[Path, Path]], workers: int | None = None, cell_timeout: int | None = None,
                    limits: Limits | None = None, zygote=None) -> list[Report]:
    """Self-grade several (notebook, instructor notebook) pairs, ``workers`` at once, in kernels forked
    from one zygote (``zygote``, or one of its own); the reports in order."""
    from attention_course.grading.zygote import Zygote

    workers = max(1, min(workers or os.cpu_count() or 1, len(notebooks) or 1))
    limits = _limits(cell_timeout, limits)
    if limits.threads is None and workers > 1:
        limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // workers))

    async def grade_all(zygote):
        semaphore = asyncio.Semaphore(workers)

        async def one(path, source_path):
            async with semaphore:
                return await _grade(Path(path), Path(source_path), zygote, limits)

        return await asyncio.gather(*(one(*pair) for pair in notebooks))

    if zygote is not None:
        return _run(grade_all(zygote))
    with Zygote() as own:
        return _run(grade_all(own))


def grade_notebook(path: Path, source_path: Path, cell_timeout: int | None = None, limits: Limits | None = None,
                   zygote=None) -> Report:
    """As nbgrader grades it, out-of-process verdicts included (``source_path``'s folder names the assignment);
    ``cell_timeout`` seconds per cell (default ``Limits().cell_seconds``)."""
    return grade_notebooks([(path, source_path)], 1, cell_timeout, limits, zygote)[0]


SOURCE_URL_ENV = "ATTENTION_COURSE_SOURCE_URL"  # a template with {tag}, {assignment}, {notebook}: another place to take them from
CACHE_ENV = "ATTENTION_COURSE_CACHE"


def repository() -> str:
    """The repository's address, as pyproject.toml's [project.urls] Repository gave it to the installed package."""
    from importlib import metadata

    for entry in metadata.metadata("attention-course").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    raise LookupError("the installed attention-course names no Repository (pyproject.toml's [project.urls])")


def released_source(assignment: str) -> Path:
    """The instructor notebook (hidden tests included) of ``assignment`` at the tag ``v<version>`` of the
    installed package, downloaded once into a cache (``~/.cache/attention-course``)."""
    from attention_course import __version__

    tag = f"v{__version__}"
    notebook = ASSIGNMENTS[assignment]
    slug = repository().removeprefix("https://github.com/").removesuffix(".git")
    template = os.environ.get(SOURCE_URL_ENV) or f"https://raw.githubusercontent.com/{slug}/{{tag}}/source/{{assignment}}/{{notebook}}"
    url = template.format(tag=tag, assignment=assignment, notebook=notebook)
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attention-course") / tag / assignment
    path = cache / notebook
    if not path.is_file() or os.environ.get(SOURCE_URL_ENV):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except OSError as error:
            raise FileNotFoundError(f"could not download the instructor notebook from {url} ({error}); "
                                    "without a network, grade inside a clone of the repository") from error
        nbformat.reads(data.decode(), as_version=4)  # a notebook, not an error page
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def colab_notebook(destination: Path | None = None) -> Path:
    """Save the notebook open in Google Colab (as it is now, answers included) to ``/content``, under its
    Colab name ("Copy of kv_cache.ipynb"); its path."""
    from google.colab import _message  # only in Colab

    reply = _message.blocking_request("get_ipynb", timeout_sec=60)
    content = reply.get("ipynb") if isinstance(reply, dict) else None
    if not content:
        raise RuntimeError("Colab did not hand over the notebook; save it (File > Download), upload it to the "
                           "Files pane and run: !attention-course grade-notebook /content/<file>.ipynb")
    name = Path(content.get("metadata", {}).get("colab", {}).get("name") or "notebook.ipynb").name
    path = Path(destination or "/content") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def grade_in_colab(assignment: str | None = None, timeout: int = Limits().cell_seconds, destination: Path | None = None) -> int:
    """For a self-learner in Colab, in a cell of the assignment: ``from attention_course.grading.selfgrade import
    grade_in_colab; grade_in_colab()``. Saves the notebook to /content, grades it in a fresh kernel with the
    hidden tests of the installed version, prints points per item and the mistake behind each lost point.
    ``assignment`` (e.g. "01_causal_attention") when the notebook was renamed; the exit status of the grading."""
    path = colab_notebook(destination)
    command = [sys.executable, "-m", "attention_course.cli", "grade-notebook", str(path), "--timeout", str(timeout)]
    if assignment:
        command += ["--assignment", assignment]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=path.parent)
    print(completed.stdout + completed.stderr, end="")
    return completed.returncode
