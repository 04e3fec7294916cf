"""Shared code of the attention course: reference kernels, model loading, checks and grading.

The import name is ``attention_course`` (the PyPI name ``autograder`` belongs to another
project); the folder ``autograder/`` of the repository holds it.
"""

from attention_course.runtime import default_device, quick_mode

__all__ = ["default_device", "quick_mode"]
__version__ = "0.1.0"
