"""The course directory (the repository root) and its assignments, as nbgrader sees them."""

import shutil
from pathlib import Path

from attention_course.assignments import RECORDS

# Assignment id -> notebook name (see ``attention_course.assignments``).
ASSIGNMENTS = {record.id: record.notebook for record in RECORDS}


def find_course_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) with
    ``nbgrader_config.py`` and ``source/``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "nbgrader_config.py").is_file() and (folder / "source").is_dir():
            return folder
    raise FileNotFoundError(
        f"no course directory at or above {start}: run this inside a clone of the course repository "
        "(the folder with nbgrader_config.py and source/)"
    )


def source_notebook(root: Path, assignment: str) -> Path:
    return root / "source" / assignment / ASSIGNMENTS[assignment]


def release_notebook(root: Path, assignment: str) -> Path:
    return root / "release" / assignment / ASSIGNMENTS[assignment]


def assignments_in(root: Path) -> list[str]:
    """The assignments whose source notebook exists, in course order."""
    return [a for a in ASSIGNMENTS if source_notebook(root, a).is_file()]


def assignment_of(notebook_name: str) -> str:
    """The assignment a notebook file belongs to, from its name (``kv_cache (1).ipynb`` too)."""
    stem = Path(notebook_name).stem.lower()
    for assignment, name in ASSIGNMENTS.items():
        if Path(name).stem in stem:
            return assignment
    raise ValueError(f"{notebook_name!r} is not one of the course's notebooks: {', '.join(ASSIGNMENTS.values())}")


def copy_course(root: Path, destination: Path) -> Path:
    """A working copy of the course directory (configuration, source/, release/), for grading
    runs that must not touch the course's own gradebook and folders."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "nbgrader_config.py", destination)
    for folder in ("source", "release"):
        shutil.copytree(root / folder, destination / folder)
    return destination
