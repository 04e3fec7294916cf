"""Plain data across the process boundary: what a harvest kernel prints is numbers, strings and
raw array bytes in base64 (``encode``); the grader reads it back (``decode``) and never unpickles."""

import base64
import math
import numbers

import numpy as np
import torch

_NUMPY = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16", torch.int64: "int64",
          torch.int32: "int32", torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}
_TORCH = {name: dtype for dtype, name in _NUMPY.items()} | {"bfloat16": torch.bfloat16}
MAX_ELEMENTS = 2_000_000  # a harvested tensor larger than this is refused


def encode(value):
    """A value of the student's process as JSON-able plain data."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu")
        name = "bfloat16" if tensor.dtype == torch.bfloat16 else _NUMPY.get(tensor.dtype)
        if name is None or tensor.numel() > MAX_ELEMENTS:
            return {"object": f"tensor of dtype {tensor.dtype} and shape {tuple(tensor.shape)}"}
        array = (tensor.float() if name == "bfloat16" else tensor).contiguous().numpy()
        return {"tensor": {"dtype": name, "shape": list(tensor.shape), "data": base64.b64encode(array.tobytes()).decode()}}
    if value is None or value is Ellipsis:
        return {"missing": True}
    if type(value) in (bool, str) or type(value) is int:
        return value
    if isinstance(value, float) or (hasattr(value, "__float__") and _is_real(value)):
        number = float(value)
        return int(number) if number.is_integer() and _is_integral(value) else number
    if isinstance(value, (tuple, list)):
        return {"sequence": [encode(v) for v in value]}
    return {"object": type(value).__name__}


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integral(value) -> bool:
    return isinstance(value, numbers.Integral)


class Foreign:
    """A harvested value that is not plain data: the checks see an object they reject."""

    def __init__(self, description: str):
        self.description = description

    def __repr__(self) -> str:
        return f"<{self.description}>"


def decode(data):
    """The grader's side of ``encode``; anything malformed decodes to a ``Foreign``."""
    if isinstance(data, (bool, int, float, str)):
        return data
    if not isinstance(data, dict):
        return Foreign("malformed data")
    if "missing" in data:
        return None
    if "sequence" in data and isinstance(data["sequence"], list):
        return tuple(decode(v) for v in data["sequence"])
    if "tensor" in data:
        try:
            spec = data["tensor"]
            shape = [int(n) for n in spec["shape"]]
            dtype = _TORCH[spec["dtype"]]
            numpy_dtype = "float32" if dtype == torch.bfloat16 else spec["dtype"]
            array = np.frombuffer(base64.b64decode(spec["data"]), dtype=numpy_dtype)
            if array.size != math.prod(shape):
                return Foreign("malformed tensor")
            return torch.from_numpy(array.copy()).reshape(shape).to(dtype)
        except (KeyError, TypeError, ValueError):
            return Foreign("malformed tensor")
    return Foreign(str(data.get("object", "an object that is not plain data"))[:100])
