"""A throwaway copy of the course directory, so that tests run nbgrader without touching the
repository's own release/, submitted/ or gradebook."""

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_course(destination: Path) -> Path:
    shutil.copy(ROOT / "nbgrader_config.py", destination)
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, destination / folder)
    return destination
