"""Device bugs found on any machine: the student's function run with every tensor on PyTorch's
``meta`` device (shapes and dtypes, no data). A tensor made without ``device=`` lands on the CPU
and PyTorch refuses to mix it with meta, or a result comes back elsewhere than meta: what a GPU
would find, found the same way on every grader, so that a score does not depend on its hardware."""

import copy
import re

import torch

WRONG_DEVICE = ("made a tensor on the wrong device: pass device=... (the device of the inputs, e.g. device=q.device) "
                "when you create one, and never move data off the inputs' device")
# What the meta device cannot do, without anything being wrong: read data (.item(), bool(), .tolist(),
# printing values), or shapes that depend on data (nonzero, masked_select).
_MIXED_DEVICES = re.compile(r"device|devices", re.IGNORECASE)
_REAL_DEVICE = re.compile(r"\b(cpu|cuda|mps|xpu)(:\d+)?\b")


def on_meta(value):
    """``value`` with every tensor (in tuples, lists, dicts) and module on the meta device."""
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).to("meta")
    if isinstance(value, (tuple, list)):
        return type(value)(on_meta(v) for v in value)
    if isinstance(value, dict):
        return {key: on_meta(v) for key, v in value.items()}
    return value


def returned_tensors(value, depth: int = 0):
    """The tensors a function returned: itself, in tuples/lists/dicts, or an object's tensor attributes."""
    if depth > 2:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from returned_tensors(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from returned_tensors(v, depth + 1)
    elif isinstance(value, torch.nn.Module):
        yield from value.parameters()
        yield from value.buffers()
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for v in vars(value).values():
            yield from returned_tensors(v, depth + 1)


def mixes_devices(error: BaseException) -> bool:
    """True when ``error`` is PyTorch refusing to mix the meta device with a real one (a device bug);
    False for what meta cannot do at all (read values: ``.item()``, ``.tolist()``; data-dependent shapes)."""
    text = str(error)
    return bool(_MIXED_DEVICES.search(text)) and "meta" in text and bool(_REAL_DEVICE.search(text))


def _target_device(args, kwargs):
    """Where ``Tensor.to(...)`` sends a tensor: a device, a device string, another tensor's device; None for a dtype only."""
    for value in (kwargs.get("device"), *args[1:], kwargs.get("other")):
        if isinstance(value, torch.Tensor):
            return value.device
        if isinstance(value, torch.device):
            return value
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                return torch.device(value)
            except (RuntimeError, TypeError):
                continue
    return None


class _DataMoves(torch.overrides.TorchFunctionMode):
    """Notes each move of a meta tensor to a real device (``.cpu()``, ``.cuda()``, ``.to('cpu')``, ``.numpy()``):
    meta refuses them with the same words as a read of values, so they are told apart here."""

    def __init__(self):
        super().__init__()
        self.moves: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if args and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta" and name in ("cpu", "cuda", "numpy", "to"):
            target = torch.device("cpu") if name in ("cpu", "numpy") else torch.device("cuda") if name == "cuda" else _target_device(args, kwargs)
            if target is not None and target.type != "meta":
                self.moves.append(f".{name}(...) sent a tensor to {target}")
        return func(*args, **kwargs)


def device_problem(fn, *args, **kwargs) -> str:
    """'' when ``fn`` keeps to the meta device given inputs on it, else what it did: PyTorch refused
    to mix devices, a tensor was sent to a real device, or a result (or a tensor attribute of a
    returned object) is not on meta. '' too when meta could not run the code at all (``.item()``
    and other reads of values are no mistake; any other error is the value cases' business)."""
    moves = _DataMoves()
    try:
        with moves:
            output = fn(*on_meta(args), **on_meta(kwargs))
    except Exception as error:  # noqa: BLE001 - judged below: only a device mix-up is this requirement's
        if moves.moves:
            return f"{WRONG_DEVICE} ({moves.moves[0]})"
        if mixes_devices(error):
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return f"{WRONG_DEVICE} ({type(error).__name__}: {first})"
        return ""
    elsewhere = sorted({str(t.device) for t in returned_tensors(output) if t.device.type != "meta"})
    return f"{WRONG_DEVICE} (with inputs on meta, a result is on {', '.join(elsewhere)})" if elsewhere else ""
