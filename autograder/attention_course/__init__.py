"""Shared code of the attention course: reference kernels, model loading, checks and grading.

The import name is ``attention_course`` (the PyPI name ``autograder`` belongs to another
project); the folder ``autograder/`` of the repository holds it.
"""

__all__ = ["default_device", "quick_mode"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazily, so that importing the grading plugin (nbgrader's config does) does not import torch.
    if name in __all__:
        from attention_course import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'attention_course' has no attribute {name!r}")
