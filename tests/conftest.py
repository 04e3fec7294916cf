"""Shared fixtures for the package tests (every assignment).

- Tests never touch the network: ``HF_HUB_OFFLINE=1`` is set here, before any test module
  imports ``huggingface_hub`` (which reads it once, at import).
- ``device``: run a test on the CPU and, where a GPU is present, on CUDA too.
- Hypothesis: a reproducible profile (``derandomize``) with few examples, so the suite stays
  fast on 2 CPU cores. ``HYPOTHESIS_PROFILE=thorough`` runs more examples.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=30,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=300,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CUDA_AVAILABLE = torch.cuda.is_available()

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_AVAILABLE, reason="no CUDA device (torch.cuda.is_available() is False)")],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """The device a test runs on: ``cpu`` always, ``cuda`` when a GPU is present (else skipped)."""
    return torch.device(request.param)

