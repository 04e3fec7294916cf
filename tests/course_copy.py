"""The repository's course directory, and throwaway copies of it for tests that run nbgrader."""

from pathlib import Path

from attention_course.grading import course

ROOT = Path(__file__).resolve().parents[1]


def copy_course(destination: Path) -> Path:
    return course.copy_course(ROOT, destination)
