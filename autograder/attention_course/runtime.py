"""Where code runs and how big it runs: one place for the device and the CI size switch."""

import os

import torch

QUICK_ENV = "COURSE_QUICK"


def default_device() -> torch.device:
    """``cuda`` when a GPU is present, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quick_mode() -> bool:
    """True when ``COURSE_QUICK=1``: notebooks pick small sizes so that CI runs them on 2 CPU cores."""
    return os.environ.get(QUICK_ENV, "0") not in ("", "0", "false", "False")
