"""How close a result must be, by dtype: the one table of the course (its checks and verdicts, its
tests, its benchmarks).

A result computed in a dtype is compared with a float64 reference (cast to that dtype where it is
compared); it passes when, element by element, |result - reference| <= atol + rtol * |reference|.
The values are a few units in the last place of each dtype (float32: eps 1.2e-7, float16: 9.8e-4,
bfloat16: 7.8e-3) times the growth of rounding errors through a softmax and a weighted sum of a few
dozen terms. In half precision, absolute errors grow with the values themselves, so atol is scaled
by the largest magnitude of the reference when it exceeds 1.

Two results that are both rounded (a fused kernel against the readable path, both in float16) may
each be that far from the exact value: compare them with ``rounded_twice=True``.

A whole layer in half precision rounds at every projection, and its softmax amplifies the rounding
of large scores: how far a correct result lands depends on the inputs, beyond what a table can
hold. There the course's own solution, run in the same dtype on the same inputs, is the yardstick
(``control``): a result may be as far from the exact value as the table allows plus twice the
control's largest error, the criterion of FlashAttention's tests ("numerical error at most twice
the numerical error of a PyTorch implementation", Dao-AILab/flash-attention tests/test_flash_attn.py).
"""

import torch

TOLERANCES = {  # dtype: (atol, rtol)
    torch.float64: (1e-12, 1e-10),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
LOW_PRECISION = (torch.float16, torch.bfloat16)


def tolerance(dtype: torch.dtype, reference: torch.Tensor | None = None, rounded_twice: bool = False,
              control: torch.Tensor | None = None) -> dict[str, float]:
    """``{"atol": ..., "rtol": ...}`` for results in ``dtype`` (float32's for any other dtype), as
    ``torch.allclose`` and ``torch.testing.assert_close`` take them. ``control``: the course's own
    result in ``dtype`` for the exact ``reference`` (half precision only): atol grows by twice its error."""
    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    if dtype in LOW_PRECISION and reference is not None and reference.numel():
        atol *= max(1.0, reference.detach().abs().max().item())
    factor = 2 if rounded_twice else 1
    atol, rtol = factor * atol, factor * rtol
    if dtype in LOW_PRECISION and control is not None and reference is not None and control.shape == reference.shape and control.numel():
        atol += 2 * (control.detach().double().cpu() - reference.detach().double().cpu()).abs().nan_to_num(0).max().item()
    return {"atol": atol, "rtol": rtol}


def close(actual: torch.Tensor, expected: torch.Tensor, control: torch.Tensor | None = None) -> bool:
    """Whether ``actual`` (in its dtype) matches ``expected`` within the table (and ``control``'s error, see
    ``tolerance``); bool tensors must be equal."""
    if actual.shape != expected.shape:
        return False
    if actual.dtype == torch.bool or expected.dtype == torch.bool:
        return bool((actual.bool() == expected.bool()).all())
    limits = tolerance(actual.dtype, expected, control=control)
    return torch.allclose(actual.double().cpu(), expected.double().cpu(), equal_nan=True, **limits)
